"""DSSE envelopes (Dead Simple Signing Envelope, v1): how an in-toto statement is signed, as cosign attests.

The signature covers the pre-authentication encoding ``PAE(type, body) =
"DSSEv1" SP len(type) SP type SP len(body) SP body``, never the JSON around it, so the
envelope's own serialisation cannot be used to smuggle another payload. The envelope is
``{"payloadType", "payload" (base64), "signatures": [{"keyid", "sig" (base64)}]}``;
``keyid`` is left empty, as cosign leaves it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from .keys import PrivateKey, PublicKey

__all__ = ["DSSE_MEDIA_TYPE", "IN_TOTO_PAYLOAD_TYPE", "Envelope", "pae", "sign_envelope"]

DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what is signed."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)


@dataclass(frozen=True)
class Envelope:
    """A parsed envelope: the payload's type and bytes, and the signatures (DER bytes)."""

    payload_type: str
    payload: bytes
    signatures: tuple[bytes, ...]

    def verified_by(self, key: PublicKey) -> bool:
        """Whether one of the signatures is ``key``'s over ``PAE(payload_type, payload)``."""
        message = pae(self.payload_type, self.payload)
        return any(key.verify(sig, message) for sig in self.signatures)

    @classmethod
    def parse(cls, data: bytes) -> Envelope | None:
        """The envelope in ``data``, or None when it is not one."""
        try:
            doc: Any = json.loads(data)
            payload = base64.b64decode(doc["payload"], validate=True)
            sigs = tuple(base64.b64decode(s["sig"], validate=True) for s in doc["signatures"])
            kind = doc["payloadType"]
        except (ValueError, KeyError, TypeError):
            return None
        return cls(kind, payload, sigs) if isinstance(kind, str) else None


def sign_envelope(payload: bytes, key: PrivateKey, payload_type: str = IN_TOTO_PAYLOAD_TYPE) -> bytes:
    """The envelope (JSON bytes, keys sorted, no spaces) of ``payload`` signed by ``key``."""
    doc = {"payload": base64.b64encode(payload).decode(), "payloadType": payload_type,
           "signatures": [{"keyid": "", "sig": key.sign_b64(pae(payload_type, payload))}]}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
