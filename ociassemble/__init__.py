"""ociassemble: assemble OCI images for Python model serving without a daemon."""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("ociassemble")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
