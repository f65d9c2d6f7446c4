"""The registry as a layer cache every runner shares: one small OCI artifact per key in a cache repository.

A fresh CI runner has an empty local cache, so without this it re-tars and recompresses
every layer (minutes for a multi-GB model) only to find the registry already holds the
blob. With a cache repository (``--cache-repo REF``, ``--cache-from``/``--cache-to``), a
layer the local index does not know is only hashed (its diff_id), looked up here, and,
when the entry checks out, used as it is: compression skipped, nothing written, and the
push mounts the blob from the cache repository.

Entries, each its own artifact manifest tagged in the cache repository (so writers on
several runners never overwrite each other's entries, and no read-merge-write is needed;
the same key always gives the same manifest bytes, so two writers of one key agree)::

    oa-layer-<sha256 of {diff_id, compression id, LAYER_FORMAT}>
        layers[0] = the compressed layer blob (so the cache repository holds it, and a
        HEAD there proves it); annotations: diff_id, compression id, layer format,
        uncompressed size
    oa-deps-<the deps layer's key: sha256 of {requirements texts, complete platform, pex
             version, args, requested compression, epoch, LAYER_FORMAT}, which the recipe's
             ``azureml.deps.DepsKey.layer_key`` computes and passes down>
        the same, for the Python deps layer: a runner with an empty pex cache runs no pex
    oa-baseinfo-<hex of the base's config digest>
        layers[0] = the empty blob; annotation ``dev.ociassemble.baseinfo`` = the
        BaseInfo JSON, so a registry base need not be downloaded to learn its Python

``artifactType`` is ``application/vnd.ociassemble.layer-cache.v1`` (``…baseinfo.v1``);
the config is the OCI empty descriptor.

Trust: an entry is checked before use: its annotations must name the very key looked
up, its blob must be in the cache repository (HEAD) with the size (and, where the
registry says it, the digest) the entry gives, and an uncompressed layer's digest must
be its diff_id. What cannot be checked without downloading the blob is that it
decompresses to the diff_id: write access to the cache repository is trusted like write
access to the image repository. An entry failing a check is a warning and the layer is
built as if there were no cache (and rewritten on the next ``--cache-to``). The registry
failing or refusing is a warning too, after which the cache is not asked again in that run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping

from ..errors import ImageReferenceError, OciAssembleError, RegistryError, UsageError
from ..image.assemble import Image
from ..image.cache import BlobCache
from ..image.compress import GZIP_LEVELS, Compression
from ..image.layer import LAYER_FORMAT, BuiltLayer
from ..image.oci import Descriptor, ImageConfig, Manifest, MediaType, canonical_json, parse_json
from .client import RegistryClient, RegistryOptions
from .pull import RegistryBlobFetcher
from .reference import parse_reference
from .retry import RetryPolicy, call_with_retry

__all__ = [
    "ARTIFACT_TYPE",
    "BASEINFO_ARTIFACT_TYPE",
    "CacheStats",
    "RegistryLayerCache",
    "baseinfo_tag",
    "deps_tag",
    "layer_cache_from",
    "layer_tag",
]

log = logging.getLogger("ociassemble.image.cache")

ARTIFACT_TYPE = "application/vnd.ociassemble.layer-cache.v1"
BASEINFO_ARTIFACT_TYPE = "application/vnd.ociassemble.baseinfo.v1"
#: Annotation keys of an entry (reverse-DNS under the project's name, as the OCI spec asks).
A_KIND = "dev.ociassemble.image.cache.kind"
A_DIFF_ID = "dev.ociassemble.diff-id"
A_COMPRESSION = "dev.ociassemble.compression"
A_FORMAT = "dev.ociassemble.layer-format"
A_SIZE = "dev.ociassemble.uncompressed-size"
A_KEY = "dev.ociassemble.image.cache.key"
A_BASEINFO = "dev.ociassemble.baseinfo"
_EMPTY = b"{}"
_EMPTY_DESC = Descriptor(MediaType.EMPTY, "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", 2)
#: Lookups sit on the build's path: one quick retry, then the cache is given up for the run
#: (the registry's normal policy would wait ~40 s per layer on a dead cache).
LOOKUP_RETRY = RetryPolicy(attempts=2, initial=0.5, factor=2.0, max_delay=2.0, max_retry_after=5.0)
#: Entries written at once after a push (each is a few small requests).
WRITE_CONCURRENCY = 4
#: Writes come after the image push: worth a retry, not the registry's full ~40 s per entry.
WRITE_RETRY = RetryPolicy(attempts=3, initial=1.0, factor=3.0, max_delay=5.0, max_retry_after=10.0)


def _hex(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj)).hexdigest()


def layer_tag(diff_id: str, compression_id: str) -> str:
    """The tag of the entry for a layer with ``diff_id`` compressed as ``compression_id``."""
    return "oa-layer-" + _hex({"diff_id": diff_id, "compression": compression_id, "format": LAYER_FORMAT})


def deps_tag(deps_key: str) -> str:
    """The tag of the deps-layer entry for the deps layer's key (a sha256 hex; the recipe's ``DepsKey.layer_key``)."""
    return "oa-deps-" + deps_key


def _compressions_for(media_type: str) -> list[Compression]:
    """Every codec and level that writes layers of ``media_type`` (auto may have chosen any)."""
    if media_type == MediaType.LAYER_TAR:
        return [Compression.parse("none")]
    if media_type == MediaType.LAYER_GZIP:
        return [Compression.parse("gzip", lvl) for lvl in GZIP_LEVELS]
    if media_type == MediaType.LAYER_ZSTD:
        return [Compression.parse("zstd", lvl) for lvl in range(1, 20)]
    return []


def baseinfo_tag(config_digest: str) -> str:
    return "oa-baseinfo-" + config_digest.split(":", 1)[-1]


@dataclass
class CacheStats:
    """What the registry cache did in one run (the CLI prints it; ``--json`` has it)."""

    hits: int = 0
    misses: int = 0
    rejected: int = 0
    written: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"hits": self.hits, "misses": self.misses, "rejected": self.rejected, "written": self.written,
                "warnings": list(self.warnings)}


@dataclass
class _Pending:
    tag: str
    manifest: Manifest
    blob: Descriptor | None  # the layer blob (None for a baseinfo entry)


class RegistryLayerCache:
    """The layer index in registry repository ``ref`` (``registry/repository``, no tag).

    ``read``: builds look layers, deps and base info up here (``find_layer``,
    ``find_deps``, ``find_baseinfo``). ``write``: what a build made is remembered
    (``note_*``, and ``write`` after the image push) and pushed as entries.

    Example::

        lc = RegistryLayerCache("registry.example.com/team/cache", cache, options)
        layer = build_layer(cache, sources, remote=lc)       # a hit skips compression
        push_image(image, cache, refs, options=options)
        lc.write([layer], mount_from="registry.example.com/team/app")

    Raises UsageError for a reference that is not a plain repository. Registry failures
    are warnings (``stats.warnings``), never errors: the cache only saves work.
    """

    def __init__(self, ref: str, cache: BlobCache, options: RegistryOptions | None = None, *,
                 read: bool = True, write: bool = True,
                 warn: Callable[[str], None] | None = None) -> None:
        text = ref.strip().removeprefix("docker://")
        if "@" in text or ":" in text.rsplit("/", 1)[-1]:
            raise UsageError(f"cache repository {ref!r}: give a repository, without :tag or @digest "
                             "(e.g. registry.example.com/team/cache); the entries are tagged inside it")
        try:
            r = parse_reference(text)
        except ImageReferenceError as exc:
            raise UsageError(f"cache repository {ref!r}: {exc}") from None
        self.registry, self.repository = r.registry, r.repository
        self.name = f"{r.registry}/{r.repository}"
        self.cache = cache
        self.options = options or RegistryOptions()
        self.read, self.write_enabled = read, write
        self.stats = CacheStats()
        self._warn = warn
        self._client: RegistryClient | None = None
        self._lock = threading.Lock()
        self._broken = False
        self._pending: dict[str, _Pending] = {}
        self._present: set[str] = set()  # tags read and found good: nothing to write

    def __repr__(self) -> str:
        return f"RegistryLayerCache({self.name!r}, read={self.read}, write={self.write_enabled})"

    @property
    def reading(self) -> bool:
        """Lookups are on (``read``) and the registry has not failed them in this run."""
        return self.read and not self._broken

    # -- plumbing -------------------------------------------------------------------------
    @property
    def client(self) -> RegistryClient:
        with self._lock:
            if self._client is None:
                self._client = RegistryClient(self.registry, self.options)
            return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def warning(self, message: str) -> None:
        self.stats.warnings.append(message)
        if self._warn is not None:
            self._warn(message)
        else:
            log.warning("warning: %s", message)

    def _give_up(self, exc: BaseException) -> None:
        self._broken = True
        self.warning(f"registry cache {self.name} cannot be read ({exc}); building without it")

    def _get_entry(self, tag: str, artifact_type: str) -> Manifest | None:
        """The entry under ``tag``, or None (absent, unreadable: a warning, or the cache gave up)."""
        if not self.read or self._broken:
            return None
        client = self.client
        scopes = client.scopes(self.repository)
        try:
            data, _ctype, header = call_with_retry(LOOKUP_RETRY, f"reading cache entry {tag}",
                                                   lambda _n: client.get_manifest(self.repository, tag, scopes))
        except RegistryError as exc:
            if exc.status == 404 or "MANIFEST_UNKNOWN" in exc.codes or "NAME_UNKNOWN" in exc.codes:
                self.stats.misses += 1
                return None
            self._give_up(exc)
            return None
        except OciAssembleError as exc:
            self._give_up(exc)
            return None
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if header and header != digest:
            return self._reject(tag, f"the registry names its manifest {header} but the bytes are {digest}")
        try:
            doc = parse_json(data)
            manifest = Manifest.from_json(doc)
        except (ValueError, OciAssembleError) as exc:
            return self._reject(tag, f"not an OCI manifest ({exc})")
        if manifest.artifact_type != artifact_type or len(manifest.layers) != 1:
            return self._reject(tag, f"artifactType {manifest.artifact_type!r} with {len(manifest.layers)} "
                                     f"layers is not an ociassemble cache entry")
        return manifest

    def _reject(self, tag: str, why: str) -> None:
        self.stats.rejected += 1
        self.warning(f"registry cache entry {self.name}:{tag} is not usable: {why}; building without it")
        return None

    def _check_blob(self, tag: str, desc: Descriptor) -> bool:
        client = self.client
        try:
            info = call_with_retry(LOOKUP_RETRY, f"checking blob {desc.digest}",
                                   lambda _n: client.blob_info(self.repository, desc.digest,
                                                               client.scopes(self.repository)))
        except OciAssembleError as exc:
            self._give_up(exc)
            return False
        if info is None:
            self._reject(tag, f"its blob {desc.digest} is not in {self.name}")
            return False
        size, digest = info
        if size != desc.size:
            self._reject(tag, f"its blob {desc.digest} is {size} bytes in {self.name}, the entry says {desc.size}")
            return False
        if digest and digest != desc.digest:
            self._reject(tag, f"the registry answers {digest} for blob {desc.digest}")
            return False
        return True

    def _layer_from(self, tag: str, manifest: Manifest, diff_id: str | None, size: int | None,
                    compression: Compression) -> BuiltLayer | None:
        """The entry's layer once every check passed (``diff_id``/``size``: what it must say, if known)."""
        a = manifest.annotations or {}
        desc = manifest.layers[0]
        want_id = compression.id
        if a.get(A_FORMAT) != LAYER_FORMAT:
            return self._reject(tag, f"layer format {a.get(A_FORMAT)!r}, not {LAYER_FORMAT!r}")
        if a.get(A_COMPRESSION) != want_id:
            return self._reject(tag, f"compression {a.get(A_COMPRESSION)!r}, not {want_id!r}")
        if diff_id is not None and a.get(A_DIFF_ID) != diff_id:
            return self._reject(tag, f"its diff_id {a.get(A_DIFF_ID)} is not the layer's {diff_id}")
        entry_diff = a.get(A_DIFF_ID) or ""
        try:
            raw_size = int(a.get(A_SIZE, "-1"))
        except ValueError:
            raw_size = -1
        if not entry_diff.startswith("sha256:") or len(entry_diff) != 71 or raw_size < 0:
            return self._reject(tag, "it lacks a diff_id or an uncompressed size")
        if size is not None and raw_size != size:
            return self._reject(tag, f"uncompressed size {raw_size}, the layer is {size} bytes")
        if desc.media_type != compression.media_type:
            return self._reject(tag, f"blob media type {desc.media_type}, not {compression.media_type}")
        if compression.codec == "none" and (desc.digest != entry_diff or desc.size != raw_size):
            return self._reject(tag, f"an uncompressed layer's blob must be its diff_id, not {desc.digest}")
        if not self._check_blob(tag, desc):
            return None
        self.stats.hits += 1
        with self._lock:
            self._present.add(tag)
        plain = Descriptor(desc.media_type, desc.digest, desc.size)
        return BuiltLayer(plain, entry_diff, False, want_id, raw_size, origin=self.name,
                          fetch=RegistryBlobFetcher(self.client, self.repository))

    # -- lookups (build) ----------------------------------------------------------------------
    def find_layer(self, diff_id: str, size: int, compression: Compression) -> BuiltLayer | None:
        """``layer.RemoteLayerIndex``: the verified entry for this diff_id and compression, or None."""
        tag = layer_tag(diff_id, compression.id)
        manifest = self._get_entry(tag, ARTIFACT_TYPE)
        if manifest is None:
            return None
        if (manifest.annotations or {}).get(A_KIND) != "layer":
            return self._reject(tag, "it is not a layer entry")
        return self._layer_from(tag, manifest, diff_id, size, compression)

    def find_deps(self, deps_key: str, compression: Compression) -> BuiltLayer | None:
        """The Python deps layer recorded under the deps layer's key, verified, or None.

        ``compression`` is the one the key was made for, as requested: with ``auto`` the entry's
        own codec is used, if this machine makes the very same bytes with it (the same
        libdeflate or zstd version).
        """
        tag = deps_tag(deps_key)
        manifest = self._get_entry(tag, ARTIFACT_TYPE)
        if manifest is None:
            return None
        a = manifest.annotations or {}
        if a.get(A_KIND) != "deps":
            return self._reject(tag, "it is not a deps entry")
        resolved = compression
        if compression.codec == "auto":
            media = manifest.layers[0].media_type
            ident = a.get(A_COMPRESSION, "")
            made_here = [c for c in _compressions_for(media) if c.id == ident]
            if not made_here:
                return self._reject(tag, f"compression {ident!r} ({media}) is not one this machine makes")
            resolved = made_here[0]
        return self._layer_from(tag, manifest, None, None, resolved)

    def find_baseinfo(self, config_digest: str) -> dict[str, Any] | None:
        """The base-info document recorded for the base with this config, or None."""
        tag = baseinfo_tag(config_digest)
        manifest = self._get_entry(tag, BASEINFO_ARTIFACT_TYPE)
        if manifest is None:
            return None
        a = manifest.annotations or {}
        try:
            doc = parse_json(a.get(A_BASEINFO, ""))
            if not isinstance(doc, dict) or a.get(A_KEY) != config_digest:
                raise ValueError("not for this base")
        except ValueError as exc:
            return self._reject(tag, f"its base info is unusable ({exc})")
        self.stats.hits += 1
        with self._lock:
            self._present.add(tag)
        return doc

    # -- recording (push) -----------------------------------------------------------------------
    def _entry(self, tag: str, kind: str, layer: BuiltLayer, key: str) -> _Pending:
        annotations = {A_KIND: kind, A_DIFF_ID: layer.diff_id, A_COMPRESSION: layer.compression,
                       A_FORMAT: LAYER_FORMAT, A_SIZE: str(layer.uncompressed_size), A_KEY: key}
        desc = Descriptor(layer.descriptor.media_type, layer.descriptor.digest, layer.descriptor.size)
        return _Pending(tag, Manifest(config=_EMPTY_DESC, layers=(desc,), artifact_type=ARTIFACT_TYPE,
                                      annotations=annotations), desc)

    def note_layer(self, layer: BuiltLayer) -> None:
        """Remember ``layer`` for ``write`` (a layer taken from this cache needs no entry)."""
        if not self.write_enabled or layer.origin is not None or not layer.compression or not layer.uncompressed_size:
            return
        tag = layer_tag(layer.diff_id, layer.compression)
        self._pending.setdefault(tag, self._entry(tag, "layer", layer, layer.diff_id))

    def note_deps(self, deps_key: str, layer: BuiltLayer) -> None:
        """Remember the deps layer made for the deps layer's key (and the layer itself)."""
        self.note_layer(layer)
        if not self.write_enabled or layer.origin is not None or not layer.compression:
            return
        tag = deps_tag(deps_key)
        self._pending.setdefault(tag, self._entry(tag, "deps", layer, tag.removeprefix("oa-deps-")))

    def note_baseinfo(self, config_digest: str, info: Mapping[str, Any]) -> None:
        if not self.write_enabled:
            return
        tag = baseinfo_tag(config_digest)
        manifest = Manifest(config=_EMPTY_DESC, layers=(_EMPTY_DESC,), artifact_type=BASEINFO_ARTIFACT_TYPE,
                            annotations={A_KIND: "baseinfo", A_KEY: config_digest,
                                         A_BASEINFO: json.dumps(dict(info), sort_keys=True)})
        self._pending.setdefault(tag, _Pending(tag, manifest, None))

    def write(self, layers: Iterable[BuiltLayer] = (), *, mount_from: str | None = None) -> int:
        """Push every noted entry (and one per layer in ``layers``) not already in the cache.

        Call it after the image push succeeded: ``mount_from`` (``registry/repository``
        of the pushed image) lets the cache repository mount the layer blobs instead of
        receiving them again. Returns how many entries were written; a failing entry is
        a warning (the image is pushed already; the next run writes it again).
        """
        from .push import push_image

        if not self.write_enabled:
            return 0
        for layer in layers:
            self.note_layer(layer)
        todo = [p for t, p in sorted(self._pending.items()) if t not in self._present]
        options = replace(self.options, retry=WRITE_RETRY)
        failed = threading.Event()  # after one failure the rest are not tried: the next run writes them

        def push_one(p: _Pending) -> bool:
            if failed.is_set():
                return False
            origins = {p.blob.digest: mount_from} if p.blob is not None and mount_from else {}
            artifact = Image(p.manifest, p.manifest.to_bytes(), ImageConfig(), _EMPTY, origins=origins)
            try:
                push_image(artifact, self.cache, [f"{self.name}:{p.tag}"], options=options)
            except OciAssembleError as exc:
                if not failed.is_set():
                    failed.set()
                    self.warning(f"could not write registry cache entry {self.name}:{p.tag} ({exc}); "
                                 "the cache entries of this build are not written")
                return False
            return True

        with ThreadPoolExecutor(max_workers=WRITE_CONCURRENCY, thread_name_prefix="cache-write") as pool:
            done = sum(pool.map(push_one, todo))
        self.stats.written += done
        self._pending.clear()
        return done


