"""``ociassemble keygen``: a signing key pair cosign reads (``cosign.key``, ``cosign.pub``).

ECDSA P-256, the private key sealed as ``cosign generate-key-pair`` seals it, under a
password from ``$COSIGN_PASSWORD``, ``--password-stdin`` or a prompt (asked twice). Both
files are written to temporary names and renamed, the private one readable by its owner
only; existing files are kept unless ``--force``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import tempfile
from pathlib import Path

from ..errors import InputError, UsageError
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


def _write(path: Path, data: bytes, mode: int) -> None:
    """``data`` at ``path`` with ``mode``, whole or not at all (a temp file beside it, renamed)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def cmd_keygen(args: argparse.Namespace, out: Out) -> int:
    from ..sign.keys import generate_key_pair, load_public_key

    prefix = Path(args.output_key_prefix)
    private, public = prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pub")
    if not private.parent.is_dir():
        raise InputError(f"folder {private.parent} does not exist: create it or give another --output-key-prefix")
    existing = [str(p) for p in (private, public) if p.exists()]
    if existing and not args.force:
        raise InputError(f"{' and '.join(existing)} already exist{'s' if len(existing) == 1 else ''}: keep "
                         f"{'it' if len(existing) == 1 else 'them'}, or pass --force to replace (signatures by the "
                         "old key then no longer verify with the new .pub)")
    pair = generate_key_pair(_password(args))
    _write(private, pair.private_pem, 0o600)
    _write(public, pair.public_pem, 0o644)
    keyid = load_public_key(pair.public_pem, str(public)).keyid
    out.log(f"private key (encrypted, keep it secret: a CI secret): {private}")
    out.result({"privateKey": str(private), "publicKey": str(public), "key": {"sha256": keyid},
                "algorithm": "ecdsa-p256-sha256"},
               f"wrote {private} and {public} (ECDSA P-256, key sha256:{keyid[:16]}…)")
    return 0
