"""``ociassemble inspect``: an image's digest, platform, config and layers, or the files of one layer:
``jobs.inspect``.

A multi-platform image is listed (each platform, its manifest digest and size, under the
index digest) unless ``--platform`` picks one, which is then shown as any image is.
"""

from __future__ import annotations

import argparse

from ..errors import UsageError
from .output import Out

__all__ = ["cmd_inspect"]


def cmd_inspect(args: argparse.Namespace, out: Out) -> int:
    from ..image.platform import parse_platform
    from ..jobs import inspect
    from ..settings import Settings

    if args.list and args.layer is None:
        raise UsageError("--list needs --layer N (the layer's index, from 'ociassemble inspect IMAGE')")
    want = parse_platform(args.platform) if args.platform else None  # a bad --platform fails before any reading
    shown = inspect(Settings.from_argparse(args, secrets=out.secrets), args.image, platform=want, layer=args.layer)
    if not args.list:
        out.result(shown.to_json(), shown.text)
        return 0
    out.reporter.close()
    if out.as_json:
        out.result({**shown.to_json(), "entries": [entry for entry, _ in shown.entries(args.layer)]}, "")
        return 0
    for _, line in shown.entries(args.layer):  # streamed: a big layer prints as it is read
        out.print(line)
    return 0
