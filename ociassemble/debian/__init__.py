"""Debian packages the distroless way: a repository client (signed InRelease, Packages indexes
checked by hash, .debs cached by hash), a resolver, and the unpacking of .debs into one
deterministic layer with dpkg's records; no maintainer script, no dpkg, no root, no emulation.

Modules, lowest first: ``version`` (dpkg's ordering, relations), ``sources`` (the machine's apt
sources), ``fetch`` (HTTP into the blob cache), ``release`` (InRelease by gpgv), ``packages``
(Packages indexes), ``resolve``, ``deb`` (.deb files), ``tree``, ``status`` (dpkg's database),
``scripts`` (what maintainer scripts would do, by name), ``install`` (the layer) and ``repository``
(one release for one architecture).
"""
