"""Read-ahead: a stream of chunks made on its own thread, a few chunks ahead of its consumer.

Reading a big layer's files and hashing or compressing their bytes each keep a core
busy; on two threads they overlap instead of taking turns (the file reads release
the GIL, as do hashlib and the codecs on large buffers).
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator

__all__ = ["PREFETCH_DEPTH", "prefetch"]

#: How many chunks the file-reading thread may run ahead of the hasher/compressor.
PREFETCH_DEPTH = 4


_DONE = object()


def prefetch(chunks: Iterator[bytes], depth: int = PREFETCH_DEPTH) -> Iterator[bytes]:
    """Run ``chunks`` on a reader thread, ``depth`` ahead: disk reads overlap hashing.

    Errors on the reader thread are re-raised in the consumer; a consumer that stops
    early (an exception downstream) makes the reader stop too.
    """
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def run() -> None:
        try:
            for c in chunks:
                while not stop.is_set():
                    try:
                        q.put(c, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put(exc)

    t = threading.Thread(target=run, name="layer-reader", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        t.join(timeout=5)
