"""Signing a pushed image and attesting its provenance as cosign does, and verifying both as cosign and containers/image do.

``sign_image`` signs the manifest (or index) a push named, and, for a multi-platform
image, each platform's manifest too (a verifier that resolves the tag to one platform
then finds its signature), in every repository pushed to: each repository gets a payload
naming it (``docker-reference``), which is what ``matchRepository`` policies check.
``attest_image`` stores a signed DSSE envelope of an in-toto statement the same way
(``.att``). ``verify_image`` reads them back: a signature counts when it verifies with
the key, names this manifest's digest and this repository.

Example::

    key = load_private_key(Path("cosign.key").read_bytes(), b"pw", "cosign.key")
    stored = sign_image(result_target, ["registry.example.com/team/app:1.0"], key, cache)
    report = verify_image("registry.example.com/team/app:1.0", key.public)
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ImageReferenceError, SignatureError
from ..image.cache import BlobCache
from ..image.imageindex import ImageIndex, Target
from ..image.oci import Descriptor, MediaType
from ..sign.dsse import DSSE_MEDIA_TYPE, IN_TOTO_PAYLOAD_TYPE, Envelope, sign_envelope
from ..sign.keys import PrivateKey, PublicKey
from ..sign.provenance import SLSA_PREDICATE_TYPE, STATEMENT_TYPE
from ..sign.simplesigning import (SIGNATURE_ANNOTATION, SIGNATURE_ARTIFACT_TYPE, SIMPLESIGNING_MEDIA_TYPE,
                                  parse_payload, signing_payload)
from .client import RegistryOptions
from .reference import Reference, parse_reference
from .signature import ATT_SUFFIX, SIG_SUFFIX, Attachment, Stored, attach, read_attachments, resolve_manifest

__all__ = ["Verification", "attest_image", "sign_image", "subjects", "verify_image"]

#: The annotation cosign puts on an attestation layer naming the statement's predicate.
PREDICATE_ANNOTATION = "predicateType"


def subjects(target: Target) -> list[Descriptor]:
    """What is signed for ``target``: the top document (what the tags name) first, then, for
    an index, each platform's manifest."""
    if isinstance(target, ImageIndex):
        top = Descriptor(MediaType.INDEX, target.digest, len(target.index_bytes))
        return [top, *(image.descriptor for image in target.images)]
    return [target.descriptor]


def _repositories(refs: Sequence[str]) -> list[Reference]:
    """Each repository of ``refs`` once, in order."""
    out: dict[str, Reference] = {}
    for r in refs:
        parsed = parse_reference(r)
        out.setdefault(parsed.name, Reference(parsed.registry, parsed.repository))
    return list(out.values())


def _signature_of(key: PublicKey, item: Attachment) -> bool:
    try:
        sig = base64.b64decode(item.annotations.get(SIGNATURE_ANNOTATION, ""), validate=True)
    except (binascii.Error, ValueError):
        return False
    return bool(sig) and key.verify(sig, item.payload)


def sign_image(target: Target, refs: Sequence[str], key: PrivateKey | None, cache: BlobCache, *,
               options: RegistryOptions | None = None, keyless: Any = None) -> list[Stored]:
    """Sign every subject of ``target`` (``subjects``) in every repository of ``refs`` with
    ``key``, or with ``keyless`` (a ``sign.keyless.KeylessSigner``) when there is no key; a
    signature already there by the same key is kept and not pushed again. Raises what
    ``signature.attach`` raises."""
    stored = []
    for repo in _repositories(refs):
        for subject in subjects(target):
            payload = signing_payload(repo.name, subject.digest)
            annotations = {SIGNATURE_ANNOTATION: key.sign_b64(payload)} if key is not None else keyless.annotations(payload)
            item = Attachment(SIMPLESIGNING_MEDIA_TYPE, payload, annotations)
            stored.append(attach(repo, subject, item, suffix=SIG_SUFFIX, artifact_type=SIGNATURE_ARTIFACT_TYPE,
                                 cache=cache, options=options,
                                 already=lambda a: key is not None and _signature_of(key.public, a)))
    return stored


def attest_image(target: Target, refs: Sequence[str], key: PrivateKey, statements: dict[str, bytes],
                 cache: BlobCache, *, options: RegistryOptions | None = None) -> list[Stored]:
    """Attach each in-toto statement of ``statements`` (subject digest → statement bytes) as a
    DSSE envelope signed by ``key`` under that subject's ``.att`` tag, in every repository of
    ``refs``. An envelope with the same statement by the same key is kept, not pushed again."""
    stored = []
    by_digest = {d.digest: d for d in subjects(target)}
    for repo in _repositories(refs):
        for digest, statement in statements.items():
            predicate = json.loads(statement).get("predicateType", "")
            envelope = sign_envelope(statement, key)
            item = Attachment(DSSE_MEDIA_TYPE, envelope, {PREDICATE_ANNOTATION: predicate, SIGNATURE_ANNOTATION: ""})

            def same(a: Attachment) -> bool:  # the identical envelope (deterministic signatures) by this key
                env = Envelope.parse(a.payload)
                return env is not None and env.verified_by(key.public)

            stored.append(attach(repo, by_digest[digest], item, suffix=ATT_SUFFIX, artifact_type=DSSE_MEDIA_TYPE,
                                 cache=cache, options=options, already=same))
    return stored


