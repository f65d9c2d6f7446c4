"""``ociassemble keygen``: a signing key pair cosign reads (``cosign.key``, ``cosign.pub``): ``jobs.keygen``.

ECDSA P-256, the private key sealed as ``cosign generate-key-pair`` seals it, under a
password from ``$COSIGN_PASSWORD``, ``--password-stdin`` or a prompt (asked twice). Both
files are written to temporary names and renamed, the private one readable by its owner
only; existing files are kept unless ``--force``.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from ..errors import UsageError
from .output import Out

__all__ = ["cmd_keygen"]


def _password(args: argparse.Namespace) -> bytes:
    """The new key's password: stdin (``--password-stdin``), else the settings' (``$COSIGN_PASSWORD``,
    read with the others by ``settingsload``; set and empty is the empty password), else asked twice."""
    from ..settings import ENV_COSIGN_PASSWORD, Settings

    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n").encode()
    given = Settings.load_environment().signing.password  # not from_argparse: its --password-stdin is the key's
    if given is not None:
        return given
    if sys.stdin.isatty() and sys.stderr.isatty():
        first = getpass.getpass("password for the private key: ")
        if getpass.getpass("the same password again: ") != first:
            raise UsageError("the two passwords differ: run keygen again")
        return first.encode()
    raise UsageError(f"keygen needs the new key's password: set ${ENV_COSIGN_PASSWORD} (it may be empty) or pass "
                     "--password-stdin")


def cmd_keygen(args: argparse.Namespace, out: Out) -> int:
    from ..jobs import keygen

    pair = keygen(Path(args.output_key_prefix), lambda: _password(args), force=args.force)
    out.log(f"private key (encrypted, keep it secret: a CI secret): {pair.private}")
    out.result(pair.to_json(), pair.text())
    return 0
