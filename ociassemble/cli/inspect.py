"""``ociassemble inspect``: an image's digest, platform, config and layers, or the files of one layer.

A multi-platform image is listed (each platform, its manifest digest and size, under the
index digest) unless ``--platform`` picks one, which is then shown as any image is.
"""

from __future__ import annotations

import argparse

from ..errors import NotAnImageError, UsageError
from ..transport.spec import is_registry
from .output import Out

__all__ = ["cmd_inspect"]


def cmd_inspect(args: argparse.Namespace, out: Out) -> int:
    from ..image.describe import (INSPECT_SCHEMA_VERSION, describe_image, describe_index, layer_entries, render_entry,
                                  render_image, render_index)
    from ..image.imageindex import ImageIndex, for_platform
    from ..image.platform import ALL, parse_platform
    from ..imageio import load_image
    from ..registry.options import options_for

    if args.list and args.layer is None:
        raise UsageError("--list needs --layer N (the layer's index, from 'ociassemble inspect IMAGE')")
    text = args.platform
    want = parse_platform(text) if text else None  # a bad --platform fails before any reading
    from ..settings import Settings

    settings = Settings.from_argparse(args, secrets=out.secrets)
    cache = settings.blob_cache()
    opts = options_for(settings.registry, args.image, secrets=settings.secrets) if is_registry(args.image) else None
    try:
        target = load_image(args.image, cache, registry_options=opts, platform=want or ALL)
    except NotAnImageError as exc:
        from ..image.describe import describe_artifact, render_artifact

        if args.layer is not None:
            raise UsageError(f"{args.image} is an OCI artifact, not an image: it has blobs, not layers; "
                             "drop --layer") from None
        art = describe_artifact(exc.manifest, exc.manifest_bytes, name=args.image)
        out.result(art, render_artifact(art))
        return 0
    if isinstance(target, ImageIndex) and want is None and len(target.images) == 1:
        target = target.images[0]  # an index of one image is shown as that image, as before
    if isinstance(target, ImageIndex) and want is None:
        if args.layer is not None:
            first = target.platforms[0]
            raise UsageError(f"{args.image} is a multi-platform image ({', '.join(map(str, target.platforms))}): "
                             f"pick the image whose layer to show with --platform, e.g. --platform {first}")
        idx = describe_index(target, name=args.image)
        out.result(idx, render_index(idx))
        return 0
    image = for_platform(target, want, args.image)
    doc = describe_image(image, name=args.image)
    if args.layer is None:
        out.result(doc, render_image(doc))
        return 0
    if not 0 <= args.layer < len(doc["layers"]):
        raise UsageError(f"--layer {args.layer}: the image has {len(doc['layers'])} layers, numbered 0 to "
                         f"{len(doc['layers']) - 1}")
    layer = doc["layers"][args.layer]
    if not args.list:
        out.result({"schemaVersion": INSPECT_SCHEMA_VERSION, "digest": doc["digest"], "layer": layer},
                   "\n".join(f"{k}: {v}" for k, v in layer.items()))
        return 0
    out.reporter.close()
    if out.as_json:
        entries = list(layer_entries(image, cache, args.layer))
        out.result({"schemaVersion": INSPECT_SCHEMA_VERSION, "digest": doc["digest"], "layer": layer,
                    "entries": entries}, "")
        return 0
    for entry in layer_entries(image, cache, args.layer):  # streamed: a big layer prints as it is read
        out.print(render_entry(entry))
    return 0