@dataclass(frozen=True)
class Verification:
    """What ``verify_image`` found: the manifest ``digest`` the reference names, the
    signatures that verify (their ``docker-reference``), and the provenance statements that
    verify (``predicateType``, builder id, subjects) when asked for."""

    name: str
    digest: str
    keyid: str
    signatures: tuple[str, ...]
    provenance: tuple[dict[str, Any], ...] = field(default=(), hash=False)
    provenance_checked: bool = False

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"schemaVersion": 1, "name": self.name, "digest": self.digest, "verified": True,
                               "key": {"sha256": self.keyid},
                               "signatures": [{"dockerReference": s} for s in self.signatures]}
        if self.provenance_checked:
            doc["provenance"] = list(self.provenance)
        return doc

    def render(self) -> str:
        lines = [f"{self.name}: {self.digest} is signed by key sha256:{self.keyid[:16]}… "
                 f"({len(self.signatures)} valid signature{'s' if len(self.signatures) != 1 else ''}, "
                 f"identity {', '.join(sorted(set(self.signatures)))})"]
        for p in self.provenance:
            lines.append(f"provenance: {p['predicateType']} by {p['builder']}, signed by the same key, "
                         f"subject {self.digest}")
        return "\n".join(lines)


def _check_signatures(ref: Reference, digest: str, key: PublicKey, items: list[Attachment]) -> list[str]:
    """The ``docker-reference`` of each signature that verifies; raises SignatureError naming why none does."""
    good, why = [], []
    for item in items:
        if item.media_type != SIMPLESIGNING_MEDIA_TYPE:
            continue
        if not _signature_of(key, item):
            why.append("signed by another key")
            continue
        claim = parse_payload(item.payload)
        if claim is None:
            why.append("a payload that is not a cosign image signature")
            continue
        if claim.digest != digest:
            why.append(f"signed for {claim.digest}")
            continue
        try:
            named = parse_reference(claim.docker_reference)
        except ImageReferenceError:
            why.append(f"naming {claim.docker_reference!r}, not a repository")
            continue
        if named.name != ref.name:
            why.append(f"signed for repository {named.name}")
            continue
        good.append(claim.docker_reference)
    if not good:
        what = f"{ref.name}@{digest}"
        if not why:
            raise SignatureError(f"{what} has no signature (no {SIG_SUFFIX} attachment): sign it with "
                                 "'ociassemble push --sign-key cosign.key' or 'cosign sign'")
        reasons = ", ".join(dict.fromkeys(why))
        raise SignatureError(f"{what} has no valid signature by this key ({len(why)} found: {reasons})")
    return good


def _check_provenance(ref: Reference, digest: str, key: PublicKey, items: list[Attachment]) -> list[dict[str, Any]]:
    """The SLSA provenance statements about ``digest`` that verify with ``key``; raises SignatureError when none."""
    good, why = [], []
    hexd = digest.split(":", 1)[1]
    for item in items:
        if item.media_type != DSSE_MEDIA_TYPE:
            continue
        env = Envelope.parse(item.payload)
        if env is None:
            why.append("an envelope that is not DSSE")
            continue
        if not env.verified_by(key):
            why.append("signed by another key")
            continue
        try:
            statement = json.loads(env.payload)
            kind, predicate_type = statement["_type"], statement["predicateType"]
            named = [s["digest"].get("sha256") for s in statement["subject"]]
            builder = statement["predicate"]["runDetails"]["builder"]["id"]
        except (ValueError, KeyError, TypeError, AttributeError):
            why.append("a payload that is not an SLSA v1 in-toto statement")
            continue
        if env.payload_type != IN_TOTO_PAYLOAD_TYPE or kind != STATEMENT_TYPE or predicate_type != SLSA_PREDICATE_TYPE:
            why.append(f"a {predicate_type} statement")
            continue
        if hexd not in named:
            why.append("a statement about another digest")
            continue
        good.append({"predicateType": predicate_type, "builder": builder,
                     "subject": [s for s in statement["subject"]]})
    if not good:
        what = f"{ref.name}@{digest}"
        if not why:
            raise SignatureError(f"{what} has no provenance (no {ATT_SUFFIX} attestation): push it with "
                                 "'ociassemble push --sign-key cosign.key --provenance'")
        raise SignatureError(f"{what} has no valid SLSA provenance by this key ({len(why)} found: "
                             f"{', '.join(dict.fromkeys(why))})")
    return good


def verify_image(name: str, key: PublicKey, *, provenance: bool = False,
                 options: RegistryOptions | None = None) -> Verification:
    """Check the signature (and with ``provenance`` the SLSA provenance) of the image ``name``
    (a registry reference: the tag is resolved to the manifest digest, which is what is
    checked). Raises SignatureError when there is none or none verifies, RegistryError when
    the registry cannot be read."""
    ref = parse_reference(name)
    digest, _ = resolve_manifest(ref, options)
    signatures = _check_signatures(ref, digest, key, read_attachments(ref, digest, SIG_SUFFIX, options))
    statements: list[dict[str, Any]] = []
    if provenance:
        statements = _check_provenance(ref, digest, key, read_attachments(ref, digest, ATT_SUFFIX, options))
    return Verification(name, digest, key.keyid, tuple(signatures), tuple(statements), provenance)
