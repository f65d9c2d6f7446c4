"""Layers built side by side, and started before the rest of the image (a push that builds).

A push that builds sends each new layer of the user's files to the registry in the pass
that reads it (``registry.speculative``): for a model, that upload is most of the push.
Nothing else in the image needs those bytes until it is assembled, so ``start_builds``
starts them as soon as the files are scanned, on threads, and the build goes on meanwhile
(the base read, the Debian packages, pex resolving the deps: a cold deps layer then costs
no time beside a model's upload). Several go up side by side (the push's blob
concurrency: one upload rarely fills the link or the registry's disk).

A failure (of one of them, or of the build around them) or Ctrl-C stops the uploads at
their next chunk (``LayerUploader.abort``: each cancels its session, as a failed upload
does) instead of sending gigabytes for an image that will not be pushed, and the first
real failure, in order, is what is raised. Without an uploader (``build``), layers are
disk- and CPU-bound and are built one at a time, in the caller's thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Generic, TypeVar

from .layer import LayerUploader

__all__ = ["LayerBuilds", "build_in_parallel", "start_builds"]

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

#: How long an abort waits for the uploads to cancel their sessions (each stops at its next
#: chunk; one waiting on a slow registry's answer is left to finish on its own).
ABORT_WAIT = 10.0


class LayerBuilds(Generic[R]):
    """Builds under way on threads: ``results()`` in order, or ``abort()`` them."""

    def __init__(self, build: Callable[[S, T], R], items: Sequence[tuple[S, T]], uploader: LayerUploader) -> None:
        self._uploader = uploader
        self._pool = ThreadPoolExecutor(max_workers=max(1, uploader.workers), thread_name_prefix="layer")
        self._futures: list[Future[R]] = [self._pool.submit(build, *item) for item in items]

    def results(self) -> list[R]:
        """Every build's result, in order, once all ended; the first failure, in order, if any
        failed (the others stopped then). Ctrl-C while waiting aborts them."""
        try:
            done, _ = wait(self._futures, return_when=FIRST_EXCEPTION)
        except BaseException:
            self.abort()
            raise
        failed = [f for f in self._futures if f in done and f.exception() is not None]
        if failed:
            self.abort()
            raise failed[0].exception()  # type: ignore[misc]  # a real failure, not one the abort caused
        self._pool.shutdown(wait=True)
        return [f.result() for f in self._futures]

    def abort(self) -> None:
        """Stop the uploads (each cancels its session) and the builds not started, and wait a
        bounded time for them to end."""
        self._uploader.abort()
        self._pool.shutdown(wait=False, cancel_futures=True)
        wait(self._futures, timeout=ABORT_WAIT)


def start_builds(build: Callable[[S, T], R], items: Sequence[tuple[S, T]], uploader: LayerUploader) -> LayerBuilds[R]:
    """``build(*item)`` for each item, started now on threads (see the module docs)."""
    return LayerBuilds(build, items, uploader)


def build_in_parallel(build: Callable[[S, T], R], items: Sequence[tuple[S, T]],
                      uploader: LayerUploader | None) -> list[R]:
    """``build(*item)`` for each item, in order: with an ``uploader``, side by side; without
    one, one at a time in this thread."""
    if uploader is None or len(items) < 2:
        return [build(*item) for item in items]
    return start_builds(build, items, uploader).results()
