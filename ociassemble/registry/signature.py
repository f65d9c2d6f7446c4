"""Signatures and attestations beside an image in a registry, stored where cosign stores them, and read back.

cosign's layout (what containers/image's ``use-sigstore-attachments``, Ratify, Kyverno and
cosign itself read): for a manifest ``sha256:<hex>``, the tag ``sha256-<hex>.sig`` names an
OCI image manifest with one layer per signature (the simple-signing payload, media type
``application/vnd.dev.cosign.simplesigning.v1+json``, its base64 signature in the
``dev.cosignproject.cosign/signature`` annotation), and ``sha256-<hex>.att`` one layer
per attestation (a DSSE envelope, ``application/vnd.dsse.envelope.v1+json``, with a
``predicateType`` annotation). The manifest's config is an OCI image config whose
``rootfs.diff_ids`` list the layers (as cosign's and containers/image's are).

Adding to a tag keeps what is there: the manifest is read, the new layer appended, the
config's diff_ids with it, and the tag moved to the new manifest (cosign and skopeo do
the same; two signers at the same moment can lose one of the two, as with them). A
signature already there (the same payload, checked with the same key) is not added again,
so pushing the same image again changes nothing.

A registry with the OCI 1.1 referrers API (``GET /v2/<name>/referrers/<digest>`` answers
an index) also gets each one as a referrer: a manifest whose ``subject`` is the image,
with cosign's ``artifactType``. distribution 2.8 has no such API (404): the tag is
what verifiers read there, and everywhere.

Uploads go through ``push.push_image``, so the ordering contract holds: the blobs first,
the tag last, never a tag naming a missing blob.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ArchiveError, RegistryError
from ..image.assemble import Image
from ..image.cache import BlobCache
from ..image.digest import Digest
from ..image.oci import Descriptor, ImageConfig, Manifest, MediaType, canonical_json
from .client import RegistryClient, RegistryOptions
from .push import push_image
from .reference import Reference
from .retry import call_with_retry

__all__ = ["ATT_SUFFIX", "SIG_SUFFIX", "Attachment", "Stored", "attach", "attachment_tag", "read_attachments",
           "resolve_manifest"]

SIG_SUFFIX = ".sig"
ATT_SUFFIX = ".att"
#: A signature or attestation layer bigger than this is refused on reading (an SLSA
#: statement is a few KiB; cosign's own limit on a layer it reads is far above).
ATTACHMENT_MAX = 4 << 20
#: The config cosign (go-containerregistry's empty image) writes for a new .sig/.att
#: manifest; the diff_ids are filled in with the layers.
_NEW_CONFIG: dict[str, Any] = {"architecture": "", "config": {}, "created": "0001-01-01T00:00:00Z",
                               "history": [{"created": "0001-01-01T00:00:00Z"}], "os": "",
                               "rootfs": {"diff_ids": [], "type": "layers"}}
_EMPTY = b"{}"

log = logging.getLogger("ociassemble.registry")


def attachment_tag(digest: str, suffix: str) -> str:
    """``sha256-<hex>.sig`` (or ``.att``): the tag cosign names a manifest's attachments by."""
    return Digest(digest).value.replace(":", "-", 1) + suffix


@dataclass(frozen=True)
class Attachment:
    """One signature or attestation: its layer's media type, bytes and annotations."""

    media_type: str
    payload: bytes
    annotations: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def digest(self) -> str:
        return str(Digest.of_bytes(self.payload))


@dataclass(frozen=True)
class Stored:
    """Where an attachment now is: ``ref`` (``registry/repo:sha256-<hex>.sig``) names the
    manifest ``digest``; ``added`` is False when the same one was there already (nothing
    pushed); ``referrer`` is the OCI 1.1 referrer's digest where the registry has the API."""

    subject: str
    ref: str
    digest: str
    added: bool
    referrer: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"subject": self.subject, "ref": self.ref, "digest": self.digest, "added": self.added,
                "referrer": self.referrer}


def _scopes(client: RegistryClient, repo: str, push: bool) -> tuple[str, ...]:
    return client.scopes(repo, push=push)


def _tag_manifest(client: RegistryClient, repo: str, tag: str, scopes: tuple[str, ...],
                  options: RegistryOptions) -> tuple[Manifest, bytes] | None:
    """The manifest a .sig/.att tag names (and its bytes), or None when there is no such tag."""
    try:
        data, _ctype, _ = call_with_retry(options.retry, f"reading {tag}",
                                          lambda _n: client.get_manifest(repo, tag, scopes))
    except RegistryError as exc:
        if exc.status == 404:
            return None
        raise
    try:
        return Manifest.from_json(json.loads(data)), data
    except (ValueError, ArchiveError, AttributeError) as exc:
        raise RegistryError(f"{client.registry}/{repo}:{tag} is not an OCI manifest ({exc}): another tool wrote "
                            "something else under cosign's tag; delete that tag and push again") from None


def _read_blob(client: RegistryClient, repo: str, desc: Descriptor, scopes: tuple[str, ...],
               options: RegistryOptions) -> bytes:
    data = call_with_retry(options.retry, f"reading blob {desc.digest}",
                           lambda _n: client.read_blob(repo, desc.digest, scopes, ATTACHMENT_MAX))
    if str(Digest.of_bytes(data)) != desc.digest:
        raise RegistryError(f"blob {desc.digest} from {client.registry}/{repo} does not hash to its digest: "
                            "the registry returned other bytes", digest=desc.digest)
    return data


