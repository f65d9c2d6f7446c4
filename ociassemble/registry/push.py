"""Pushing an image from the blob cache to a registry, in the order that never leaves a broken tag.

The ordering contract, enforced here and only here:

1. every blob (layers and config) of the image is made present in the target
   repository (``blobpush``: HEAD, else a mount from the repository it is known to live
   in, else an upload streamed from the cache or from the files a blob is held in,
   checked as it is read; the registry checks each digest). Blobs a push that builds
   already made present (``committed``: the new layers it uploaded while hashing them,
   ``speculative``, and the base's it sent meanwhile) are not asked about again. A
   blob's source repository is ``Image.origin_of`` (a pulled base's repository, or the
   registry layer cache a layer was taken from).
2. only when every blob is there (and every check reading the image left for the push
   has passed: a compressed layer's diff_id, read by ``push --from`` into a fresh cache,
   checked beside the other uploads and before its own), the manifest by each tag, then
   by digest. A
   manifest PUT answered ``MANIFEST_BLOB_UNKNOWN`` (seen from distribution when another
   pusher writes one of the same blobs into the repository at the same moment) goes
   back to step 1 for that repository and tries again, a few times.

A multi-platform image (``ImageIndex``) follows the same contract one level up: step 1
covers every blob of every platform's image, each once (the layers the platforms share —
runit configs, app, models, source — are one digest, so one upload, never two racing
each other), then each platform's manifest by digest only, and only then the index by
each tag and by digest (``application/vnd.oci.image.index.v1+json``).

So a failed push leaves at most some unreferenced blobs (or untagged manifests): a tag
is never created or moved to a manifest or index whose blobs or manifests are missing.
Re-running it is safe and skips what already made it.

Each blob is retried as a whole (``options.retry``); each manifest PUT too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from ..errors import ImageReferenceError, RegistryError
from ..image.assemble import Image
from ..image.cache import BlobCache
from ..image.digest import Digest
from ..image.imageindex import ImageIndex, Target
from ..image.oci import Descriptor, MediaType, parse_json
from ..image.platform import normalize
from .blobpush import Stopped, Tally, push_blobs
from .client import RegistryClient, RegistryOptions
from .pushresult import PushResult
from .reference import Reference, parse_reference
from .retry import call_with_retry

__all__ = ["PushResult", "push_image", "push_layers"]

#: Times a manifest PUT answered MANIFEST_BLOB_UNKNOWN is met by checking the blobs again.
BLOB_UNKNOWN_ROUNDS = 3

log = logging.getLogger("ociassemble.registry")


def _declared_media_type(data: bytes, default: str) -> str:
    """The ``mediaType`` the document's own bytes declare (what the registry will check), else ``default``."""
    try:
        declared = parse_json(data).get("mediaType")
    except (ValueError, AttributeError):
        declared = None
    return declared if isinstance(declared, str) and declared else default


def _top(target: Target) -> tuple[bytes, str]:
    """The bytes and media type pushed by tag: the manifest, or the index."""
    if isinstance(target, ImageIndex):
        return target.index_bytes, _declared_media_type(target.index_bytes, MediaType.INDEX)
    return target.manifest_bytes, _declared_media_type(target.manifest_bytes, target.manifest.media_type)


def _images(target: Target) -> tuple[Image, ...]:
    return target.images if isinstance(target, ImageIndex) else (target,)


def _claims(target: Target) -> set[tuple[str, str]]:
    """Each (layer digest, diff_id) pair the target's configs claim."""
    return {(d.digest, diff_id) for image in _images(target)
            for d, diff_id in zip(image.manifest.layers, image.config.diff_ids)}


def _owners(target: Target) -> dict[str, Image]:
    """Each blob of ``target`` and the first image that has it (its config bytes or its ``fetch``)."""
    owners: dict[str, Image] = {}
    for image in _images(target):
        for d in image.blobs():
            owners.setdefault(d.digest, image)
    return owners


def _origins(target: Target) -> dict[str, Reference]:
    """Each blob known to live in a registry repository (``Image.origin_of``), parsed."""
    parsed: dict[str, Reference | None] = {}
    out: dict[str, Reference] = {}
    for d in _owners(target):
        name = next((o for o in (i.origin_of(d) for i in _images(target)) if o), None)
        if not name:
            continue
        if name not in parsed:
            try:
                parsed[name] = parse_reference(name)
            except ImageReferenceError:
                parsed[name] = None
        ref = parsed[name]
        if ref is not None:
            out[d] = ref
    return out


