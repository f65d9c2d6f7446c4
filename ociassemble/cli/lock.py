"""``ociassemble lock``: write ``ociassemble.lock`` (each platform's base digest, Python files and .debs)
for the project: ``jobs.lock``."""

from __future__ import annotations

import argparse

from .output import Out

__all__ = ["cmd_lock"]


def cmd_lock(args: argparse.Namespace, out: Out) -> int:
    from ..jobs import lock
    from ..settings import Settings

    result = lock(Settings.from_argparse(args, secrets=out.secrets), upgrade=args.upgrade, progress=out)
    out.result(result.to_json(), result.line())
    return 0
