"""Signing keys: reading cosign's key files and plain PEM, making a pair cosign reads, signing and checking.

What is supported, and why only that: ECDSA on P-256 with SHA-256, cosign's default
(``cosign generate-key-pair``) and the one algorithm every verifier of cosign
signatures accepts (cosign, containers/image's ``sigstoreSigned`` in skopeo, podman and
CRI-O, Ratify, Kyverno, Connaisseur). An RSA, Ed25519 or other-curve key is refused in
one line naming what it is, rather than producing a signature some of those refuse.

Private keys are read from:

- cosign's ``cosign.key``: a PEM block ``ENCRYPTED SIGSTORE PRIVATE KEY`` (cosign 2.x) or
  ``ENCRYPTED COSIGN PRIVATE KEY`` (cosign 1.x, containers/image) whose body is the
  ``encrypted`` box of the key's PKCS #8 DER;
- plain PEM: ``PRIVATE KEY`` (PKCS #8), ``EC PRIVATE KEY`` (SEC 1), ``ENCRYPTED PRIVATE KEY``
  (PKCS #8 with a password).

Public keys are a PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo), as ``cosign.pub`` is.

Signatures are ASN.1 DER ``(r, s)``, as cosign writes them. They are deterministic
(RFC 6979) where the OpenSSL under ``cryptography`` offers it: the same key signing the
same image gives the same bytes, so pushing again adds nothing new.

Example::

    key = load_private_key(Path("cosign.key").read_bytes(), b"password", "cosign.key")
    sig = key.sign(payload)
    load_public_key(Path("cosign.pub").read_bytes(), "cosign.pub").verify(sig, payload)  # True
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, UnsupportedKeyError, WrongPasswordError
from .encrypted import open_box, seal_box

__all__ = ["COSIGN_PEM_TYPES", "KeyPair", "PrivateKey", "PublicKey", "generate_key_pair",
           "load_private_key", "load_public_key", "is_encrypted"]

#: The PEM types of cosign's encrypted key files: cosign 2.x writes the first, reads both.
COSIGN_PEM_TYPES = ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY")
#: What ``generate_key_pair`` writes: the older name, the one both cosign 1.x/2.x and the
#: containers/image in Debian bookworm's skopeo 1.9 (which knows only that name) read.
KEYGEN_PEM_TYPE = "ENCRYPTED COSIGN PRIVATE KEY"
_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.S)
_WHAT = "ECDSA P-256 keys (cosign's default)"
_MAKE = "make one with 'ociassemble keygen' or 'cosign generate-key-pair'"


def _pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    return [(m.group(1).decode(), m.group(2)) for m in _PEM.finditer(data)]


def _describe(key: Any) -> str:
    """What a ``cryptography`` key is, for the refusal: ``RSA 2048``, ``Ed25519``, ``ECDSA secp384r1``."""
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return f"an RSA {key.key_size}-bit key"
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return f"an ECDSA {key.curve.name} key"
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "an Ed25519 key"
    if isinstance(key, (ed448.Ed448PrivateKey, ed448.Ed448PublicKey)):
        return "an Ed448 key"
    if isinstance(key, (dsa.DSAPrivateKey, dsa.DSAPublicKey)):
        return "a DSA key"
    return f"a {type(key).__name__}"


def _require_p256(key: Any, where: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    ok = isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) and \
        isinstance(key.curve, ec.SECP256R1)
    if not ok:
        raise UnsupportedKeyError(f"{where} is {_describe(key)}: ociassemble signs and verifies with {_WHAT} only; {_MAKE}")


@dataclass(frozen=True)
class PublicKey:
    """An ECDSA P-256 public key: checks signatures."""

    key: Any  # cryptography's EllipticCurvePublicKey

    def verify(self, signature: bytes, data: bytes) -> bool:
        """Whether ``signature`` (DER) is this key's over ``data`` (SHA-256)."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        try:
            self.key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
            return True
        except (InvalidSignature, ValueError):
            return False

    def pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    @property
    def keyid(self) -> str:
        """The sha256 of the DER SubjectPublicKeyInfo (hex): names the key in reports."""
        from cryptography.hazmat.primitives import serialization

        der = self.key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class PrivateKey:
    """An ECDSA P-256 private key: signs."""

    key: Any  # cryptography's EllipticCurvePrivateKey

    @property
    def public(self) -> PublicKey:
        return PublicKey(self.key.public_key())

    def sign(self, data: bytes) -> bytes:
        """The DER ECDSA signature of ``data`` with SHA-256 (RFC 6979 deterministic where available)."""
        from cryptography.exceptions import UnsupportedAlgorithm
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        try:
            return self.key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
        except (TypeError, UnsupportedAlgorithm):  # an older cryptography or OpenSSL: random k
            return self.key.sign(data, ec.ECDSA(hashes.SHA256()))

    def sign_b64(self, data: bytes) -> str:
        return base64.b64encode(self.sign(data)).decode()


@dataclass(frozen=True)
class KeyPair:
    """What ``generate_key_pair`` writes: ``cosign.key`` and ``cosign.pub`` bytes."""

    private_pem: bytes
    public_pem: bytes


