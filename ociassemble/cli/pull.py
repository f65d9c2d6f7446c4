"""``ociassemble pull``: a registry image into an OCI layout or archive."""

from __future__ import annotations

import argparse

from .options import blob_cache, registry_options
from .output import Out

__all__ = ["cmd_pull"]


def cmd_pull(args: argparse.Namespace, out: Out) -> int:
    from ..registry.pull import pull_image
    from ..transport.write import write_image

    cache = blob_cache(args)
    image = pull_image(args.ref, cache, options=registry_options(args))
    write_image(image, cache, args.dest)  # fetches the layers into the cache, verified
    out.result({"digest": image.digest, "output": args.dest}, image.digest)
    return 0
