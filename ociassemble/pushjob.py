"""The ``push`` job: build (from the cache) or read an image, push it, then its layer cache entries, SBOMs and signatures.

A multi-platform image (``platforms`` of two or more, or ``source`` an index) is pushed
whole: the tags name the index; with ``settings.sbom`` each platform's image gets its own
SBOM, referring to that platform's manifest. The registry layer cache is written only
once the image is pushed. With a signing key (or keyless) the pushed manifest (an index
and each platform's) is signed as cosign signs, and with ``provenance`` a signed SLSA
statement is attached. The key is opened before anything is built (``--sign-key``, else
``$OCIASSEMBLE_SIGN_KEY``, else the config's ``sign_key``; its password from the settings,
else ``ask_password``); the signature is stored after the image, and a failure there says
that the image itself was pushed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .atomicfile import write_atomic
from .build import build_images
from .built import Built, BuiltSet, layers_json, platform_json, work_json, work_line
from .errors import InputError, UsageError
from .events import QUIET, Progress
from .image.assemble import Image
from .image.cache import BlobCache
from .image.imageindex import Target
from .image.oci import Platform
from .settings import Settings, SigningSettings
from .sizes import human_size

if TYPE_CHECKING:
    from .registry.client import RegistryOptions
    from .registry.pushresult import PushResult
    from .sign.keyless import KeylessSigner
    from .sign.keys import PrivateKey

__all__ = ["PushOutcome", "SbomDocs", "open_signing_key", "push"]

#: The SBOMs pushed beside an image (``push_sboms``): one document's record, or one per platform.
SbomDocs = dict[str, Any] | list[dict[str, Any]]


@dataclass
class PushOutcome:
    """What ``push`` did: the registry's answer, the build (None for ``source``), the layer cache
    entries written, the SBOMs and signatures stored."""

    pushed: PushResult
    built: BuiltSet | None = None
    cache_written: int | None = None
    sbom: SbomDocs | None = None
    signed: dict[str, Any] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return self.pushed.digest

    def to_json(self) -> dict[str, Any]:
        built = self.built
        data = {**self.pushed.to_json(), "layers": layers_json(built.builds[0].layers if built else []),
                **work_json(built)}
        if built is not None and built.index is not None:
            data["platforms"] = [platform_json(b) for b in built.builds]
        if self.sbom is not None:
            data["sbom"] = self.sbom
        data.update(self.signed)
        return data


def _keyless(settings: Settings) -> KeylessSigner:
    """Keyless signing: the Sigstore signer, or one line saying what is missing (the package, an
    OIDC token) before any work."""
    from .sign.keyless import KeylessSigner

    if settings.signing.key_from == "--sign-key":
        raise UsageError("--keyless signs without a key: drop --sign-key (or drop --keyless)")
    if settings.signing.provenance:
        raise UsageError("--provenance is signed with a key (--sign-key cosign.key); with --keyless, attest after the "
                         "push with 'cosign attest' (docs/signing.md)")
    return KeylessSigner.from_environment()


def _read_source(source: str, platform: Platform | str, cache: BlobCache, options: RegistryOptions) -> Target:
    """``push --from``: the image (or index) at ``source``, of ``platform`` or of all of them."""
    from .image.imageindex import for_platform
    from .image.platform import ALL
    from .imageio import load_image
    from .transport.spec import is_registry

    # an uncompressed layer is read once, to send it: the registry checks its digest (``defer``)
    target = load_image(source, cache, registry_options=options if is_registry(source) else None,
                        verify_diff_ids=True, platform=platform, defer=True)
    if platform != ALL:  # an image of one platform must be that platform's
        target = for_platform(target, platform, source)  # type: ignore[arg-type]
    return target


def _write_layer_cache(built: BuiltSet | None, refs: list[str], progress: Progress) -> int | None:
    """The registry layer cache entries of this build, written only now that the image is pushed."""
    from .registry.reference import parse_reference

    lc = built.layer_cache if built else None
    if built is None or lc is None or not lc.write_enabled:
        return None
    pushed = parse_reference(refs[0])
    written = lc.write([l for _, l in built.layers], mount_from=f"{pushed.registry}/{pushed.repository}")
    progress.log(f"registry cache {lc.name}: {written} entries written")
    return written


def push(settings: Settings, refs: Sequence[str] = (), *, source: str | None = None,
         platform: Platform | str | None = None, digest_file: Path | None = None, progress: Progress = QUIET,
         ask_password: Callable[[str], bytes | None] | None = None) -> PushOutcome:
    """Push the image the settings build (or ``source``, an image built before: ``platform`` picks one
    of its platforms, default all) to ``refs`` (default: the config's ``image``), then what goes
    beside it. ``digest_file`` gets the pushed digest. ``ask_password`` is asked for an encrypted
    signing key's password when the settings hold none.

    Raises UsageError with nothing pushed for a missing destination, signing key or ``digest_file``
    folder, and the ``errors`` of the build, the registry and signing (``SignaturePushError``: the
    image was pushed; so was it, with all that goes beside it, when an InputError says the ``digest_file``
    could not be written).
    """
    from .image.imageindex import ImageIndex
    from .image.platform import ALL, normalize
    from .registry.session import open_push

    refs = list(refs) or ([settings.image] if source is None and settings.image else [])
    keyless = _keyless(settings) if settings.signing.keyless else None
    key = None if keyless is not None else open_signing_key(settings.signing, ask_password)
    if settings.signing.provenance and key is None and keyless is None:
        raise UsageError("--provenance is signed with the signing key: give --sign-key cosign.key (or "
                         "$OCIASSEMBLE_SIGN_KEY" + (")" if source else ", or sign_key in the config)"))
    if not refs:
        raise UsageError("push needs a destination, e.g. 'ociassemble push registry.example.com/team/model:1.0'")
    digest_file = Path(digest_file) if digest_file is not None else None  # (a library caller may give a str)
    if digest_file is not None and not digest_file.parent.is_dir():
        raise UsageError(f"--digest-file {digest_file}: folder {digest_file.parent} does not exist; create it "
                         "or name a file in another folder")
    cache = settings.blob_cache()
    # before any work: the credentials bound to the destination (or refused), the layer cache, the uploader
    session = open_push(settings.registry, refs, cache, secrets=settings.secrets,
                        layer_cache=settings.layer_cache if source is None else None,
                        speculative=settings.speculative_upload and source is None,
                        on_wait=lambda registry, seconds: progress.log(
                            f"registry {registry} asked to slow down: waiting {seconds:.1f} s before any request to it"))
    options, built = session.options, None
    try:
        if source is not None:
            target = _read_source(source, platform or ALL, cache, options)
        else:
            built = build_images(settings, cache, registry_options=options, layer_cache=session.layer_cache,
                                 progress=progress, uploader=session.uploader)
            target = built.target
        images = list(target.images) if isinstance(target, ImageIndex) else [target]
        what = f"{target.digest} ({', '.join(str(normalize(i.platform)) for i in images)})" if len(images) > 1 \
            else target.digest
        progress.log(f"pushing {what} to {', '.join(refs)}")
    except BaseException:
        session.close()
        raise
    res = session.finish(target, cache, on_bytes=progress.blob_bytes)
    unwritten = None  # the digest file's failure is told last: the cache entries, SBOMs and signatures still go
    if digest_file is not None:
        try:
            write_atomic(digest_file, res.digest + "\n")  # an index's digest: what the tags name
        except OSError as exc:
            unwritten = InputError(f"pushed {res.digest} as {', '.join(refs)}, but --digest-file {digest_file} could "
                                   f"not be written ({exc.strerror}): write it from that digest, or push again")
    progress.log(f"pushed: {len(res.blobs_uploaded)} blobs uploaded ({human_size(res.bytes_uploaded)}), "
                 f"{len(res.blobs_mounted)} mounted, {len(res.blobs_skipped)} already there")
    outcome = PushOutcome(res, built, _write_layer_cache(built, refs, progress))
    if built is not None:
        progress.log(work_line(built))
    if settings.sbom:
        outcome.sbom = push_sboms(images, built, cache, refs, options, progress, several=isinstance(target, ImageIndex),
                                  created=settings.epoch)
    if key is not None or keyless is not None:
        outcome.signed = sign_pushed(target, refs, key, keyless, settings.signing.provenance, built, cache, options,
                                     outcome.sbom, progress)
    if unwritten is not None:
        raise unwritten
    return outcome


# -- the signing key ----------------------------------------------------------------------------------------------


def open_signing_key(signing: SigningSettings,
                     ask_password: Callable[[str], bytes | None] | None = None) -> PrivateKey | None:
    """The opened signing key, or None when no key is named. Raises InputError for a missing
    file, a wrong password (WrongPasswordError) or a key that is not ECDSA P-256 (UnsupportedKeyError)."""
    path = signing.key
    if path is None:
        return None
    from .sign.keys import is_encrypted, load_private_key  # here: a push that signs nothing loads no cryptography
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


# -- what goes beside a pushed image ------------------------------------------------------------------------------


def push_sboms(images: list[Image], built: BuiltSet | None, cache: BlobCache, refs: list[str], options: RegistryOptions,
               progress: Progress, *, several: bool, created: int = 0) -> SbomDocs:
    """Each image's SBOM, pushed as an artifact whose subject is that image's manifest: one
    document for one image, a list naming each platform for a multi-platform one; dated
    ``created`` (``Settings.epoch``), as the image is."""
    from .build import image_sbom
    from .image.platform import normalize
    from .image.sbom import SPDX_MEDIA_TYPE
    from .registry.reference import parse_reference
    from .registry.sbom import push_sbom

    first = parse_reference(refs[0])
    builds: list[Built | None] = list(built.builds) if built is not None else [None] * len(images)
    docs = []
    for image, b in zip(images, builds):
        platform = str(normalize(image.platform))
        progress.log("listing packages for the SBOM" + (f" of {platform}" if several else ""))
        sbom = image_sbom(image, cache, name=str(first), repository=f"{first.registry}/{first.repository}",
                          site=b.deps_site if b else None, scan=b.scan_layers if b else None, created=created)
        artifact, pushed = push_sbom(image, cache, sbom, list(refs), options=options, created=created)
        doc: dict[str, Any] = {"digest": artifact.digest, "refs": pushed, "artifactType": SPDX_MEDIA_TYPE,
                               "size": len(sbom)}
        if several:
            doc = {"platform": platform, "subject": image.digest, **doc}
        docs.append(doc)
        progress.log(f"pushed the SBOM {artifact.digest[:19]}" + (f" of {platform}" if several else "")
                     + f" as {', '.join(pushed)}")
    return docs if several else docs[0]


def sign_pushed(target: Target, refs: list[str], key: PrivateKey | None, keyless: KeylessSigner | None, provenance: bool,
                built: BuiltSet | None, cache: BlobCache, options: RegistryOptions, sbom: SbomDocs | None,
                progress: Progress) -> dict[str, Any]:
    """Sign what was pushed (and attach its provenance); a failure says that the image itself was pushed."""
    from .errors import RegistryError, SignaturePushError
    from .registry.cosign import attest_image, sign_image

    what = "signature"
    try:
        stored = sign_image(target, refs, key, cache, options=options, keyless=keyless)
        added = sum(s.added for s in stored)
        by = f"key sha256:{key.public.keyid[:16]}…" if key is not None else "Sigstore keyless"
        progress.log(f"signed {target.digest} ({by}): "
                     f"{added} signature{'s' if added != 1 else ''} added, {len(stored) - added} already there")
        result: dict[str, Any] = {"signatures": [s.to_json() for s in stored]}
        if provenance:
            what = "provenance"
            statements = _statements(target, refs, built, options, sbom)
            attested = attest_image(target, refs, key, statements, cache, options=options)
            progress.log(f"attached the SLSA provenance to {len(statements)} manifest"
                         f"{'s' if len(statements) != 1 else ''}")
            result["provenance"] = [s.to_json() for s in attested]
        return result
    except RegistryError as exc:
        raise SignaturePushError(f"pushed {target.digest} as {', '.join(refs)}, but its {what} was not stored: {exc}",
                                 status=exc.status, codes=exc.codes) from exc


def _statements(target: Target, refs: list[str], built: BuiltSet | None, options: RegistryOptions,
                sbom: SbomDocs | None) -> dict[str, bytes]:
    """The SLSA statement for each subject of ``target`` (the same inputs, each subject's own digest)."""
    from .image.oci import canonical_json
    from .registry.cosign import subjects
    from .registry.reference import parse_reference
    from .sign.ci import ci_run
    from .sign.provenance import Material, provenance_statement

    materials: list[Material] = []
    params: dict[str, Any] = {"refs": refs}
    if built is not None:
        from .materials import build_materials, build_parameters

        materials = build_materials(built, options)
        params = build_parameters(built, refs)
    else:  # push --from: an image built before; what it was made from is that build's to say
        params["pushedFrom"] = "an image built earlier (push --from)"
    byproducts = []
    for doc in (sbom if isinstance(sbom, list) else [sbom] if sbom else []):
        byproducts.append(Material("sbom" + (f" {doc['platform']}" if "platform" in doc else ""),
                                   {"sha256": doc["digest"].split(":", 1)[1]}, doc["refs"][0] if doc.get("refs") else None,
                                   {"mediaType": doc.get("artifactType", "")}))
    name = parse_reference(refs[0]).name
    ci = ci_run(os.environ)  # the CI run is the provenance's builder, read where it is stated
    return {d.digest: canonical_json(provenance_statement(name, d.digest, materials=materials, parameters=params, ci=ci,
                                                          byproducts=byproducts))
            for d in subjects(target)}
