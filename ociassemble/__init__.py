"""ociassemble: assemble OCI images for Python model serving without a daemon.

The packages follow the data, in the order it moves:

- ``inputs``: what a build starts from (the files of the user's folder, the base image);
- ``azureml``: the recipe that turns score.py, models and requirements into layers;
- ``image``: layers and the image (digests, OCI types, the layer writer, compression,
  the blob cache, assembling, describing and verifying an image);
- ``debian``: Debian packages into a layer (the archive's index, verified, resolved, unpacked);
- ``transport``: where images go and come from on disk (OCI layouts, archives);
- ``registry``: where images go and come from over HTTP (references, auth, push, pull);
- ``imageio``: reading and writing an image by its spec (``oci:``, ``oci-archive:``, ``docker://``, …);
- ``sign``: keys, signatures and the provenance statement that ``registry`` stores beside images;
- ``settings``: one immutable value of every setting of a run (flags, config file,
  environment), and ``built``, what a build produced;
- ``run``: running an image without a daemon (unpack, namespaces);
- ``jobs`` (and ``pushjob``): each command's whole job (build, push, pull, verify, run, inspect, lock,
  make-base, login, keygen) from one ``Settings``;
- ``cli``: the command line over the jobs.

Imports go only downward, in this order (``tests/unit/test_layering.py`` checks it,
and that no modules import each other in a circle): the shared top-level modules
(``errors``, ``redact``, ``resources``, ``sizes``, ``atomicfile``, ``emulation``) < ``image``
< ``debian`` < ``sign`` < ``transport`` < ``registry`` < ``imageio`` < ``inputs`` < the
settings < ``azureml`` < ``build`` < ``run`` < ``jobs`` < ``cli``; docs/design.md draws it.
"""

#: The one place the version is written (pyproject.toml reads it from here): a literal, not
#: ``importlib.metadata``, whose import alone cost every command ~30 ms before its first step.
__version__ = "0.1.0"

__all__ = ["__version__"]
