"""``ociassemble verify``: rebuild from the inputs (writing nothing) and compare with ``--against``;
or, with ``--key``, check a pushed image's signature (and ``--provenance``): ``jobs.verify``,
``jobs.verify_signature``.

Exit 0 and the digest when they are the same image, 1 and the first difference otherwise.
With ``--key``: exit 0 and what verified, 1 and one line saying why not (no signature, another
key, another digest), 2 when the registry cannot be read.
"""

from __future__ import annotations

import argparse

from ..errors import EXIT_USER, UsageError
from .output import Out

__all__ = ["cmd_verify"]


def cmd_verify(args: argparse.Namespace, out: Out) -> int:
    from pathlib import Path

    from ..jobs import verify, verify_signature
    from ..settings import Settings

    if args.key:
        if args.against:
            raise UsageError("--key checks a signature and --against rebuilds: give one (verify IMAGE --key cosign.pub)")
        if args.path in (None, "."):
            raise UsageError("verify --key needs the image, e.g. 'ociassemble verify registry.example.com/team/model:1.0 "
                             "--key cosign.pub'")
        report = verify_signature(Settings.from_argparse(args, secrets=out.secrets), args.path, Path(args.key),
                                  provenance=args.provenance, progress=out)
        out.result(report.to_json(), report.render())
        return 0
    if args.provenance:
        raise UsageError("--provenance checks a signed image: give the public key, e.g. verify IMAGE --key cosign.pub "
                         "--provenance")
    if not args.against:
        raise UsageError("verify needs --against IMAGE (rebuild and compare) or IMAGE --key cosign.pub (check its "
                         "signature)")
    report = verify(Settings.from_argparse(args, secrets=out.secrets), args.against, out)
    out.result(report.to_json(), report.render())
    return 0 if report.equal else EXIT_USER
