"""``ociassemble make-base``: a default Debian base (python3, nginx, runit), made once from Debian's .debs
(or by mmdebstrap: --with-mmdebstrap): bookworm (Python 3.11), or with ``--python`` bullseye (3.9) or trixie (3.13)."""

from __future__ import annotations

import argparse

from .output import Out

__all__ = ["cmd_make_base"]


def cmd_make_base(args: argparse.Namespace, out: Out) -> int:
    from ..azureml.debianbase import make_base
    from ..image.platform import parse_platforms
    from ..settings import Settings

    platforms = parse_platforms(args.platform) if args.platform else (None,)
    settings = Settings.from_argparse(args, secrets=out.secrets)
    cache = settings.blob_cache()
    from pathlib import Path

    from ..errors import UsageError

    if (args.apt_mirror or args.apt_keyring) and args.with_mmdebstrap:
        raise UsageError("--apt-mirror and --apt-keyring are for a base made from .debs (mmdebstrap reads this "
                         "machine's apt sources); drop --with-mmdebstrap")
    keyring = Path(args.apt_keyring) if args.apt_keyring else None
    bases = {str(p) if p else "": make_base(cache, force=args.force, log=out.log, platform=p, python=args.python,
                                            with_mmdebstrap=args.with_mmdebstrap, apt_mirror=args.apt_mirror,
                                            keyring=keyring, epoch=settings.epoch)
             for p in platforms}
    if len(bases) == 1:
        path = next(iter(bases.values()))
        out.result({"base": f"oci:{path}"}, f"oci:{path}")
    else:
        out.result({"bases": {p: f"oci:{path}" for p, path in bases.items()}},
                   "\n".join(f"{p} oci:{path}" for p, path in bases.items()))
    return 0
