"""``ociassemble push``: build (from the cache) or read (``--from``) an image and push it, with its
layer cache entries, SBOMs and signatures: ``jobs.push``.

A multi-platform image (``--platform linux/amd64,linux/arm64``, or ``--from`` an index)
is pushed whole; ``--from`` pushes every platform of what it reads, or the one ``--platform``
names. An encrypted signing key's password is asked for on a terminal when neither
``--sign-key-password-stdin`` nor ``$COSIGN_PASSWORD`` gives it.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError
from .output import Out

if TYPE_CHECKING:
    from ..image.oci import Platform

__all__ = ["cmd_push", "from_platform"]


def from_platform(value: str | None) -> Platform | str:
    """What ``push --from`` reads: every platform (``all``, the default) or the one ``--platform`` names."""
    from ..image.platform import ALL, parse_platforms

    if value is None or value.strip() == ALL:
        return ALL
    wanted = parse_platforms(value)
    if len(wanted) > 1:
        raise UsageError(f"--platform {value}: push --from pushes one platform's image, or all of them "
                         "(leave out --platform); give one, e.g. --platform " + str(wanted[0]))
    return wanted[0]


def _ask_password(where: str) -> bytes | None:
    """A signing key's password from the terminal; None when there is none to ask."""
    if sys.stdin.isatty() and sys.stderr.isatty():
        return getpass.getpass(f"password for {where}: ").encode()
    return None


def cmd_push(args: argparse.Namespace, out: Out) -> int:
    from ..jobs import push
    from ..settings import Settings

    platform = from_platform(args.platform) if args.source else None  # a bad --platform fails before any reading
    result = push(Settings.from_argparse(args, secrets=out.secrets), args.refs or (), source=args.source,
                  platform=platform, digest_file=Path(args.digest_file) if args.digest_file else None,
                  progress=out, ask_password=_ask_password)
    data = result.to_json()
    out.result(data, data["digest"])
    return 0
