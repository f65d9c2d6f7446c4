"""Where a base image comes from: a registry, an OCI layout or archive (read by ``imageio``), or a rootfs.

A rootfs tarball or directory becomes a one-layer image; everything else keeps its
layers exactly (same digests) and its config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import InputError
from ..image.assemble import Image, ImageBuilder
from ..image.cache import BlobCache
from ..image.compress import Compression
from ..image.layer import LayerSource, build_layer, layer_from_tarball
from ..image.oci import Platform
from ..image.platform import host_platform, matches, normalize
from ..imageio import load_image
from ..transport.spec import ImageSpec, parse_spec

if TYPE_CHECKING:
    from ..registry.client import RegistryOptions

__all__ = ["load_base"]


def load_base(spec: ImageSpec | str, cache: BlobCache, *, platform: Platform | None = None,
              compression: Compression = Compression("gzip"),
              registry_options: RegistryOptions | None = None, epoch: int = 0) -> Image:
    """The base image for a build, from any transport including a rootfs tarball/directory.

    A multi-platform base is resolved to ``platform`` (default: this machine's); a base of
    one image must be for ``platform`` when one is given (a rootfs, which says nothing of
    its platform, is labelled with it). A base's layers are checked against its config's
    diff_ids (``load_image``), and a rootfs tarball's entries against ``tarcheck``'s rules.
    ``epoch``: the mtime of a rootfs directory's entries (the build's, ``Settings.epoch``).
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
        layer = build_layer(cache, [LayerSource(path, "/", preserve=True)], compression=compression, epoch=epoch,
                            by_reference=False)  # a rootfs folder: its bytes are cached
        created_by = f"rootfs directory {path.name}"
    else:
        layer = layer_from_tarball(cache, path, compression=compression)
        created_by = f"rootfs tarball {path.name}"
    b = ImageBuilder(cache, None, platform=normalize(platform or host_platform()))
    b.add_layer(layer, created_by)
    return b.build(0)
