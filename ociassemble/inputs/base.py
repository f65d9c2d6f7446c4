"""Where a base image comes from: a registry, an OCI layout or archive, or a rootfs.

A rootfs tarball or directory becomes a one-layer image; everything else keeps its
layers exactly (same digests) and its config.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..image.assemble import Image, ImageBuilder
from ..image.cache import BlobCache
from ..image.compress import Compression
from ..image.layer import LayerSource, build_layer, layer_from_tarball
from ..image.imageindex import Target
from ..image.oci import Platform
from ..image.platform import host_platform, matches, normalize
from ..transport.archive import read_docker_archive, read_oci_archive
from ..transport.layout import read_layout
from ..transport.spec import ImageSpec, parse_spec

__all__ = ["load_image", "load_base"]


def load_image(spec: ImageSpec | str, cache: BlobCache, *, registry_options: object = None,
               verify_diff_ids: bool = False, platform: Platform | str | None = None) -> Target:
    """Read an image from any transport (not ``rootfs:``).

    A multi-platform image is resolved to ``platform`` (default: this machine's), or with
    ``platform="all"`` read whole as an ``ImageIndex`` (a docker-archive holds one image).

    With ``verify_diff_ids`` each layer is checked against its config's diff_id as it is
    copied into the cache (``diffid``; bases and ``push --from`` ask for it). Without, an
    image whose config lies is still read, for a caller that reports on it (``verify``,
    ``inspect``); a docker-archive's layers are always checked (they are read uncompressed).
    """
    if isinstance(spec, str):
        spec = parse_spec(spec)
    if spec.kind == "oci":
        assert spec.path
        return read_layout(spec.path, spec.tag, cache, verify_diff_ids=verify_diff_ids, platform=platform)
    if spec.kind == "oci-archive":
        assert spec.path
        return read_oci_archive(spec.path, spec.tag, cache, verify_diff_ids=verify_diff_ids, platform=platform)
    if spec.kind == "docker-archive":
        assert spec.path
        return read_docker_archive(spec.path, spec.tag, cache)
    if spec.kind == "docker":
        from ..registry.pull import pull_image

        assert spec.tag
        return pull_image(spec.tag, cache, options=registry_options, verify_diff_ids=verify_diff_ids,
                          platform=platform)
    raise InputError(f"{spec}: a rootfs is not an image; use it as --base")


def load_base(spec: ImageSpec | str, cache: BlobCache, *, platform: Platform | None = None,
              compression: Compression = Compression("gzip"), registry_options: object = None) -> Image:
    """The base image for a build, from any transport including a rootfs tarball/directory.

    A multi-platform base is resolved to ``platform`` (default: this machine's); a base of
    one image must be for ``platform`` when one is given (a rootfs, which says nothing of
    its platform, is labelled with it). A base's layers are checked against its config's
    diff_ids (``load_image``), and a rootfs tarball's entries against ``tarcheck``'s rules.
    """
    if isinstance(spec, str):
        spec = parse_spec(spec)
    if spec.kind != "rootfs":
        image = load_image(spec, cache, registry_options=registry_options, verify_diff_ids=True, platform=platform)
        assert isinstance(image, Image)
        if platform is not None and not matches(image.platform, platform):
            raise InputError(f"base {spec} is for {normalize(image.platform)}, not {platform}: give a base for {platform} "
                             f"(ociassemble make-base --platform {platform}), or a multi-platform one that has it")
        return image
    assert spec.path
    path = spec.path
    if not path.exists():
        raise InputError(f"base {path}: no such file or directory; give a rootfs tarball or directory, or an image (oci:DIR)")
    if path.is_dir():
        layer = build_layer(cache, [LayerSource(path, "/", preserve=True)], compression=compression,
                            by_reference=False)  # a rootfs folder: its bytes are cached
        created_by = f"rootfs directory {path.name}"
    else:
        layer = layer_from_tarball(cache, path, compression=compression)
        created_by = f"rootfs tarball {path.name}"
    b = ImageBuilder(cache, None, platform=normalize(platform or host_platform()))
    b.add_layer(layer, created_by)
    return b.build(0)