def _has_referrers_api(client: RegistryClient, repo: str, digest: str, scopes: tuple[str, ...]) -> bool:
    """Whether the registry answers the OCI 1.1 referrers API for this repository (an index, 200)."""
    try:
        resp = client.request("GET", f"/v2/{repo}/referrers/{digest}", scopes=scopes, ok=(200, 400, 404, 405),
                              headers={"Accept": MediaType.INDEX}, what="asking for referrers", repo=repo)
    except RegistryError:
        return False
    try:
        if resp.status_code != 200:
            return False
        doc = json.loads(resp.content[:1 << 20])
        return isinstance(doc, dict) and isinstance(doc.get("manifests"), list)
    except ValueError:
        return False
    finally:
        resp.close()


def attach(ref: Reference, subject: Descriptor, item: Attachment, *, suffix: str, artifact_type: str,
           cache: BlobCache, options: RegistryOptions | None = None,
           already: Callable[[Attachment], bool] = lambda _a: False) -> Stored:
    """Add ``item`` to the ``sha256-<hex><suffix>`` tag of ``subject`` in ``ref``'s repository.

    ``already(existing)`` is asked of each layer there with the same payload: True means it
    is the same signature (e.g. it verifies with the signing key), and nothing is pushed.

    Example::

        attach(parse_reference("registry.example.com/team/app"), image.descriptor,
               Attachment(SIMPLESIGNING_MEDIA_TYPE, payload, {SIGNATURE_ANNOTATION: sig}),
               suffix=SIG_SUFFIX, artifact_type=SIGNATURE_ARTIFACT_TYPE, cache=cache)

    Raises RegistryError/AuthError when the registry refuses or keeps failing.
    """
    options = options or RegistryOptions()
    tag = attachment_tag(subject.digest, suffix)
    where = f"{ref.registry}/{ref.repository}:{tag}"
    client = RegistryClient(ref.registry, options)
    try:
        scopes = _scopes(client, ref.repository, push=True)
        found = _tag_manifest(client, ref.repository, tag, scopes, options)
        config_doc: dict[str, Any] = json.loads(json.dumps(_NEW_CONFIG))
        layers: tuple[Descriptor, ...] = ()
        annotations = None
        if found is not None:
            manifest, data = found
            for layer in manifest.layers:
                if layer.digest == item.digest and layer.media_type == item.media_type and \
                        already(Attachment(layer.media_type, item.payload, dict(layer.annotations or {}))):
                    log.info("%s holds this %s already", where, suffix.lstrip("."))
                    return Stored(subject.digest, where, str(Digest.of_bytes(data)), False)
            loaded = json.loads(_read_blob(client, ref.repository, manifest.config, scopes, options))
            if isinstance(loaded, dict):
                config_doc = loaded
            layers, annotations = manifest.layers, manifest.annotations
        rootfs = config_doc.setdefault("rootfs", {"type": "layers"})
        if not isinstance(rootfs, dict):
            rootfs = config_doc["rootfs"] = {"type": "layers"}
        if not isinstance(rootfs.get("diff_ids"), list):
            rootfs["diff_ids"] = [d.digest for d in layers]
        rootfs["diff_ids"].append(item.digest)
        has_referrers = _has_referrers_api(client, ref.repository, subject.digest, scopes)
    finally:
        client.close()
    layer = Descriptor(item.media_type, str(cache.put_bytes(item.payload)), len(item.payload),
                       annotations=dict(item.annotations))
    config_bytes = canonical_json(config_doc)
    config = Descriptor(MediaType.CONFIG, str(cache.put_bytes(config_bytes)), len(config_bytes))
    manifest = Manifest(config=config, layers=(*layers, layer), annotations=annotations)
    image = Image(manifest, manifest.to_bytes(), ImageConfig(), config_bytes)
    push_image(image, cache, [where], options=options)
    referrer = None
    if has_referrers:
        empty = Descriptor(MediaType.EMPTY, str(cache.put_bytes(_EMPTY)), len(_EMPTY))
        art = Manifest(config=empty, layers=(layer,), subject=subject, artifact_type=artifact_type)
        art_image = Image(art, art.to_bytes(), ImageConfig(), _EMPTY)
        push_image(art_image, cache, [f"{ref.registry}/{ref.repository}@{art_image.digest}"], options=options)
        referrer = art_image.digest
    return Stored(subject.digest, where, image.digest, True, referrer)


def resolve_manifest(ref: Reference, options: RegistryOptions | None = None) -> tuple[str, bytes]:
    """(digest, bytes) of the manifest or index ``ref`` names; the digest is computed from the
    bytes, and a pinned ``@digest`` must match it."""
    options = options or RegistryOptions()
    client = RegistryClient(ref.registry, options)
    try:
        scopes = _scopes(client, ref.repository, push=False)
        data, _ctype, _ = call_with_retry(options.retry, f"reading manifest {ref.reference}",
                                          lambda _n: client.get_manifest(ref.repository, ref.reference, scopes))
    finally:
        client.close()
    digest = str(Digest.of_bytes(data))
    if ref.digest and ref.digest != digest:
        raise RegistryError(f"{ref} returned a manifest whose digest is {digest}: the registry answered other bytes",
                            digest=ref.digest)
    return digest, data


def read_attachments(ref: Reference, digest: str, suffix: str,
                     options: RegistryOptions | None = None) -> list[Attachment]:
    """Every layer of the ``sha256-<hex><suffix>`` tag of manifest ``digest`` (none when there is
    no such tag), each blob checked against its digest."""
    options = options or RegistryOptions()
    client = RegistryClient(ref.registry, options)
    try:
        scopes = _scopes(client, ref.repository, push=False)
        found = _tag_manifest(client, ref.repository, attachment_tag(digest, suffix), scopes, options)
        if found is None:
            return []
        return [Attachment(layer.media_type, _read_blob(client, ref.repository, layer, scopes, options),
                           dict(layer.annotations or {})) for layer in found[0].layers]
    finally:
        client.close()
