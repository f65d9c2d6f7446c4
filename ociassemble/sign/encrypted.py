"""cosign's encrypted private key box: scrypt derives a key from the password, NaCl's secretbox seals the key's DER.

This is the format of go-securesystemslib's ``encrypted`` package, which cosign
(``cosign generate-key-pair``) and containers/image (``skopeo --sign-by-sigstore-private-key``)
use for ``cosign.key``: a JSON object
``{"kdf": {"name": "scrypt", "params": {"N", "r", "p"}, "salt"}, "cipher": {"name": "nacl/secretbox", "nonce"},
"ciphertext"}`` (bytes in base64), wrapped in a PEM block. The readers accept exactly three
scrypt parameter sets (N = 2^15, 2^16, 2^17 with r = 8, p = 1); anything else is refused, as
they refuse it.

Why PyNaCl: secretbox is XSalsa20-Poly1305, which the ``cryptography`` library does not
offer; PyNaCl (libsodium, kept by PyCA like ``cryptography``) is the maintained binding.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from typing import Any

from ..errors import InputError, WrongPasswordError

__all__ = ["SCRYPT_PARAMS", "open_box", "seal_box"]

#: (N, r, p) the readers accept, oldest first; go-securesystemslib's Legacy, Standard, OWASP.
SCRYPT_PARAMS = ((1 << 15, 8, 1), (1 << 16, 8, 1), (1 << 17, 8, 1))
#: What ``seal_box`` writes: Legacy (2^15), the one every reader since cosign 1.0 and the
#: containers/image of Debian bookworm's skopeo 1.9 accepts (Standard came later).
SEAL_PARAMS = SCRYPT_PARAMS[0]
_SALT_SIZE = 32
_KEY_SIZE = 32
_NONCE_SIZE = 24


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    # scrypt needs 128 * r * N bytes (128 MiB at N = 2^17); hashlib's default cap is 32 MiB
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=_KEY_SIZE, maxmem=256 << 20)


def _b64(raw: Any, what: str, where: str) -> bytes:
    try:
        return base64.b64decode(raw, validate=True)
    except (TypeError, ValueError):
        raise InputError(f"{where}: the encrypted key's {what} is not base64; the key file is damaged") from None


def seal_box(plaintext: bytes, password: bytes) -> bytes:
    """The JSON box of ``plaintext`` under ``password`` (a fresh salt and nonce each call)."""
    from nacl.secret import SecretBox

    salt, nonce = os.urandom(_SALT_SIZE), os.urandom(_NONCE_SIZE)
    n, r, p = SEAL_PARAMS
    sealed = SecretBox(_scrypt(password, salt, n, r, p)).encrypt(plaintext, nonce).ciphertext
    doc = {"kdf": {"name": "scrypt", "params": {"N": n, "r": r, "p": p}, "salt": base64.b64encode(salt).decode()},
           "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
           "ciphertext": base64.b64encode(sealed).decode()}
    return json.dumps(doc).encode()


def open_box(box: bytes, password: bytes, where: str) -> bytes:
    """The plaintext of a JSON box. Raises WrongPasswordError when it does not open with
    ``password``, InputError when the box is malformed or uses parameters no reader accepts."""
    from nacl.exceptions import CryptoError
    from nacl.secret import SecretBox

    try:
        doc = json.loads(box)
        kdf, cipher = doc["kdf"], doc["cipher"]
        params = kdf["params"]
        n, r, p = int(params["N"]), int(params["r"]), int(params["p"])
        names = (kdf["name"], cipher["name"])
        salt_raw, nonce_raw, text_raw = kdf["salt"], cipher["nonce"], doc["ciphertext"]
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{where}: not a cosign encrypted key (its PEM body is not the scrypt + secretbox JSON); "
                         "the key file is damaged") from None
    if names != ("scrypt", "nacl/secretbox"):
        raise InputError(f"{where}: encrypted with {names[0]} + {names[1]}; cosign keys use scrypt + nacl/secretbox")
    if (n, r, p) not in SCRYPT_PARAMS:
        raise InputError(f"{where}: scrypt parameters N={n} r={r} p={p} are not ones cosign accepts "
                         "(N 32768, 65536 or 131072, r 8, p 1)")
    salt, nonce, text = _b64(salt_raw, "salt", where), _b64(nonce_raw, "nonce", where), _b64(text_raw, "ciphertext", where)
    if len(nonce) != _NONCE_SIZE:
        raise InputError(f"{where}: the encrypted key's nonce is {len(nonce)} bytes, not {_NONCE_SIZE}; the key file is damaged")
    try:
        return SecretBox(_scrypt(password, salt, n, r, p)).decrypt(text, nonce)
    except CryptoError:
        raise WrongPasswordError(f"{where}: wrong password for the key (give it with --sign-key-password-stdin or "
                                 "$COSIGN_PASSWORD)") from None
