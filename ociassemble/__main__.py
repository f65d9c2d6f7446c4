"""``python -m ociassemble``: the same entry as the console script."""

from ociassemble.cli import entry

if __name__ == "__main__":
    entry()
