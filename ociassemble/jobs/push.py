"""The ``push`` job: build (from the cache) or read an image, push it, then its layer cache entries, SBOMs and signatures.

A multi-platform image (``platforms`` of two or more, or ``source`` an index) is pushed
whole: the tags name the index; with ``settings.sbom`` each platform's image gets its own
SBOM, referring to that platform's manifest. The registry layer cache is written only
once the image is pushed. With a signing key (or keyless) the pushed manifest (an index
and each platform's) is signed as cosign signs, and with ``provenance`` a signed SLSA
statement is attached. The key is opened before anything is built; the signature is
stored after the image, and a failure there says that the image itself was pushed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..built import BuiltSet
from ..errors import UsageError
from ..events import QUIET, Progress
from ..image.cache import BlobCache
from ..image.imageindex import Target
from ..image.oci import Platform
from ..settings import Settings
from ..sizes import human_size
from .attach import push_sboms, sign_pushed
from .building import build_set
from .report import layers_json, platform_json, work_json, work_line
from .signkey import open_signing_key

__all__ = ["PushOutcome", "push"]


@dataclass
class PushOutcome:
    """What ``push`` did: the registry's answer (``registry.push.PushResult``), the build (None for
    ``source``), the layer cache entries written, the SBOMs and signatures stored."""

    pushed: Any
    built: BuiltSet | None = None
    cache_written: int | None = None
    sbom: Any = None
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


def _keyless(settings: Settings) -> Any:
    """Keyless signing: the Sigstore signer, or one line saying what is missing (the package, an
    OIDC token) before any work."""
    from ..sign.keyless import KeylessSigner

    if settings.signing.key_from == "--sign-key":
        raise UsageError("--keyless signs without a key: drop --sign-key (or drop --keyless)")
    if settings.signing.provenance:
        raise UsageError("--provenance is signed with a key (--sign-key cosign.key); with --keyless, attest after the "
                         "push with 'cosign attest' (docs/signing.md)")
    return KeylessSigner.from_environment()


def _read_source(source: str, platform: Platform | str, cache: BlobCache, options: Any) -> Target:
    """``push --from``: the image (or index) at ``source``, of ``platform`` or of all of them."""
    from ..image.imageindex import for_platform
    from ..image.platform import ALL
    from ..imageio import load_image
    from ..transport.spec import is_registry

    target = load_image(source, cache, registry_options=options if is_registry(source) else None,
                        verify_diff_ids=True, platform=platform)
    if platform != ALL:  # an image of one platform must be that platform's
        target = for_platform(target, platform, source)  # type: ignore[arg-type]
    return target


def _write_layer_cache(built: BuiltSet | None, refs: list[str], progress: Progress) -> int | None:
    """The registry layer cache entries of this build, written only now that the image is pushed."""
    from ..registry.reference import parse_reference

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

    Raises UsageError with nothing pushed for a missing destination or signing key, and the
    ``errors`` of the build, the registry and signing (``SignaturePushError``: the image was pushed).
    """
    from ..image.imageindex import ImageIndex
    from ..image.platform import ALL, normalize
    from ..registry.push import push_image

    refs = list(refs) or ([settings.image] if source is None and settings.image else [])
    keyless = _keyless(settings) if settings.signing.keyless else None
    key = None if keyless is not None else open_signing_key(settings.signing, ask_password)
    if settings.signing.provenance and key is None and keyless is None:
        raise UsageError("--provenance is signed with the signing key: give --sign-key cosign.key (or "
                         "$OCIASSEMBLE_SIGN_KEY" + (")" if source else ", or sign_key in the config)"))
    if not refs:
        raise UsageError("push needs a destination, e.g. 'ociassemble push registry.example.com/team/model:1.0'")
    cache = settings.blob_cache()
    options = settings.registry_options(*refs)  # credentials bound to the destination (or refused) before any work
    built = None
    if source is not None:
        target = _read_source(source, platform or ALL, cache, options)
    else:
        built = build_set(settings, cache, options, progress, pushing=True)
        target = built.target
    images = list(target.images) if isinstance(target, ImageIndex) else [target]
    what = f"{target.digest} ({', '.join(str(normalize(i.platform)) for i in images)})" if len(images) > 1 \
        else target.digest
    progress.log(f"pushing {what} to {', '.join(refs)}")
    options = replace(options, on_wait=lambda registry, seconds: progress.log(
        f"registry {registry} asked to slow down: waiting {seconds:.1f} s before any request to it"))
    res = push_image(target, cache, refs, options=options, on_bytes=progress.blob_bytes)
    if digest_file is not None:
        Path(digest_file).write_text(res.digest + "\n")  # an index's digest: what the tags name
    progress.log(f"pushed: {len(res.blobs_uploaded)} blobs uploaded ({human_size(res.bytes_uploaded)}), "
                 f"{len(res.blobs_mounted)} mounted, {len(res.blobs_skipped)} already there")
    outcome = PushOutcome(res, built, _write_layer_cache(built, refs, progress))
    if built is not None:
        progress.log(work_line(built))
    if settings.sbom:
        outcome.sbom = push_sboms(images, built, cache, refs, options, progress, several=isinstance(target, ImageIndex))
    if key is not None or keyless is not None:
        outcome.signed = sign_pushed(target, refs, key, keyless, settings.signing.provenance, built, cache, options,
                                     outcome.sbom, progress)
    return outcome
