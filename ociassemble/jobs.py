"""The library's jobs: each does what one command does, whole, from one ``settings.Settings``.

``build``, ``push`` (``pushjob``), ``pull``, ``verify`` (and ``verify_signature``), ``run``,
``inspect``, ``lock``, ``make_base``, ``login`` and ``keygen`` each return a result with ``to_json()``
(the command's ``--json``); they tell their progress
to an ``events.Progress`` and never print. The command line parses its flags into one
``Settings``, calls one of these and prints the result (docs/library.md)::

    settings = Settings.load(Path("my-model"), models=["my-model/model.bin"], output="oci:./image")
    result = jobs.build(settings)
    print(result.digest)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .build import build_for, write_sboms
from .built import BuiltSet, layers_json, platform_json, work_json, work_line
from .errors import InputError, UsageError
from .events import QUIET, Progress
from .image.assemble import Image
from .image.imageindex import ImageIndex, Target
from .image.oci import Platform
from .pushjob import PushOutcome, push
from .settings import Settings

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from .azureml.locking import LockResult
    from .image.cache import BlobCache
    from .image.verify import VerifyReport
    from .registry.cosign import Verification
    from .run.container import RunningImage

__all__ = ["DEFAULT_OUTPUT", "BuildResult", "Inspection", "KeyPairFiles", "LoggedIn", "MadeBases", "PullResult",
           "PushOutcome", "RunResult", "build", "inspect", "keygen", "lock", "login", "make_base", "pick_image", "pull",
           "push", "run", "verify", "verify_signature"]


# -- build ------------------------------------------------------------------------------------------------------

#: where a build writes when neither the flags nor the config say
DEFAULT_OUTPUT = "oci-archive:image.tar"


@dataclass
class BuildResult:
    """What ``build`` made and wrote: the images, where, and the SBOM files."""

    built: BuiltSet
    output: str
    sboms: list[str] = field(default_factory=list)

    @property
    def digest(self) -> str:
        return self.built.target.digest

    def to_json(self) -> dict[str, Any]:
        first = self.built.builds[0]
        data: dict[str, Any] = {"digest": self.digest, "output": self.output, "layers": layers_json(first.layers),
                                "config": first.image.manifest.config.digest, **work_json(self.built),
                                "platforms": [platform_json(b) for b in self.built.builds]}
        if self.built.index is not None:
            data["mediaType"] = self.built.index.descriptor.media_type
        if self.sboms:
            data["sbom"] = self.sboms[0] if self.built.index is None else self.sboms
        return data


def build(settings: Settings, progress: Progress = QUIET) -> BuildResult:
    """Build the image (for each of the settings' platforms) and write it whole to ``settings.output``
    (default ``oci-archive:image.tar``); with ``settings.sbom``, each image's SPDX SBOM beside it.

    A bad output, or several platforms for a docker-archive, fails before any work. Raises the
    ``errors`` of the build and of writing; nothing is half-written.
    """
    from .imageio import check_output, write_image
    from .registry.options import options_for
    from .transport.spec import is_registry

    spec = settings.output or DEFAULT_OUTPUT
    check_output(spec, len(settings.platforms) > 1)
    cache = settings.blob_cache()
    options = options_for(settings.registry, settings.base if is_registry(settings.base)
                          else settings.layer_cache.repo or settings.layer_cache.read_from, secrets=settings.secrets)
    built = build_for(settings, cache, options, progress)
    write_image(built.target, cache, spec)
    progress.log(work_line(built))
    progress.log(f"wrote {spec}")
    result = BuildResult(built, spec)
    if settings.sbom:
        result.sboms = write_sboms(built, spec, progress, settings.epoch)
    return result


# -- pull -------------------------------------------------------------------------------------------------------


@dataclass
class PullResult:
    """What was pulled (an image, or an index of them all) and where it was written."""

    target: Target
    output: str

    @property
    def digest(self) -> str:
        return self.target.digest

    def to_json(self) -> dict[str, Any]:
        from .image.platform import normalize

        data: dict[str, Any] = {"digest": self.digest, "output": self.output}
        if isinstance(self.target, ImageIndex):
            data["manifests"] = [{"platform": str(normalize(i.platform)), "digest": i.digest} for i in self.target.images]
        else:
            data["platform"] = str(normalize(self.target.platform))
        return data


def pull(settings: Settings, ref: str, dest: str, *, platform: Platform | str | None = None) -> PullResult:
    """Pull ``ref`` (its image for ``platform``, or ``ALL``) and write it whole to ``dest``.

    A bad destination, or a docker-archive of all platforms, fails before any download.
    """
    from .image.imageindex import for_platform
    from .image.platform import ALL
    from .imageio import check_output, write_image
    from .registry.options import options_for
    from .registry.pull import pull_image

    check_output(dest, platform == ALL)
    cache = settings.blob_cache()
    target = pull_image(ref, cache, options=options_for(settings.registry, ref, secrets=settings.secrets), platform=platform)
    if platform is not None and platform != ALL:  # an image of one platform must be that platform's
        target = for_platform(target, platform, ref)  # type: ignore[arg-type]
    write_image(target, cache, dest)  # fetches the layers into the cache, verified
    return PullResult(target, dest)


# -- verify -----------------------------------------------------------------------------------------------------


def verify(settings: Settings, against: str, progress: Progress = QUIET) -> VerifyReport:
    """Rebuild the image the settings describe and compare each platform's with ``against``'s image
    for that platform: the ``image.verify.VerifyReport`` of the first that differs, else of the last
    (``report.equal``). Raises UsageError for an ``against`` that is not an image."""
    from .image.assemble import Image
    from .image.verify import compare_images
    from .imageio import load_image
    from .registry.options import options_for
    from .transport.spec import parse_spec

    if settings.sbom:
        raise UsageError("verify writes nothing: drop --sbom (build and push make SBOMs)")
    spec = parse_spec(against)  # a bad --against fails before any work
    if spec.kind == "rootfs":
        raise UsageError(f"--against {against}: a rootfs is not an image; give a registry reference, "
                         "oci:DIR, oci-archive:FILE or docker-archive:FILE")
    cache = settings.blob_cache()
    # explicit credentials are for the image compared with (a registry base or cache gets the docker config's)
    options = options_for(settings.registry, against, secrets=settings.secrets)
    built = build_for(settings, cache, options, progress)
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
                     progress: Progress = QUIET) -> Verification:
    """Check the signature cosign (or ``push``) stored for the registry image ``image`` with the
    public key file ``key`` (and its signed SLSA provenance): the ``registry.cosign`` report.
    Raises UsageError for an image not in a registry, InputError for a key that cannot be read,
    and the signature errors when it does not verify."""
    from .registry.cosign import verify_image
    from .registry.options import options_for
    from .sign.keys import load_public_key
    from .transport.spec import parse_spec

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
    return verify_image(name, public, provenance=provenance, options=options_for(settings.registry, image, secrets=settings.secrets))


# -- run --------------------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    """How a run ended: the image's digest and its command's exit status."""

    digest: str
    status: int

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "status": self.status}


def pick_image(target: Target, want: Platform | None, where: str) -> Image:
    """The image to run: an index was resolved by ``load_image``; a single image must be for ``want``."""
    from .image.platform import matches, normalize

    assert isinstance(target, Image), "load_image resolves an index to one platform"
    if want is not None and not matches(target.platform, want):
        have = normalize(target.platform)
        raise InputError(f"{where} has no image for {want}; it has {have} (run it with --platform {have}, "
                         "or without --platform)")
    return target


def run(settings: Settings, image: str, *, platform: Platform | None = None,
        publish: Mapping[int, int] | None = None, env: Mapping[str, str] | None = None,
        on_ready: Callable[[RunningImage, Image], None] | None = None, progress: Progress = QUIET) -> RunResult:
    """Run ``image`` (any transport, or a registry reference; its image for ``platform``, default this
    machine's) in the foreground until its command ends, Ctrl-C or SIGTERM; ``publish`` is
    {host port: container port} on 127.0.0.1. ``on_ready`` is told once every published port answers."""
    from .imageio import load_image
    from .registry.options import options_for
    from .run.container import run_image
    from .transport.spec import is_registry

    cache = settings.blob_cache()
    opts = options_for(settings.registry, image, secrets=settings.secrets) if is_registry(image) else None
    picked = pick_image(load_image(image, cache, registry_options=opts, platform=platform), platform, image)
    status = run_image(picked, cache, publish=publish, env=env,
                       on_ready=(lambda running: on_ready(running, picked)) if on_ready else None, log=progress.log)
    return RunResult(picked.digest, status)


# -- inspect ----------------------------------------------------------------------------------------------------


@dataclass
class Inspection:
    """What ``inspect`` read, as ``image.describe`` tells it: an image (or one of its layers), a
    multi-platform index, or an OCI artifact that is not an image."""

    doc: dict[str, Any]  # the command's --json document
    text: str  # what the command prints without --json
    image: Image | None = None  # the image shown, whose layers ``entries`` lists
    cache: BlobCache | None = None

    def to_json(self) -> dict[str, Any]:
        return self.doc

    def entries(self, layer: int) -> Iterator[tuple[dict[str, Any], str]]:
        """Each file of layer ``layer`` as it is read from the blob (a big layer streams): its
        document and its line."""
        from .image.describe import layer_entries, render_entry

        assert self.image is not None and self.cache is not None, "entries of an image"
        for entry in layer_entries(self.image, self.cache, layer):
            yield entry, render_entry(entry)


def inspect(settings: Settings, image: str, *, platform: Platform | None = None,
            layer: int | None = None) -> Inspection:
    """``image`` (any transport) described: its digest, platform, config and layers; a
    multi-platform one listed by platform unless ``platform`` picks one; with ``layer``, that
    layer alone. Raises UsageError for a ``layer`` the image does not have (or that an index or
    an artifact cannot have)."""
    from .errors import NotAnImageError
    from .image.describe import (INSPECT_SCHEMA_VERSION, describe_artifact, describe_image, describe_index,
                                 render_artifact, render_image, render_index)
    from .image.imageindex import for_platform
    from .image.platform import ALL
    from .imageio import load_image
    from .registry.options import options_for
    from .transport.spec import is_registry

    cache = settings.blob_cache()
    opts = options_for(settings.registry, image, secrets=settings.secrets) if is_registry(image) else None
    try:
        target = load_image(image, cache, registry_options=opts, platform=platform or ALL)
    except NotAnImageError as exc:
        if layer is not None:
            raise UsageError(f"{image} is an OCI artifact, not an image: it has blobs, not layers; drop --layer") from None
        art = describe_artifact(exc.manifest, exc.manifest_bytes, name=image)
        return Inspection(art, render_artifact(art))
    if isinstance(target, ImageIndex) and platform is None and len(target.images) == 1:
        target = target.images[0]  # an index of one image is shown as that image
    if isinstance(target, ImageIndex) and platform is None:
        if layer is not None:
            raise UsageError(f"{image} is a multi-platform image ({', '.join(map(str, target.platforms))}): pick the "
                             f"image whose layer to show with --platform, e.g. --platform {target.platforms[0]}")
        idx = describe_index(target, name=image)
        return Inspection(idx, render_index(idx))
    picked = for_platform(target, platform, image)
    doc = describe_image(picked, name=image)
    if layer is None:
        return Inspection(doc, render_image(doc), picked, cache)
    if not 0 <= layer < len(doc["layers"]):
        raise UsageError(f"--layer {layer}: the image has {len(doc['layers'])} layers, numbered 0 to "
                         f"{len(doc['layers']) - 1}")
    shown = doc["layers"][layer]
    return Inspection({"schemaVersion": INSPECT_SCHEMA_VERSION, "digest": doc["digest"], "layer": shown},
                      "\n".join(f"{k}: {v}" for k, v in shown.items()), picked, cache)


# -- lock -------------------------------------------------------------------------------------------------------


def lock(settings: Settings, *, upgrade: Sequence[str] | None = None, progress: Progress = QUIET) -> LockResult:
    """Write ``ociassemble.lock`` beside the project's config: each platform's base by digest, its
    Python distributions and Debian packages. ``upgrade``: None keeps what the lock pins where the
    inputs still admit it; ``[]`` re-resolves everything; names re-resolve those alone."""
    from .azureml.locking import lock_project
    from .azureml.project import project_of
    from .registry.options import options_for
    from .transport.spec import is_registry

    project = project_of(settings)
    opts = options_for(settings.registry, project.base, secrets=settings.secrets) if is_registry(project.base) else None
    return lock_project(project, settings.blob_cache(), upgrade=upgrade, registry_options=opts, log=progress.log,
                        debug=settings.debug)


# -- make-base --------------------------------------------------------------------------------------------------


@dataclass
class MadeBases:
    """The default bases made (or found made): each platform's OCI layout in the cache ("": this machine's)."""

    bases: dict[str, Path]

    def to_json(self) -> dict[str, Any]:
        if len(self.bases) == 1:
            return {"base": f"oci:{next(iter(self.bases.values()))}"}
        return {"bases": {p: f"oci:{path}" for p, path in self.bases.items()}}

    def text(self) -> str:
        if len(self.bases) == 1:
            return f"oci:{next(iter(self.bases.values()))}"
        return "\n".join(f"{p} oci:{path}" for p, path in self.bases.items())


def make_base(settings: Settings, platforms: Sequence[Platform | None] = (None,), *, python: str | None = None,
              force: bool = False, with_mmdebstrap: bool = False, apt_mirror: str | None = None,
              apt_keyring: Path | None = None, progress: Progress = QUIET) -> MadeBases:
    """The default Debian base (python3, nginx, runit) for each of ``platforms`` (None: this machine)
    and ``python`` (3.11: bookworm; 3.9 bullseye, 3.13 trixie), made once into the settings' cache from
    Debian's .debs (or by mmdebstrap), dated ``settings.epoch``. Raises UsageError for a mirror or keyring
    given with mmdebstrap (it reads this machine's apt sources)."""
    from .azureml.debianbase import make_base as make_one

    if (apt_mirror or apt_keyring) and with_mmdebstrap:
        raise UsageError("--apt-mirror and --apt-keyring are for a base made from .debs (mmdebstrap reads this "
                         "machine's apt sources); drop --with-mmdebstrap")
    cache = settings.blob_cache()
    return MadeBases({str(p) if p else "": make_one(cache, force=force, log=progress.log, platform=p, python=python,
                                                    with_mmdebstrap=with_mmdebstrap, apt_mirror=apt_mirror,
                                                    keyring=apt_keyring, epoch=settings.epoch)
                      for p in platforms})


# -- login ------------------------------------------------------------------------------------------------------


@dataclass
class LoggedIn:
    """Credentials checked against a registry and stored."""

    registry: str
    username: str
    config: Path  # the file written

    def to_json(self) -> dict[str, Any]:
        return {"registry": self.registry, "username": self.username}


def login(settings: Settings, registry: str) -> LoggedIn:
    """Check the settings' username and password against ``registry`` (a host[:port] or any
    reference on it) and store them in the docker config. Raises UsageError when either is missing."""
    from .registry.login import login as store
    from .registry.options import options_for
    from .registry.reference import parse_reference

    host = parse_reference(registry).registry if "/" in registry or "@" in registry else registry
    opts = options_for(settings.registry, secrets=settings.secrets).scoped_to([host])
    if not opts.username or opts.password is None:
        raise UsageError("login needs --username and --password-stdin (e.g. echo \"$TOKEN\" | ociassemble login REG "
                         "-u USER --password-stdin)")
    return LoggedIn(registry, opts.username, store(registry, opts.username, opts.password, options=opts))


# -- keygen -----------------------------------------------------------------------------------------------------


@dataclass
class KeyPairFiles:
    """A signing key pair written as cosign reads it."""

    private: Path
    public: Path
    keyid: str  # sha256 hex of the public key

    def to_json(self) -> dict[str, Any]:
        return {"privateKey": str(self.private), "publicKey": str(self.public), "key": {"sha256": self.keyid},
                "algorithm": "ecdsa-p256-sha256"}

    def text(self) -> str:
        return f"wrote {self.private} and {self.public} (ECDSA P-256, key sha256:{self.keyid[:16]}…)"


def keygen(prefix: Path, password: Callable[[], bytes], *, force: bool = False) -> KeyPairFiles:
    """``prefix.key`` (ECDSA P-256, sealed as ``cosign generate-key-pair`` seals it, readable by its
    owner only) and ``prefix.pub``, each written whole or not at all. ``password`` is asked only once
    the files may be written. Raises InputError for a missing folder, or files there already
    (unless ``force``)."""
    from .atomicfile import write_atomic
    from .sign.keys import generate_key_pair, load_public_key

    private, public = prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pub")
    if not private.parent.is_dir():
        raise InputError(f"folder {private.parent} does not exist: create it or give another --output-key-prefix")
    existing = [str(p) for p in (private, public) if p.exists()]
    if existing and not force:
        raise InputError(f"{' and '.join(existing)} already exist{'s' if len(existing) == 1 else ''}: keep "
                         f"{'it' if len(existing) == 1 else 'them'}, or pass --force to replace (signatures by the "
                         "old key then no longer verify with the new .pub)")
    pair = generate_key_pair(password())
    write_atomic(private, pair.private_pem, mode=0o600, sync=True)
    write_atomic(public, pair.public_pem, mode=0o644, sync=True)
    return KeyPairFiles(private, public, load_public_key(pair.public_pem, str(public)).keyid)
