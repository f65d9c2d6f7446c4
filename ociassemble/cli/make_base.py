"""``ociassemble make-base``: a default Debian base (python3, nginx, runit), made once from Debian's .debs
(or by mmdebstrap: --with-mmdebstrap): bookworm (Python 3.11), or with ``--python`` bullseye (3.9) or trixie
(3.13): ``jobs.make_base``."""

from __future__ import annotations

import argparse
from pathlib import Path

from .output import Out

__all__ = ["cmd_make_base"]


def cmd_make_base(args: argparse.Namespace, out: Out) -> int:
    from ..image.platform import parse_platforms
    from ..jobs import make_base
    from ..settings import Settings

    made = make_base(Settings.from_argparse(args, secrets=out.secrets),
                     parse_platforms(args.platform) if args.platform else (None,), python=args.python,
                     force=args.force, with_mmdebstrap=args.with_mmdebstrap, apt_mirror=args.apt_mirror,
                     apt_keyring=Path(args.apt_keyring) if args.apt_keyring else None, progress=out)
    out.result(made.to_json(), made.text())
    return 0
