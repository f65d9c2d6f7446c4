"""Speculative upload: a new layer sent to the registry in the pass that hashes it.

``push`` (when it builds) hands this uploader to the build (``layer.build_layer``'s
``uploader``). For an uncompressed layer held by reference whose digest neither the
local layer index nor a registry layer cache knows, the build does not hash the files
and then let the push read them again: it opens an upload session on the destination
repository, streams the layer's deterministic tar stream (``image.onepass``: its size
is known up front) in PATCH chunks while hashing it, and commits with
``PUT ?digest=<what it computed>``. The registry hashes what it received and checks it.
Only after that commit does the build write the layer's record, so the cache holds
exactly what ``build`` would have written; ``push_image`` then reports the blob as
uploaded (speculatively) without a HEAD. Meanwhile the layers known before the user's
(the base's, the generated ones) are pushed on a thread of their own (``push_early``), so
their uploads overlap the model's instead of queueing after it.

Resume: a failed PATCH is retried per ``options.retry`` from where the registry says
the upload stands (``upload_offset``); the gap is re-read but not hashed again
(``OnePassReader.streamed``). When the registry cannot say (distribution after a reset
mid-PATCH) a new upload is opened and the stream is sent from byte 0, still hashed once:
the stream is deterministic. A file changed while sent (``SourceChangedError`` naming
it) or any failure cancels the upload: no final PUT, so no blob, record or tag.

The waste when the registry had those bytes already (another runner pushed the same
model): the whole layer is sent before its digest is known. A registry layer cache that
is read avoids it (the build hashes first and looks the layer up, as without this);
``push --no-speculative-upload`` (``$OCIASSEMBLE_SPECULATIVE_UPLOAD=0``) hashes first and
lets the push HEAD the blob, as before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import RegistryError
from ..image.digest import CHUNK
from ..image.onepass import OnePassReader
from ..image.readahead import prefetch
from .client import RegistryClient, RegistryOptions
from .retry import call_with_retry
from .push import push_layers
from .upload import BlobSlice, OpenUpload, cancel_upload, finish_upload, patch_upload, resume_or_start

if TYPE_CHECKING:
    from ..image.assemble import Image
    from ..image.cache import BlobCache

__all__ = ["SpeculativeUploader"]

log = logging.getLogger("ociassemble.registry")


class _Aborted(Exception):
    """A speculative upload stopped by ``SpeculativeUploader.abort`` (another layer of the build
    failed, or Ctrl-C): its session is cancelled and the build raises the failure that caused it."""


class _Stream:
    """The reader's bytes as request bodies, read on a read-ahead thread.

    Reading and hashing (the reader hashes what it reads) overlap the socket writes. Before
    the reader is moved (the next body, a resume) the read-ahead of the previous body is
    stopped and joined, so only one thread ever touches the reader.
    """

    def __init__(self, reader: OnePassReader, stop: threading.Event) -> None:
        self.reader = reader
        self._stop = stop
        self._active: Iterator[bytes] | None = None

    def pieces(self, offset: int, length: int, on_bytes: Callable[[int], None] | None) -> Iterator[bytes]:
        """The bytes [offset, offset + length), sent from this thread while the read-ahead
        thread reads and hashes the next ones."""
        self.stop()
        self.reader.seek(offset)
        self._active = gen = prefetch(self._read(length))
        for piece in gen:
            if self._stop.is_set():
                raise _Aborted("the upload of a new layer was stopped: the build it belongs to failed or was interrupted")
            if on_bytes is not None:
                on_bytes(len(piece))
            yield piece

    def _read(self, length: int) -> Iterator[bytes]:
        left = length
        while left:
            buf = bytearray(min(CHUNK, left))
            n = self.reader.readinto(buf)
            if not n:
                raise RegistryError("a layer's stream ended early while being uploaded")
            left -= n
            yield buf if n == len(buf) else bytes(buf[:n])

    def stop(self) -> None:
        if self._active is not None:
            self._active.close()  # type: ignore[attr-defined]  # (a generator: stops and joins its thread)
            self._active = None


@dataclass
class _Span(BlobSlice):
    """``length`` bytes of the stream from ``offset`` as a re-iterable body (a 401's resend reads again)."""

    stream: _Stream | None = None

    def __iter__(self) -> Iterator[bytes]:
        assert self.stream is not None
        return self.stream.pieces(self.offset, self.length, self.on_bytes)


@dataclass
class SpeculativeUploader:
    """Uploads new layers to ``repo`` of ``client``'s registry as they are read (module docs).

    ``sent`` maps each committed blob's digest to its size; ``outcomes()`` is every blob
    made present here (those, and ``push_early``'s), which the push does not ask about
    again. Thread-safe: several layers go up at once.
    """

    client: RegistryClient
    repo: str
    options: RegistryOptions
    sent: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    early: dict[str, str] = field(default_factory=dict)
    _early_thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def push_early(self, image: Image, cache: BlobCache) -> None:
        """Start pushing ``image``'s layers (the build so far) on a thread (``push.push_layers``).
        A failure is only logged: the push sends what is missing anyway."""
        def run() -> None:
            try:
                done = push_layers(image, cache, self.client, self.repo, self.options)
            except Exception as exc:  # noqa: BLE001 - the push proper reports it, if it persists
                log.info("pushing the base's layers early failed (%s); the push tries again", exc)
                return
            with self.lock:
                self.early.update(done)

        self.wait()
        self._early_thread = threading.Thread(target=run, name="push-early", daemon=True)
        self._early_thread.start()

    def wait(self) -> None:
        """Wait for ``push_early``'s thread (before the push, and before closing the client)."""
        if self._early_thread is not None:
            self._early_thread.join()
            self._early_thread = None

    def outcomes(self) -> dict[str, str]:
        """{digest: outcome} of every blob this uploader made present in ``repo``."""
        self.wait()
        with self.lock:
            return {**self.early, **{d: "speculative" for d in self.sent}}

    def close(self) -> None:
        self.wait()
        self.client.close()

    @property
    def workers(self) -> int:
        return max(1, self.options.concurrency)

    @property
    def scopes(self) -> tuple[str, ...]:
        return self.client.scopes(self.repo, push=True)

    def abort(self) -> None:
        """Stop every upload under way at its next chunk (each cancels its session); the build
        calls it when one of its layers failed or it was interrupted."""
        self._stop.set()

    def send(self, reader: OnePassReader, on_bytes: Callable[[int], None] | None) -> None:
        """Upload ``reader``'s stream and commit it under the digest read; nothing committed on failure."""
        stream = _Stream(reader, self._stop)
        session = OpenUpload()
        what = f"uploading a new layer ({reader.size} bytes) to {self.client.registry}/{self.repo}"
        try:
            call_with_retry(self.options.retry, what, lambda attempt: self._attempt(stream, session, attempt, on_bytes))
        except BaseException:
            stream.stop()
            if session.location is not None:
                cancel_upload(self.client, session.location, self.scopes)
            raise
        stream.stop()
        with self.lock:
            self.sent[reader.digest] = reader.size

    def _attempt(self, stream: _Stream, s: OpenUpload, attempt: int, on_bytes: Callable[[int], None] | None) -> None:
        reader, scopes, label = stream.reader, self.scopes, "(new layer)"
        stream.stop()
        if attempt > 0 and reader.streamed == reader.size and self.client.blob_exists(self.repo, reader.digest, scopes):
            s.location = None  # the final PUT went through; its answer was lost
            return
        # a restart is hashed once all the same: the stream is deterministic (module docs)
        resume_or_start(self.client, self.repo, s, label, scopes, retrying=attempt > 0, resendable=reader.streamed,
                        what="a new layer")
        while s.offset < reader.size:
            n = min(self.options.chunk_size, reader.size - s.offset)
            body = _Span(None, s.offset, n, on_bytes, stream=stream)
            s.location = patch_upload(self.client, s.location, body, label, scopes)
            s.offset += n
        stream.stop()
        finish_upload(self.client, s.location, reader.digest, None, scopes)
        s.location = None
