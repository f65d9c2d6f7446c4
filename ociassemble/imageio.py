"""Reading and writing an image by its spec string: the one place that picks a layout, an archive or a registry.

Example::

    image = load_image("docker://registry.example.com/team/model:1.0", cache)
    write_image(image, cache, "oci:./out:1.0")    # or oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG]

Both read and write the same names (``transport.spec``), so they live together: reading
needs ``registry`` (a ``docker://`` pull) and ``transport`` (layouts, archives), which is
why this module sits above both, and under ``inputs`` (a build's base is read here).

A multi-platform image (``ImageIndex``) goes whole into ``oci:`` and ``oci-archive:``;
``docker-archive:`` (``docker save``'s format) holds one image, so ``platform`` must
pick it. The layers written come from the cache (a registry image's are fetched into
it, verified, on the way); a full disk is a ``DiskFullError`` naming the output's folder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import InputError, UsageError
from .image.cache import BlobCache, disk_full
from .image.imageindex import ImageIndex, Target, for_platform
from .image.oci import Platform
from .transport.archive import read_docker_archive, read_oci_archive, write_docker_archive, write_oci_archive
from .transport.layout import read_layout, write_layout
from .transport.spec import ImageSpec, parse_spec

if TYPE_CHECKING:
    from .registry.client import RegistryOptions

__all__ = ["check_output", "load_image", "write_image"]


def load_image(spec: ImageSpec | str, cache: BlobCache, *, registry_options: RegistryOptions | None = None,
               verify_diff_ids: bool = False, platform: Platform | str | None = None, defer: bool = False) -> Target:
    """Read an image from any transport (not ``rootfs:``).

    A multi-platform image is resolved to ``platform`` (default: this machine's), or with
    ``platform="all"`` read whole as an ``ImageIndex`` (a docker-archive holds one image).

    With ``verify_diff_ids`` each layer is checked against its config's diff_id as it is
    copied into the cache (``diffid``; bases and ``push --from`` ask for it). Without, an
    image whose config lies is still read, for a caller that reports on it (``verify``,
    ``inspect``); a docker-archive's layers are always checked (their digests are new).
    ``defer`` (``push --from``, and only for a push): a layer of a layout or an archive that
    the cache lacks is not read now. An uncompressed one is checked by the registry as it is
    sent (one read); a compressed one's diff_id check is left in the cache for the push, which
    runs it beside its uploads (``registry.push``): another reader would not run it.
    """
    if isinstance(spec, str):
        spec = parse_spec(spec)
    if spec.kind == "oci":
        assert spec.path
        return read_layout(spec.path, spec.tag, cache, verify_diff_ids=verify_diff_ids, platform=platform,
                           defer=defer)
    if spec.kind == "oci-archive":
        assert spec.path
        return read_oci_archive(spec.path, spec.tag, cache, verify_diff_ids=verify_diff_ids, platform=platform,
                                defer=defer)
    if spec.kind == "docker-archive":
        assert spec.path
        return read_docker_archive(spec.path, spec.tag, cache, defer=defer)
    if spec.kind == "docker":
        from .registry.pull import pull_image

        assert spec.tag
        return pull_image(spec.tag, cache, options=registry_options, verify_diff_ids=verify_diff_ids,
                          platform=platform)
    if spec.path is not None and not spec.path.exists():
        registry = "" if spec.raw.startswith((".", "/", "~")) else f" (a registry image: docker://{spec.raw})"
        raise InputError(f"{spec}: no such file or directory; check the path{registry}")
    raise InputError(f"{spec}: a rootfs is not an image; use it as --base")


def check_output(spec_text: str, several: bool) -> None:
    """Refuse, before any work, a docker-archive output of ``several`` platforms' images
    (a build for a list, a pull of ``all``, an index with no platform picked)."""
    spec = parse_spec(spec_text, for_output=True)
    if spec.kind == "docker-archive" and several:
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
