"""``ociassemble make-base``: the default Debian base (python3, nginx, runit), made once by mmdebstrap."""

from __future__ import annotations

import argparse

from .options import blob_cache
from .output import Out

__all__ = ["cmd_make_base"]


def cmd_make_base(args: argparse.Namespace, out: Out) -> int:
    from ..azureml.debianbase import make_base

    path = make_base(blob_cache(args), force=args.force, log=out.log)
    out.result({"base": f"oci:{path}"}, f"oci:{path}")
    return 0