def push_image(target: Target, cache: BlobCache, refs: Sequence[str], *,
               options: RegistryOptions | None = None,
               on_bytes: Callable[[Descriptor, int], None] | None = None,
               committed: tuple[str, str, Mapping[str, str]] | None = None,
               clients: Mapping[str, RegistryClient] | None = None) -> PushResult:
    """Push ``target`` (an image, or a multi-platform ``ImageIndex``) to every reference in
    ``refs`` (tags of one or more repositories).

    Blobs come from ``cache`` (fetched first through an image's ``fetch`` when missing);
    see the module docstring for the order. A reference with ``@sha256:…`` must name
    this image's (or index's) digest. ``on_bytes(desc, n)`` is told of each chunk of blob
    ``desc`` handed to the socket (progress display; called from the upload threads).
    ``committed`` is (registry, repository, {digest: outcome}) of blobs a build already
    made present there (``speculative.SpeculativeUploader.outcomes``): not asked about
    again; "speculative" ones are reported as uploaded (and speculative). ``clients``: open clients
    by registry to use (the uploader's: one session per registry); left open, unlike its own.

    Example::

        result = push_image(image, cache, ["registry.example.com/team/app:1.0",
                                           "registry.example.com/team/app:latest"])
        print(result.digest, result.bytes_uploaded)
        result = push_image(built.index, cache, ["registry.example.com/team/app:1.0"])
        print(result.digest, result.manifests)   # the index; each platform's manifest

    Raises ImageReferenceError for a bad reference, AuthError for missing or refused
    credentials, RegistryError (status, the registry's error codes, the blob's digest)
    when the registry refuses or keeps failing, ArchiveError when a blob is missing.
    """
    options = options or RegistryOptions()
    groups = _groups(target, refs)
    # explicit credentials are the target registry's (a base's or cache's registry never sees them)
    options = options.scoped_to([registry for registry, _ in groups])
    job = _Job(target, cache, options, on_bytes, committed)
    job.clients.update(given := dict(clients or {}))
    try:
        for (registry, repo), group in groups.items():
            job.push_repo(registry, repo, group)
    finally:
        for c in (c for r, c in job.clients.items() if given.get(r) is not c):
            c.close()
    return job.result()


def _groups(target: Target, refs: Sequence[str]) -> dict[tuple[str, str], list[Reference]]:
    """The references by (registry, repository), checked: at least one, and a pinned digest must be the target's."""
    if not refs:
        raise RegistryError("nothing to push to: give at least one image reference, e.g. registry.example.com/team/app:1.0")
    parsed = [parse_reference(r) for r in refs]
    for r in parsed:
        if r.digest and r.digest != target.digest:
            raise RegistryError(f"{r} pins digest {r.digest} but the image is {target.digest}: drop the @digest or push that image")
    groups: dict[tuple[str, str], list[Reference]] = {}
    for r in parsed:
        groups.setdefault((r.registry, r.repository), []).append(r)
    return groups


class _Checks:
    """The checks reading the image left for the push (a compressed layer's diff_id, read by
    ``push --from`` into a fresh cache: ``BlobCache.deferred_checks``), run in order on a
    thread beside the uploads that need none. Only the target's own claims are checked: another
    image read into the same cache is not this push's business. A blob with a check is not sent
    before its checks passed (``before_upload``); a failed one stops every upload (``stop``) and
    is what ``wait``, before any manifest, raises."""

    def __init__(self, cache: BlobCache, target: Target, stop: threading.Event) -> None:
        self._cache = cache
        self._pending = cache.deferred_checks(_claims(target))
        self._passed = {digest: threading.Event() for digest, _ in self._pending}
        self._stop = stop
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="checks", daemon=True) if self._pending else None
        if self._thread is not None:
            self._thread.start()

    def _run(self) -> None:
        left = Counter(digest for digest, _ in self._pending)
        for (digest, diff_id), check in self._pending.items():
            try:
                check()
            except BaseException as exc:  # raised by ``wait``, in the push's thread
                self._error = exc
                self._stop.set()
                for event in self._passed.values():
                    event.set()
                return
            self._cache.check_passed(digest, diff_id)
            left[digest] -= 1
            if not left[digest]:
                self._passed[digest].set()

    def before_upload(self, digest: str) -> None:
        event = self._passed.get(digest)
        if event is not None:
            event.wait()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error


