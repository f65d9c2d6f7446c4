"""The signing key ``push`` signs with, opened before anything is built or pushed.

The key: ``SigningSettings.key`` (``--sign-key FILE``, else ``$OCIASSEMBLE_SIGN_KEY``, else
the config's ``sign_key``). Its password (a cosign key is always encrypted, maybe with the
empty password): ``SigningSettings.password`` (``--sign-key-password-stdin`` or
``$COSIGN_PASSWORD``: set and empty is the empty password), else what ``ask_password``
answers (the CLI asks on a terminal), else the empty password. A wrong password or an
unsupported key stops the push with nothing built or pushed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import InputError
from ..settings import SigningSettings

if TYPE_CHECKING:
    from ..sign.keys import PrivateKey

__all__ = ["open_signing_key"]


def open_signing_key(signing: SigningSettings,
                     ask_password: Callable[[str], bytes | None] | None = None) -> PrivateKey | None:
    """The opened signing key, or None when no key is named. Raises InputError for a missing
    file, a wrong password (WrongPasswordError) or a key that is not ECDSA P-256 (UnsupportedKeyError)."""
    from ..sign.keys import is_encrypted, load_private_key

    path = signing.key
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"signing key {path} does not exist: give --sign-key cosign.key (make one with "
                         "'ociassemble keygen')") from None
    except OSError as exc:
        raise InputError(f"signing key {path} cannot be read: {exc.strerror}") from None
    password = None
    if is_encrypted(data):
        password = signing.password
        if password is None and ask_password is not None:
            password = ask_password(str(path))
    return load_private_key(data, password, f"signing key {path}")
