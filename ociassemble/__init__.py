"""ociassemble: assemble OCI images for Python model serving without a daemon.

The packages follow the data, in the order it moves:

- ``inputs``: what a build starts from (the files of the user's folder, the base image);
- ``azureml``: the recipe that turns score.py, models and requirements into layers;
- ``image``: layers and the image (digests, OCI types, the layer writer, compression,
  the blob cache, assembling, describing and verifying an image);
- ``transport``: where images go and come from on disk (OCI layouts, archives);
- ``registry``: where images go and come from over HTTP (references, auth, push, pull);
- ``run``: running an image without a daemon (unpack, namespaces);
- ``cli``: the command line over all of it.

Imports go only downward, in this order (``tests/unit/test_layering.py`` checks it,
and that no modules import each other in a circle): the shared top-level modules
(``errors``, ``resources``, ``sizes``) < ``image`` < ``transport`` < ``registry`` <
``inputs`` < ``azureml`` < ``run`` < ``cli`` (with ``progress``, the command line's display).
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("ociassemble")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