class _Job:
    """One ``push_image``: what it pushes, the clients it opened, and what each blob came to."""

    def __init__(self, target: Target, cache: BlobCache, options: RegistryOptions,
                 on_bytes: Callable[[Descriptor, int], None] | None,
                 committed: tuple[str, str, Mapping[str, str]] | None) -> None:
        self.target, self.cache, self.options, self.on_bytes, self.committed = target, cache, options, on_bytes, committed
        self.stop = threading.Event()  # a failed check stops the uploads at their next request
        self.checks = _Checks(cache, target, self.stop)
        # by digest first (each platform's manifest of an index), then the top document by tag and digest
        self.children = [(i.digest, i.manifest_bytes, _declared_media_type(i.manifest_bytes, i.manifest.media_type))
                         for i in target.images] if isinstance(target, ImageIndex) else []
        self.top_bytes, self.top_media = _top(target)
        self.blobs = target.blobs()  # every platform's, each once
        self.owners = _owners(target)
        self.origins = _origins(target)
        self.clients: dict[str, RegistryClient] = {}
        self.tally = Tally()
        self.done_repos: dict[str, list[str]] = {}
        self.pushed: list[str] = []

    def push_repo(self, registry: str, repo: str, group: list[Reference]) -> None:
        """The blobs, then the manifests and tags, into one repository."""
        client = self.clients.get(registry) or self.clients.setdefault(registry, RegistryClient(registry, self.options))
        sources = list(self.done_repos.get(registry, []))
        for o in dict.fromkeys(o.repository for o in self.origins.values() if o.registry == registry):
            if o != repo and o not in sources:
                sources.insert(0, o)
        scopes = client.scopes(repo, push=True, mount_from=tuple(sources))
        earlier = list(self.done_repos.get(registry, []))
        here = dict(self.committed[2]) if self.committed and self.committed[:2] == (registry, repo) else {}

        def send_blobs() -> None:
            push_blobs(client, repo, scopes, self.blobs, self.owners, self.cache, self.options, self.tally,
                        self.origins, earlier, self.on_bytes, here, self.stop, self.checks.before_upload)

        try:
            send_blobs()
        except Stopped:  # a check failed and stopped the uploads: its error
            self.checks.wait()
            raise
        self.checks.wait()  # every layer's check passed before a manifest names it
        here.clear()  # a later round (a manifest's BLOB_UNKNOWN) asks the registry
        tags = list(dict.fromkeys(r.tag for r in group if r.tag))
        target = self.target
        documents = [*self.children, *((ref, self.top_bytes, self.top_media) for ref in [*tags, target.digest])]
        for ref, data, media in documents:
            expected = str(Digest.of_bytes(data))
            _put_manifest(client, repo, scopes, ref, data, media, expected, self.options, send_blobs)
        self.pushed.extend(f"{registry}/{repo}:{t}" for t in tags)
        if not tags:
            self.pushed.append(f"{registry}/{repo}@{target.digest}")
        self.done_repos.setdefault(registry, []).append(repo)

    def result(self) -> PushResult:
        by = {"skipped": [], "mounted": [], "uploaded": []}  # type: dict[str, list[str]]
        for digest, outcome in self.tally.outcome.items():
            by[outcome].append(digest)
        target, committed = self.target, self.committed
        manifests = ({str(normalize(image.platform)): image.digest for image in target.images}
                     if isinstance(target, ImageIndex) else {})
        speculative = tuple(d for d in by["uploaded"] if committed and committed[2].get(d) == "speculative")
        return PushResult(target.digest, tuple(self.pushed), self.tally.bytes_uploaded, tuple(by["skipped"]),
                          tuple(by["mounted"]), tuple(by["uploaded"]), manifests, speculative)


def push_layers(image: Image, cache: BlobCache, client: RegistryClient, repo: str,
                options: RegistryOptions) -> dict[str, str]:
    """Step 1 for ``image``'s layers alone (no config, no manifest): {digest: outcome}.

    What a push that builds sends while its new layers go up speculatively (the base's
    and the generated layers, known before the model's are done), so those uploads
    overlap instead of queueing after them. A failure raises; the push tries again."""
    owners = {d.digest: image for d in image.manifest.layers}
    origins = _origins(image)
    sources = tuple(dict.fromkeys(o.repository for o in origins.values()
                                  if o.registry == client.registry and o.repository != repo))
    tally = Tally()
    push_blobs(client, repo, client.scopes(repo, push=True, mount_from=sources), list(image.manifest.layers), owners,
                cache, options, tally, origins, [])
    return dict(tally.outcome)


def _put_manifest(client: RegistryClient, repo: str, scopes: tuple[str, ...], ref: str, data: bytes, media: str,
                  expected: str, options: RegistryOptions, send_blobs: Callable[[], None]) -> None:
    """Step 2 for one document (a manifest or an index) by tag or digest, its blobs present already."""
    registry = client.registry
    for round_ in range(BLOB_UNKNOWN_ROUNDS + 1):
        try:
            got = call_with_retry(options.retry, f"pushing manifest {ref} to {registry}/{repo}",
                                  lambda _n: client.put_manifest(repo, ref, data, media, scopes))
            break
        except RegistryError as exc:
            if "MANIFEST_BLOB_UNKNOWN" not in exc.codes or round_ == BLOB_UNKNOWN_ROUNDS:
                raise
            # Every blob answered present a moment ago: another pusher writing the
            # same blob into this repository raced us (distribution rewrites the
            # repository's link file in place). Check the blobs again, sending any
            # that really went missing, and try the manifest once more.
            log.warning("%s named a blob of manifest %s unknown although it was pushed; "
                        "checking the blobs again", registry, ref)
            time.sleep(0.2 * 2 ** round_)
            send_blobs()
    if got and got != expected:
        raise RegistryError(f"registry {registry} stored manifest {ref} of {repo} as {got}, not "
                            f"{expected}: it rewrote the manifest", digest=expected)