def layer_cache_from(cache: BlobCache, *, repo: str | None = None, read_from: str | None = None,
                     write_to: str | None = None, pushing: bool = False, off: bool = False,
                     options: RegistryOptions | Callable[[], RegistryOptions] | None = None) -> RegistryLayerCache | None:
    """The layer cache these settings ask for, or None (the default: off).

    ``repo`` (``Settings.layer_cache``: ``--cache-repo``, else ``$OCIASSEMBLE_CACHE_REPO``, read by
    ``settingsload``) is read and, when
    ``pushing``, written; ``read_from`` is only read; ``write_to`` only written (pushing only:
    a build pushes nothing); ``off`` turns all of it off. ``options`` may be a function, called
    only when a cache is on (the CLI's ``--password-stdin`` reads stdin only then).
    """
    if off:
        return None
    repo, read_from, write_to = repo or None, read_from or None, write_to or None
    if not (repo or read_from or write_to):
        return None
    if write_to and not pushing:
        raise UsageError("--cache-to writes the registry cache after a push: use it with 'ociassemble push' "
                         "(a build reads it with --cache-from or --cache-repo)")
    names = {n for n in (repo, read_from, write_to) if n}
    if len(names) > 1:
        raise UsageError(f"--cache-repo, --cache-from and --cache-to name different repositories ({', '.join(sorted(names))}): "
                         "one cache repository per run")
    opts = options() if callable(options) else options
    return RegistryLayerCache(names.pop(), cache, opts, read=bool(repo or read_from),
                              write=pushing and bool(repo or write_to))
