"""Not a scoring script: the module sibling_import.py imports from its own folder."""

FACTOR = 2


def double(text):
    return text * FACTOR