def is_encrypted(data: bytes) -> bool:
    """Whether the key file needs a password (a cosign key, or an encrypted PKCS #8 PEM)."""
    return any(t in COSIGN_PEM_TYPES or t == "ENCRYPTED PRIVATE KEY" for t, _ in _pem_blocks(data))


def load_private_key(data: bytes, password: bytes | None, where: str) -> PrivateKey:
    """The signing key in ``data`` (a key file's bytes; ``where`` names it in errors).

    Raises WrongPasswordError (an InputError) for a password that does not open it,
    UnsupportedKeyError for a key that is not ECDSA P-256, InputError for anything that
    is not a private key.
    """
    from cryptography.hazmat.primitives import serialization

    blocks = _pem_blocks(data)
    if not blocks:
        raise InputError(f"{where} is not a PEM key file (no -----BEGIN ... PRIVATE KEY----- block); give cosign.key "
                         f"or a PEM private key; {_MAKE}")
    kind, body = next(((t, b) for t, b in blocks if "PRIVATE KEY" in t), blocks[0])
    if kind in COSIGN_PEM_TYPES:
        try:
            box = base64.b64decode(b"".join(body.split()), validate=True)
        except ValueError:
            raise InputError(f"{where}: its {kind} block is not base64; the key file is damaged") from None
        der = open_box(box, password or b"", where)
        try:
            key = serialization.load_der_private_key(der, password=None)
        except (ValueError, TypeError):
            raise InputError(f"{where}: the decrypted key is not PKCS #8; the key file is damaged") from None
    elif kind in ("PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY"):
        pem = f"-----BEGIN {kind}-----\n".encode() + body + f"-----END {kind}-----\n".encode()
        try:
            key = serialization.load_pem_private_key(pem, password=password if kind == "ENCRYPTED PRIVATE KEY" else None)
        except TypeError:
            raise InputError(f"{where} is encrypted: give its password with --sign-key-password-stdin or "
                             "$COSIGN_PASSWORD") from None
        except ValueError as exc:
            if kind == "ENCRYPTED PRIVATE KEY":
                raise WrongPasswordError(f"{where}: wrong password for the key (give it with --sign-key-password-stdin "
                                         "or $COSIGN_PASSWORD)") from None
            raise InputError(f"{where}: its {kind} block is not a key cryptography reads ({exc}); the key file is damaged") from None
        except Exception as exc:  # cryptography.exceptions.UnsupportedAlgorithm: a curve OpenSSL lacks
            raise UnsupportedKeyError(f"{where}: {exc}; ociassemble signs with {_WHAT} only") from None
    elif kind == "RSA PRIVATE KEY":
        raise UnsupportedKeyError(f"{where} is an RSA key: ociassemble signs and verifies with {_WHAT} only; {_MAKE}")
    elif kind == "PUBLIC KEY":
        raise InputError(f"{where} is a public key: signing needs the private one (cosign.key), verifying takes this one "
                         "with --key")
    else:
        raise InputError(f"{where}: a PEM {kind} block is not a private key; give cosign.key or a PEM private key")
    _require_p256(key, where)
    return PrivateKey(key)


def load_public_key(data: bytes, where: str) -> PublicKey:
    """The verifying key in ``data`` (``cosign.pub``: PEM ``PUBLIC KEY``). Raises
    UnsupportedKeyError for a key that is not ECDSA P-256, InputError for anything else."""
    from cryptography.hazmat.primitives import serialization

    blocks = _pem_blocks(data)
    kind, body = next(((t, b) for t, b in blocks if t == "PUBLIC KEY"), blocks[0] if blocks else ("", b""))
    if kind != "PUBLIC KEY":
        hint = " (that is a private key: give the public one, cosign.pub)" if "PRIVATE" in kind else ""
        raise InputError(f"{where} is not a PEM public key (-----BEGIN PUBLIC KEY-----){hint}")
    try:
        key = serialization.load_pem_public_key(b"-----BEGIN PUBLIC KEY-----\n" + body + b"-----END PUBLIC KEY-----\n")
    except ValueError as exc:
        raise InputError(f"{where}: its PUBLIC KEY block is not a key cryptography reads ({exc})") from None
    except Exception as exc:  # an algorithm OpenSSL lacks
        raise UnsupportedKeyError(f"{where}: {exc}; ociassemble verifies {_WHAT} only") from None
    _require_p256(key, where)
    return PublicKey(key)


def generate_key_pair(password: bytes) -> KeyPair:
    """A new ECDSA P-256 pair as cosign writes it: the private key's PKCS #8 DER sealed under
    ``password`` (``encrypted``) in an ``ENCRYPTED COSIGN PRIVATE KEY`` PEM, the public key as
    PEM ``PUBLIC KEY``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    body = base64.b64encode(seal_box(der, password)).decode()
    lines = "\n".join(body[i:i + 64] for i in range(0, len(body), 64))
    private_pem = f"-----BEGIN {KEYGEN_PEM_TYPE}-----\n{lines}\n-----END {KEYGEN_PEM_TYPE}-----\n".encode()
    return KeyPair(private_pem, PrivateKey(key).public.pem())
