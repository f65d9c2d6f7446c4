"""Writing an image to the output a spec string names: the one place that picks layout or archive.

Example::

    write_image(image, cache, "oci:./out:1.0")    # or oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG]

The layers come from the cache (a registry image's are fetched into it, verified, on the
way); a full disk is a ``DiskFullError`` naming the output's folder.
"""

from __future__ import annotations

from ..image.assemble import Image
from ..image.cache import BlobCache, disk_full
from .archive import write_docker_archive, write_oci_archive
from .layout import write_layout
from .spec import parse_spec

__all__ = ["write_image"]


def write_image(image: Image, cache: BlobCache, spec_text: str) -> None:
    """Write ``image`` where ``spec_text`` says (checked first: a bad spec writes nothing)."""
    spec = parse_spec(spec_text, for_output=True)
    assert spec.path is not None
    try:
        if spec.kind == "oci":
            write_layout(image, cache, spec.path, spec.tag)
        elif spec.kind == "oci-archive":
            write_oci_archive(image, cache, spec.path, spec.tag)
        else:
            write_docker_archive(image, cache, spec.path, spec.tag)
    except OSError as exc:
        full = disk_full(exc, spec.path.parent.resolve(), "write the output elsewhere (--output)")
        if full is None:
            raise
        raise full from exc
