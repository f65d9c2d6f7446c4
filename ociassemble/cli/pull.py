"""``ociassemble pull``: a registry image into an OCI layout or archive.

``--platform`` picks the image of a multi-platform one (default: this machine's);
``--platform all`` keeps the registry's index and every platform's image (its digest
stays the registry's), which only ``oci:`` and ``oci-archive:`` can hold.
"""

from __future__ import annotations

import argparse

from .options import blob_cache, registry_options
from .output import Out

__all__ = ["cmd_pull"]


def cmd_pull(args: argparse.Namespace, out: Out) -> int:
    from ..image.imageindex import ImageIndex, for_platform
    from ..image.platform import ALL, normalize, parse_platform
    from ..registry.pull import pull_image
    from ..imageio import check_output, write_image

    text = getattr(args, "platform", None)
    want = ALL if text is not None and text.strip() == ALL else (parse_platform(text) if text else None)
    # a bad destination, or a docker-archive of all platforms, fails before any download
    check_output(args.dest, want == ALL)
    cache = blob_cache(args)
    target = pull_image(args.ref, cache, options=registry_options(args), platform=want)
    if want is not None and want != ALL:  # an image of one platform must be that platform's
        target = for_platform(target, want, args.ref)  # type: ignore[arg-type]
    write_image(target, cache, args.dest)  # fetches the layers into the cache, verified
    data = {"digest": target.digest, "output": args.dest}
    if isinstance(target, ImageIndex):
        data["manifests"] = [{"platform": str(normalize(i.platform)), "digest": i.digest} for i in target.images]
    else:
        data["platform"] = str(normalize(target.platform))
    out.result(data, target.digest)
    return 0
