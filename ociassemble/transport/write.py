"""Writing an image to the output a spec string names: the one place that picks layout or archive.

Example::

    write_image(image, cache, "oci:./out:1.0")    # or oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG]

A multi-platform image (``ImageIndex``) goes whole into ``oci:`` and ``oci-archive:``;
``docker-archive:`` (``docker save``'s format) holds one image, so ``platform`` must
pick it.

The layers come from the cache (a registry image's are fetched into it, verified, on the
way); a full disk is a ``DiskFullError`` naming the output's folder.
"""

from __future__ import annotations

from ..image.cache import BlobCache, disk_full
from ..image.imageindex import ImageIndex, Target, for_platform
from ..image.oci import Platform
from .archive import write_docker_archive, write_oci_archive
from .layout import write_layout
from .spec import parse_spec

__all__ = ["check_output", "write_image"]


def check_output(spec_text: str, several: bool) -> None:
    """Refuse, before any work, a docker-archive output of ``several`` platforms' images
    (a build for a list, a pull of ``all``, an index with no platform picked)."""
    spec = parse_spec(spec_text, for_output=True)
    if spec.kind == "docker-archive" and several:
        from ..errors import UsageError

        raise UsageError(f"{spec_text}: a docker-archive holds one platform's image; write "
                         f"oci-archive:{spec.path} (or oci:DIR) for all of them, or pick one with --platform")


def write_image(image: Target, cache: BlobCache, spec_text: str, platform: Platform | None = None) -> None:
    """Write ``image`` where ``spec_text`` says (checked first: a bad spec writes nothing);
    with ``platform``, only that platform's image of a multi-platform one."""
    spec = parse_spec(spec_text, for_output=True)
    assert spec.path is not None
    check_output(spec_text, isinstance(image, ImageIndex) and platform is None)
    if platform is not None or spec.kind == "docker-archive":
        image = for_platform(image, platform, "the image")
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
