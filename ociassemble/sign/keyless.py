"""Keyless signing through Sigstore: a short-lived Fulcio certificate for the CI's OIDC identity, the signature logged in Rekor.

Optional and off by default (``push --keyless``): it needs the ``sigstore`` package and the
internet (Fulcio, Rekor, Sigstore's TUF root), so nothing here runs in the tests, which
check only that a missing package or token is one clear line. What it stores is what
``cosign sign`` stores for a keyless signature, on the same ``.sig`` layer: the signature
annotation, the leaf certificate (``dev.sigstore.cosign/certificate``), the Fulcio chain
(``dev.sigstore.cosign/chain``) and the Rekor entry's inclusion promise
(``dev.sigstore.cosign/bundle``: ``{"SignedEntryTimestamp", "Payload": {"body",
"integratedTime", "logIndex", "logID"}}``), so ``cosign verify --certificate-identity …``
and Kyverno/Ratify keyless policies read it. The payload is the same simple-signing JSON
as with a key (sigstore's ``sign_artifact`` signs its SHA-256 with ECDSA P-256, which is what
a key signature is too).
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from typing import Any

from ..errors import InputError, KeylessError
from .simplesigning import SIGNATURE_ANNOTATION

__all__ = ["BUNDLE_ANNOTATION", "CERTIFICATE_ANNOTATION", "CHAIN_ANNOTATION", "KeylessSigner"]

CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"
BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
#: Where the token comes from outside GitHub Actions (sigstore-python and cosign read it too).
TOKEN_ENV = "SIGSTORE_ID_TOKEN"


@dataclass
class KeylessSigner:
    """Signs payloads with a Fulcio certificate for ``token``'s identity; one certificate per push."""

    token: Any  # sigstore.oidc.IdentityToken
    context: Any  # sigstore.sign.SigningContext

    @classmethod
    def from_environment(cls) -> KeylessSigner:
        """The signer for this CI job. Raises InputError (one line) when the package or a token is missing.

        The OIDC token (``$SIGSTORE_ID_TOKEN``, else GitHub's ``ACTIONS_ID_TOKEN_REQUEST_*``, which
        sigstore's ``detect_credential`` reads itself) is read here, at the moment of signing, and
        not into ``Settings``: it is the CI run's short-lived identity, minted for this job (and
        expiring within minutes), not a setting a user chooses, and sigstore-python and cosign read
        the same variables the same way.
        """
        try:
            from sigstore.oidc import IdentityToken, detect_credential
            from sigstore.sign import SigningContext
        except ImportError:
            raise InputError("--keyless needs the sigstore package (pip install sigstore) and the internet: it signs with "
                             "a short-lived Fulcio certificate from the CI's OIDC token; or sign with a key: --sign-key "
                             "cosign.key (docs/signing.md)") from None
        raw = os.environ.get(TOKEN_ENV)
        if not raw and os.environ.get("ACTIONS_ID_TOKEN_REQUEST_URL"):
            try:
                raw = detect_credential()
            except Exception as exc:  # noqa: BLE001 - the package's own error types vary by version
                raise InputError(f"--keyless: GitHub's OIDC token could not be had ({exc}); give the job 'permissions: "
                                 "id-token: write'") from None
        if not raw:
            raise InputError(f"--keyless found no OIDC identity token: in GitHub Actions give the job 'permissions: "
                             f"id-token: write'; elsewhere put the token in ${TOKEN_ENV} (docs/signing.md)")
        try:
            token = IdentityToken(raw)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"--keyless: the OIDC token is not one Sigstore accepts ({exc})") from None
        try:
            try:
                from sigstore.models import ClientTrustConfig

                context = SigningContext.from_trust_config(ClientTrustConfig.production())
            except ImportError:  # sigstore 3.x
                context = SigningContext.production()  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - network failures reaching Sigstore's TUF root
            raise KeylessError(f"--keyless: Sigstore's trust root could not be fetched ({exc}); it needs the internet") from None
        return cls(token, context)

    def annotations(self, payload: bytes) -> dict[str, str]:
        """The ``.sig`` layer's annotations for ``payload``, as cosign writes a keyless signature."""
        from cryptography.hazmat.primitives import serialization

        try:
            with self.context.signer(self.token, cache=True) as signer:
                bundle = signer.sign_artifact(payload)
            entry = bundle.log_entry._inner
            chain = b"".join(c.public_bytes(serialization.Encoding.PEM)
                             for c in self.context._trusted_root.get_fulcio_certs())
        except Exception as exc:  # noqa: BLE001 - Fulcio/Rekor failures come as the package's many types
            raise KeylessError(f"--keyless: Sigstore refused or could not be reached ({exc})") from None
        promise = {"SignedEntryTimestamp": base64.b64encode(entry.inclusion_promise.signed_entry_timestamp).decode(),
                   "Payload": {"body": base64.b64encode(entry.canonicalized_body).decode(),
                               "integratedTime": entry.integrated_time, "logIndex": entry.log_index,
                               "logID": entry.log_id.key_id.hex()}}
        return {SIGNATURE_ANNOTATION: base64.b64encode(bundle.signature).decode(),
                CERTIFICATE_ANNOTATION: bundle.signing_certificate.public_bytes(serialization.Encoding.PEM).decode(),
                CHAIN_ANNOTATION: chain.decode(),
                BUNDLE_ANNOTATION: json.dumps(promise, separators=(",", ":"))}
