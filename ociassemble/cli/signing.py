"""From flags, the environment and the config to a signing key: where ``push`` finds it and its password.

The key: ``--sign-key FILE``, else ``$OCIASSEMBLE_SIGN_KEY``, else the config's ``sign_key``.
Its password (a cosign key is always encrypted, maybe with the empty password):
``--sign-key-password-stdin`` (one line), else ``$COSIGN_PASSWORD`` (as cosign reads it: set
and empty is the empty password), else a prompt on a terminal, else the empty password.
The key is read and opened before anything is built or pushed, so a wrong password or an
unsupported key stops the command with nothing pushed.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError, UsageError

if TYPE_CHECKING:
    from ..sign.keys import PrivateKey

__all__ = ["ENV_COSIGN_PASSWORD", "ENV_SIGN_KEY", "key_password", "signing_key", "signing_key_path"]

ENV_SIGN_KEY = "OCIASSEMBLE_SIGN_KEY"
ENV_COSIGN_PASSWORD = "COSIGN_PASSWORD"


def signing_key_path(args: argparse.Namespace, config_value: Path | None = None) -> Path | None:
    """The key file the flags, the environment or the config name, or None (no signing)."""
    given = getattr(args, "sign_key", None) or os.environ.get(ENV_SIGN_KEY) or None
    return Path(given) if given else config_value


def key_password(args: argparse.Namespace, where: str, *, stdin_flag: str = "sign_key_password_stdin") -> bytes | None:
    """The key's password from stdin, ``$COSIGN_PASSWORD`` or a terminal prompt; None: none was given."""
    if getattr(args, stdin_flag, False):
        if getattr(args, "password_stdin", False):
            raise UsageError("--password-stdin and --sign-key-password-stdin both read stdin: give the registry "
                             "password in $OCIASSEMBLE_PASSWORD or the key's in $COSIGN_PASSWORD")
        return sys.stdin.readline().rstrip("\r\n").encode()
    if ENV_COSIGN_PASSWORD in os.environ:
        return os.environ[ENV_COSIGN_PASSWORD].encode()
    if sys.stdin.isatty() and sys.stderr.isatty():
        return getpass.getpass(f"password for {where}: ").encode()
    return None


def signing_key(args: argparse.Namespace, config_value: Path | None = None) -> PrivateKey | None:
    """The opened signing key, or None when no key is named. Raises InputError for a missing
    file, a wrong password (WrongPasswordError) or a key that is not ECDSA P-256 (UnsupportedKeyError)."""
    from ..sign.keys import is_encrypted, load_private_key

    path = signing_key_path(args, config_value)
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"signing key {path} does not exist: give --sign-key cosign.key (make one with "
                         "'ociassemble keygen')") from None
    except OSError as exc:
        raise InputError(f"signing key {path} cannot be read: {exc.strerror}") from None
    password = key_password(args, str(path)) if is_encrypted(data) else None
    return load_private_key(data, password, f"signing key {path}")
