"""``ociassemble init``: a commented starter ociassemble.toml, never over an existing one unless forced."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..atomicfile import write_atomic
from ..errors import UsageError
from .output import Out

__all__ = ["cmd_init"]


def cmd_init(args: argparse.Namespace, out: Out) -> int:
    from ..azureml.project import STARTER_CONFIG

    target = Path(args.path) / "ociassemble.toml"
    if target.exists() and not args.force:
        raise UsageError(f"{target} already exists; pass --force to overwrite it")
    write_atomic(target, STARTER_CONFIG)
    out.result({"config": str(target)}, f"wrote {target}")
    return 0
