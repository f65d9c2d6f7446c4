"""The ``verify`` jobs: rebuild from the settings (writing nothing) and compare with an image; or check a
pushed image's signature (and provenance) with a public key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError, UsageError
from ..events import QUIET, Progress
from ..settings import Settings
from .building import build_set

__all__ = ["verify", "verify_signature"]


def verify(settings: Settings, against: str, progress: Progress = QUIET) -> Any:
    """Rebuild the image the settings describe and compare each platform's with ``against``'s image
    for that platform: the ``image.verify.VerifyReport`` of the first that differs, else of the last
    (``report.equal``). Raises UsageError for an ``against`` that is not an image."""
    from ..image.assemble import Image
    from ..image.verify import compare_images
    from ..imageio import load_image
    from ..transport.spec import parse_spec

    if settings.sbom:
        raise UsageError("verify writes nothing: drop --sbom (build and push make SBOMs)")
    spec = parse_spec(against)  # a bad --against fails before any work
    if spec.kind == "rootfs":
        raise UsageError(f"--against {against}: a rootfs is not an image; give a registry reference, "
                         "oci:DIR, oci-archive:FILE or docker-archive:FILE")
    cache = settings.blob_cache()
    # explicit credentials are for the image compared with (a registry base or cache gets the docker config's)
    options = settings.registry_options(against)
    built = build_set(settings, cache, options, progress)
    opts = options if spec.kind == "docker" else None
    progress.log(f"comparing with {against}")
    report = None
    for b in built.builds:  # each platform's image against the one for its platform there
        given = load_image(spec, built.cache, registry_options=opts, platform=b.image.platform)
        assert isinstance(given, Image)
        report = compare_images(b.image, given, built.cache, name=against,
                                compressed_comparable=spec.kind != "docker-archive")
        if not report.equal:
            break
    assert report is not None
    if report.equal:
        progress.log(f"{against} is the image these inputs build"
                     + (" (compared by config: a docker-archive keeps no compressed layers)"
                        if report.compared_by == "config" else ""))
    return report


def verify_signature(settings: Settings, image: str, key: Path, *, provenance: bool = False,
                     progress: Progress = QUIET) -> Any:
    """Check the signature cosign (or ``push``) stored for the registry image ``image`` with the
    public key file ``key`` (and its signed SLSA provenance): the ``registry.cosign`` report.
    Raises UsageError for an image not in a registry, InputError for a key that cannot be read,
    and the signature errors when it does not verify."""
    from ..registry.cosign import verify_image
    from ..sign.keys import load_public_key
    from ..transport.spec import parse_spec

    if parse_spec(image).kind != "docker":
        raise UsageError(f"{image}: signatures live in a registry; give a registry reference, e.g. "
                         "registry.example.com/team/model:1.0")
    try:
        data = Path(key).read_bytes()
    except OSError as exc:
        raise InputError(f"public key {key} cannot be read: {exc.strerror}; give cosign.pub") from None
    public = load_public_key(data, f"public key {key}")
    name = image.removeprefix("docker://")
    progress.log(f"checking the signature{' and provenance' if provenance else ''} of {name}")
    return verify_image(name, public, provenance=provenance, options=settings.registry_options(image))
