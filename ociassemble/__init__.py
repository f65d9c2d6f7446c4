"""ociassemble: assemble OCI images for Python model serving without a daemon.

The packages follow the data, in the order it moves:

- ``inputs``: what a build starts from (the files of the user's folder, the base image);
- ``azureml``: the recipe that turns score.py, models and requirements into layers;
- ``image``: layers and the image (digests, OCI types, the layer writer, compression,
  the blob cache, assembling, describing and verifying an image);
- ``transport``: where images go and come from on disk (OCI layouts, archives);
- ``registry``: where images go and come from over HTTP (references, auth, push, pull);
- ``settings``: one immutable value of every setting of a run (flags, config file,
  environment), and ``built``, what a build produced;
- ``run``: running an image without a daemon (unpack, namespaces);
- ``jobs`` (and ``pushjob``): each command's whole job (build, push, pull, verify, run) from one ``Settings``;
- ``cli``: the command line over the jobs.

Imports go only downward, in this order (``tests/unit/test_layering.py`` checks it,
and that no modules import each other in a circle): the shared top-level modules
(``errors``, ``resources``, ``sizes``) < ``image`` < ``transport`` < ``registry`` <
``inputs`` < the settings < ``azureml`` < ``build`` < ``run`` < ``jobs`` < ``cli``.
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("ociassemble")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
