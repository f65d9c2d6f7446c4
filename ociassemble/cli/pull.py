"""``ociassemble pull``: a registry image into an OCI layout or archive (``jobs.pull``).

``--platform`` picks the image of a multi-platform one (default: this machine's);
``--platform all`` keeps the registry's index and every platform's image (its digest
stays the registry's), which only ``oci:`` and ``oci-archive:`` can hold.
"""

from __future__ import annotations

import argparse

from .output import Out

__all__ = ["cmd_pull"]


def cmd_pull(args: argparse.Namespace, out: Out) -> int:
    from ..image.platform import ALL, parse_platform
    from ..jobs import pull
    from ..settings import Settings

    text = args.platform
    want = ALL if text is not None and text.strip() == ALL else (parse_platform(text) if text else None)
    result = pull(Settings.from_argparse(args, secrets=out.secrets), args.ref, args.dest, platform=want)
    data = result.to_json()
    out.result(data, data["digest"])
    return 0
