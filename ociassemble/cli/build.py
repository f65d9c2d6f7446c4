"""``ociassemble build``: build the image and write it to ``--output`` (and an SBOM beside it): ``jobs.build``."""

from __future__ import annotations

import argparse

from .output import Out

__all__ = ["cmd_build"]


def cmd_build(args: argparse.Namespace, out: Out) -> int:
    from ..jobs import build
    from ..settings import Settings
    from ..transport.spec import parse_spec

    if args.output:
        parse_spec(args.output, for_output=True)  # a bad --output fails before any work, the config's too
    result = build(Settings.from_argparse(args, secrets=out.secrets), out)
    data = result.to_json()
    out.result(data, data["digest"])
    return 0
