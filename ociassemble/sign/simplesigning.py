"""The payload cosign signs for an image: Red Hat's "simple signing" JSON naming the repository and the manifest digest.

``{"critical": {"identity": {"docker-reference": REPO}, "image": {"docker-manifest-digest": DIGEST},
"type": "cosign container image signature"}, "optional": null}``, byte for byte as cosign
(sigstore/sigstore's ``payload.Cosign``) writes it, so what we sign is what cosign would.

It is stored as a layer of media type ``SIMPLESIGNING_MEDIA_TYPE`` with the base64 DER
signature in the ``SIGNATURE_ANNOTATION`` annotation. Verifiers (containers/image's
``sigstoreSigned``, cosign) check the digest against the image's and, with
``matchRepository``, the repository against the one pulled from; ``optional`` is theirs to
ignore (containers/image puts a creator and a timestamp there).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["COSIGN_SIGNATURE_TYPE", "SIGNATURE_ANNOTATION", "SIMPLESIGNING_MEDIA_TYPE", "SignedClaim",
           "parse_payload", "signing_payload"]

SIMPLESIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
COSIGN_SIGNATURE_TYPE = "cosign container image signature"
#: The artifactType of a signature pushed as an OCI 1.1 referrer (cosign's, and what Ratify looks for).
SIGNATURE_ARTIFACT_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"


@dataclass(frozen=True)
class SignedClaim:
    """What a payload says: the repository (``docker-reference``, maybe with a tag) and the manifest digest."""

    docker_reference: str
    digest: str


def signing_payload(repository: str, digest: str) -> bytes:
    """The payload for the manifest ``digest`` in ``repository`` (``registry/name``, no tag),
    in cosign's field order and spacing (Go's ``json.Marshal``: struct order, no spaces)."""
    doc = {"critical": {"identity": {"docker-reference": repository},
                        "image": {"docker-manifest-digest": digest},
                        "type": COSIGN_SIGNATURE_TYPE},
           "optional": None}
    return json.dumps(doc, separators=(",", ":")).encode()


def parse_payload(data: bytes) -> SignedClaim | None:
    """The claim of a payload, or None when it is not a cosign image signature payload
    (checked as strictly as containers/image does: the three critical fields, the type)."""
    try:
        doc: Any = json.loads(data)
        critical = doc["critical"]
        kind = critical["type"]
        digest = critical["image"]["docker-manifest-digest"]
        reference = critical["identity"]["docker-reference"]
    except (ValueError, KeyError, TypeError):
        return None
    if kind != COSIGN_SIGNATURE_TYPE or not isinstance(digest, str) or not isinstance(reference, str):
        return None
    return SignedClaim(reference, digest)
