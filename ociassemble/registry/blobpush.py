"""Step 1 of ``push``'s contract for one repository: every blob of a list made present in it.

Each blob: HEAD (present: skip), else a cross-repository mount when the blob is known to
live in another repository of the same registry (201: done; 202: the registry opened an
upload instead, which we continue), else an upload — one PUT for small blobs, POST +
PATCH chunks + PUT ?digest= for big ones. Up to ``options.concurrency`` blobs at a time,
each streamed from its cache file, or, for a blob held by reference (a layer of the
user's files, a layout's or archive's layer), straight from those bytes, each file's
fingerprint checked before and after it is read (``blobref``): a file changed since it
was read stops the push with an error naming it before its last byte is sent. The stream
is not hashed again here: the registry hashes what it receives and refuses the final
PUT with ``DIGEST_INVALID`` when it differs (a change no fingerprint showed, or an image
file that never held those bytes), which is reported as the file at fault, and the
upload is dropped. A blob's last byte is reported to the progress callback only once the
registry has accepted the blob.

Each blob attempt is retried as a whole (``options.retry``): a retry first HEADs the
blob (settling a final PUT whose response was lost), then resumes the open upload where
the registry says it stands, or starts a fresh one (``upload.resume_or_start``). The
first blob to fail stops the others at their next request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import BinaryIO

from ..errors import ArchiveError, DigestMismatchError, RegistryError
from ..image.assemble import Image
from ..image.blobref import SourceChangedError, mismatch_error
from ..image.cache import BlobCache
from ..image.oci import Descriptor
from .client import RegistryClient, RegistryOptions
from .reference import Reference
from .retry import call_with_retry
from .upload import BlobSlice, OpenUpload, cancel_upload, finish_upload, mount_blob, patch_upload, resume_or_start

__all__ = ["Stopped", "Tally", "push_blobs"]

log = logging.getLogger("ociassemble.registry")


@dataclass
class Tally:
    """What a push sent (bytes, each blob's outcome), summed across its repositories and threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    bytes_uploaded: int = 0
    outcome: dict[str, str] = field(default_factory=dict)

    def add_bytes(self, n: int) -> None:
        with self.lock:
            self.bytes_uploaded += n


class Stopped(Exception):
    """Another blob, or a check of the push around them, failed: stop this one at the next request boundary."""


@dataclass
class _Upload(OpenUpload):
    """The state of one blob's upload across attempts."""

    mount_tried: bool = False
    started: bool = False
    reader: BinaryIO | None = None  # the blob's bytes, kept open across PATCHes
    told: int = 0  # bytes reported to ``on_bytes``: never the last one before the registry accepted the blob


@dataclass
class _BlobPusher:
    """Step 1 for one blob into one repository (on the pool's threads)."""

    client: RegistryClient
    repo: str
    scopes: tuple[str, ...]
    owners: dict[str, Image]  # each blob's (first) image: where to fetch it from
    cache: BlobCache
    options: RegistryOptions
    tally: Tally
    stop: threading.Event
    on_bytes: Callable[[Descriptor, int], None] | None = None
    committed: Mapping[str, str] = field(default_factory=dict)  # uploaded here by the build (``speculative``)
    before_upload: Callable[[str], None] | None = None  # waits for a blob's check (``push._Checks``)

    def _sent(self, desc: Descriptor, state: _Upload) -> Callable[[int], None]:
        """Counts the bytes sent; tells ``on_bytes`` of all but the blob's last byte, which
        ``push`` tells once the registry has accepted the blob: a progress line saying
        "uploaded" then means the registry holds it, not only that the bytes left."""
        if self.on_bytes is None:
            return self.tally.add_bytes
        report = self.on_bytes

        def sent(n: int) -> None:
            self.tally.add_bytes(n)
            n = min(n, desc.size - 1 - state.told)  # a retry sends some bytes again
            if n > 0:
                state.told += n
                report(desc, n)
        return sent

    def push(self, desc: Descriptor, mount_from: str | None) -> str:
        """Make ``desc`` present in the repository; returns "skipped", "mounted" or "uploaded"."""
        if desc.digest in self.committed:  # by the build (``speculative``): no HEAD needed
            outcome = self.committed[desc.digest]
            self.tally.add_bytes(desc.size if outcome in ("uploaded", "speculative") else 0)
            return "uploaded" if outcome == "speculative" else outcome
        state = _Upload()
        what = f"pushing blob {desc.digest} to {self.client.registry}/{self.repo}"
        try:
            outcome = call_with_retry(self.options.retry, what, lambda attempt: self._attempt(desc, mount_from, state, attempt))
        except BaseException as exc:
            self.stop.set()  # the push has failed: the other blobs stop at their next request
            if state.location is not None and isinstance(exc, (SourceChangedError, DigestMismatchError)):
                cancel_upload(self.client, state.location, self.scopes)  # our bytes went wrong: drop them
            raise
        finally:
            if state.reader is not None:
                state.reader.close()
        if outcome == "uploaded" and self.on_bytes is not None and state.told < desc.size:
            self.on_bytes(desc, desc.size - state.told)  # accepted (``_sent``)
        return outcome

    def _reader(self, desc: Descriptor, state: _Upload) -> Callable[[int], BinaryIO]:
        """The blob's stream positioned at an offset: the open one when it is there already
        (the next PATCH), else opened again and moved to it (a retry re-reads from the
        files, each checked again when opened; the registry checks the digest)."""
        def at(offset: int) -> BinaryIO:
            r = state.reader
            if r is None or r.tell() != offset:
                if r is not None:
                    r.close()
                r = state.reader = self.cache.open(desc.digest, receiver_verifies=True)
                if offset:
                    r.seek(offset)
            return r
        return at

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise Stopped()

    def _attempt(self, desc: Descriptor, mount_from: str | None, state: _Upload, attempt: int) -> str:
        self._check_stop()
        digest = desc.digest
        if self.client.blob_exists(self.repo, digest, self.scopes):
            # on a retry this settles a final PUT whose answer was lost (registry-notes)
            return "uploaded" if state.started else "skipped"
        if self.before_upload is not None:
            self.before_upload(digest)  # (a blob whose check the push runs is sent once it passed)
            self._check_stop()
        if mount_from and not state.mount_tried:
            state.mount_tried = True
            location = mount_blob(self.client, self.repo, digest, mount_from, self.scopes)
            if location is None:
                return "mounted"
            log.info("blob %s could not be mounted from %s; uploading it", digest, mount_from)
            state.location, state.offset = location, 0
        self._local(desc)
        reader = self._reader(desc, state)
        state.started = True
        resume_or_start(self.client, self.repo, state, digest, self.scopes, retrying=attempt > 0,
                        resendable=desc.size, what=f"blob {digest}")
        if desc.size == 0:
            self._finish(desc, state, None)
        elif desc.size <= self.options.monolithic_max and state.offset == 0:
            self._finish(desc, state, BlobSlice(None, 0, desc.size, self._sent(desc, state), reader))
        else:
            while state.offset < desc.size:
                self._check_stop()
                n = min(self.options.chunk_size, desc.size - state.offset)
                body = BlobSlice(None, state.offset, n, self._sent(desc, state), reader)
                state.location = patch_upload(self.client, state.location, body, digest, self.scopes)
                state.offset += n
            self._finish(desc, state, None)
        return "uploaded"

    def _finish(self, desc: Descriptor, state: _Upload, body: BlobSlice | None) -> None:
        """The closing PUT; ``DIGEST_INVALID`` for a held blob is a file that changed unseen (or an
        image file that never held those bytes: ``mismatch_error``); accepted, a blob held unchecked is recorded."""
        assert state.location is not None
        try:
            finish_upload(self.client, state.location, desc.digest, body, self.scopes)
        except RegistryError as exc:
            held = "DIGEST_INVALID" in exc.codes and not self.cache.stored(desc.digest)
            record = self.cache.record_of(desc.digest) if held else None
            if record is None:
                raise
            raise mismatch_error(record) from None
        self.cache.confirm_unchecked(desc.digest)  # the registry hashed what was read: now it is checked

    def _local(self, desc: Descriptor) -> None:
        """Make sure the cache holds ``desc`` (a file or a reference), fetched from the image's source if need be."""
        image = self.owners[desc.digest]
        if not self.cache.has(desc.digest):
            if desc.digest == image.manifest.config.digest:
                self.cache.put_bytes(image.config_bytes)
            elif image.fetch is not None:
                image.fetch(desc, self.cache)
            else:
                raise ArchiveError(f"blob {desc.digest} of image {image.digest} is not in the cache at "
                                   f"{self.cache.root} and the image has no source: rebuild the image")
        size = self.cache.size(desc.digest)
        if size != desc.size:
            where = self.cache.path(desc.digest) if self.cache.stored(desc.digest) else self.cache.ref_path(desc.digest)
            raise ArchiveError(f"blob {desc.digest} in the cache is {size} bytes, the manifest says {desc.size}: "
                               f"delete {where} and rebuild")


def push_blobs(client: RegistryClient, repo: str, scopes: tuple[str, ...], blobs: list[Descriptor],
                owners: dict[str, Image], cache: BlobCache, options: RegistryOptions, tally: Tally,
                origins: dict[str, Reference], earlier: list[str],
                on_bytes: Callable[[Descriptor, int], None] | None = None,
                committed: Mapping[str, str] | None = None, stop: threading.Event | None = None,
                before_upload: Callable[[str], None] | None = None) -> None:
    """Step 1 of the contract for one repository: every one of ``blobs`` (each once, all in
    one pool, so no blob is sent twice at the same time); raises the first blob's failure.
    ``stop``, set from outside (a check of the push failed), stops every blob at its next
    request and raises ``Stopped``; ``before_upload(digest)`` is called before a blob the
    registry lacks is mounted or sent."""
    stop = stop or threading.Event()
    pusher = _BlobPusher(client, repo, scopes, owners, cache, options, tally, stop, on_bytes, committed or {},
                         before_upload)
    # one ping (scheme, auth challenge) before the threads start
    call_with_retry(options.retry, f"contacting {client.registry}", lambda _n: client.base_url())

    def mount_source(desc: Descriptor) -> str | None:
        origin = origins.get(desc.digest)
        if origin and origin.registry == client.registry and origin.repository != repo:
            return origin.repository
        return earlier[0] if earlier else None

    place = {d.digest: i for i, d in enumerate(blobs)}  # each blob's place in the image
    with ThreadPoolExecutor(max_workers=max(1, options.concurrency), thread_name_prefix="push") as pool:
        # the biggest first (a model's layer): it starts at once, the small ones share the other
        # workers, and none waits behind layers waiting for their checks (``before_upload``)
        futures: dict[Future[str], Descriptor] = {
            pool.submit(pusher.push, d, mount_source(d)): d for d in sorted(blobs, key=lambda d: -d.size)
        }
        finished, pending = wait(futures, return_when=FIRST_EXCEPTION)
        if any(f.exception() is not None for f in finished):
            for f in pending:
                f.cancel()
        # (leaving the pool waits for the blobs under way: each stops at its next request)
    failed = [f for f in futures if not f.cancelled() and f.exception() is not None]
    if failed:
        # the first blob (in image order) that failed of itself; a blob stopped because another
        # failed (``Stopped``) can finish first, so it is told only when nothing else failed (a check)
        real = [f for f in failed if not isinstance(f.exception(), Stopped)]
        first = min(real or failed, key=lambda f: place[futures[f].digest])
        exc = first.exception()
        assert exc is not None
        raise exc
    for f, d in sorted(futures.items(), key=lambda fd: place[fd[1].digest]):  # (reported in image order)
        outcome = f.result()
        with tally.lock:
            tally.outcome.setdefault(d.digest, outcome)
        log.debug("blob %s: %s", d.digest, outcome)
