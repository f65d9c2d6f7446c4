"""What a push did, per blob and per platform: ``push_image``'s answer and the ``--json`` document's core."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..image.oci import MediaType

__all__ = ["PushResult"]


@dataclass(frozen=True)
class PushResult:
    """What a push did: the manifest (or index) digest, the references now pointing at it,
    and per blob whether it was already there (skipped), mounted from another repository,
    or uploaded. For a multi-platform image, ``manifests`` maps each platform
    (``linux/arm64/v8``) to its manifest's digest, in the index's order.
    ``blobs_speculative``: those of ``blobs_uploaded`` a push that builds sent while it
    hashed them (``speculative``), so no HEAD or second read was needed."""

    digest: str
    refs: tuple[str, ...]
    bytes_uploaded: int
    blobs_skipped: tuple[str, ...] = ()
    blobs_mounted: tuple[str, ...] = ()
    blobs_uploaded: tuple[str, ...] = ()
    manifests: dict[str, str] = field(default_factory=dict, hash=False)
    blobs_speculative: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "digest": self.digest,
            "refs": list(self.refs),
            "bytes_uploaded": self.bytes_uploaded,
            "blobs": {"skipped": list(self.blobs_skipped), "mounted": list(self.blobs_mounted),
                      "uploaded": list(self.blobs_uploaded), "speculative": list(self.blobs_speculative)},
        }
        if self.manifests:
            doc["mediaType"] = MediaType.INDEX
            doc["manifests"] = [{"platform": p, "digest": d} for p, d in self.manifests.items()]
        return doc
