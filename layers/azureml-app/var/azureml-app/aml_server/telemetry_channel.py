"""TelemetryChannel: App Insights items batched and POSTed to the ingestion endpoint from a background thread.

Why not the reference's exporter (opentelemetry-sdk + azure-monitor-opentelemetry-exporter):
those two pull in azure-core, azure-identity, msal, cryptography and more, all
merged into every image's dependencies (and into the user's own pins) for a
feature most deployments leave off.  What reaches App Insights is only JSON
envelopes POSTed to ``<IngestionEndpoint>/v2.1/track``; the standard library
sends them as well.

Batching as the reference: an item waits at most ``SEND_INTERVAL_S`` seconds,
or until ``BATCH_SIZE`` items are queued.  A failed send is logged (once per
run of failures) and its items dropped, except on the statuses the exporter
retries (408, 429, 5xx, no answer), kept for the next send while fewer than
``MAX_QUEUED`` items wait.  Nothing a send does can raise into the request that
produced the item.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import urllib.error
import urllib.request
from typing import Any

__all__ = ["TelemetryChannel", "SEND_INTERVAL_S", "BATCH_SIZE", "MAX_QUEUED"]

logger = logging.getLogger("aml_server.appinsights")

SEND_INTERVAL_S = 5.0
BATCH_SIZE = 100
# Items kept while the endpoint cannot be reached; older ones are dropped first.
MAX_QUEUED = 5000
SEND_TIMEOUT_S = 10.0
_RETRIED_STATUSES = (408, 429, 500, 502, 503, 504)


class TelemetryChannel:
    """A queue of envelopes and the thread that sends them to ``track_url``.

    The thread is started on the first item in each process, so a channel made
    before gunicorn forks its workers (WORKER_PRELOAD) sends from each worker.

    Example::

        channel = TelemetryChannel("https://dc.services.visualstudio.com/v2.1/track")
        channel.send({"name": "Microsoft.ApplicationInsights.Message", ...})
        channel.flush()
    """

    def __init__(self, track_url: str, interval_s: float = SEND_INTERVAL_S) -> None:
        self.track_url = track_url
        self.interval_s = interval_s
        self._lock = threading.Condition()
        self._queue: list[dict[str, Any]] = []
        self._thread: threading.Thread | None = None
        self._thread_pid = 0
        self._closed = False
        self._failing = False
        atexit.register(self.close)

    def send(self, item: dict[str, Any]) -> None:
        """Queue one envelope; returns at once."""
        with self._lock:
            if self._closed:
                return
            self._queue.append(item)
            if len(self._queue) > MAX_QUEUED:
                del self._queue[: len(self._queue) - MAX_QUEUED]
            self._ensure_thread()
            if len(self._queue) >= BATCH_SIZE:
                self._lock.notify_all()

    def flush(self, timeout_s: float = SEND_TIMEOUT_S) -> None:
        """Send every queued item now, on this thread (at exit, after a failed init())."""
        with self._lock:
            batch, self._queue = self._queue, []
        while batch:
            chunk, batch = batch[:BATCH_SIZE], batch[BATCH_SIZE:]
            self._post(chunk, timeout_s, keep_on_retry=False)

    def close(self) -> None:
        """Send what is queued and stop the thread; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._lock.notify_all()
        self.flush()

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread_pid == os.getpid() and self._thread.is_alive():
            return
        self._thread_pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="aml-appinsights", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._closed and len(self._queue) < BATCH_SIZE:
                    self._lock.wait(self.interval_s)
                if self._closed:
                    return
                batch, self._queue = self._queue[:BATCH_SIZE], self._queue[BATCH_SIZE:]
            if batch:
                self._post(batch, SEND_TIMEOUT_S, keep_on_retry=True)

    def _post(self, batch: list[dict[str, Any]], timeout_s: float, keep_on_retry: bool) -> None:
        body = json.dumps(batch, separators=(",", ":")).encode("utf-8")
        request = urllib.request.Request(
            self.track_url, data=body, method="POST",
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        problem = ""
        retry = False
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as answer:
                answer.read()
        except urllib.error.HTTPError as ex:
            problem = f"HTTP {ex.code}"
            retry = ex.code in _RETRIED_STATUSES
        except Exception as ex:  # no answer at all: DNS, refused, timeout, TLS
            problem = f"{type(ex).__name__}: {ex}"
            retry = True
        if not problem:
            if self._failing:
                logger.info("App Insights telemetry reaches %s again", self.track_url)
            self._failing = False
            return
        if not self._failing:
            kept = " (kept for the next try)" if retry and keep_on_retry else " (dropped)"
            logger.warning("App Insights telemetry could not be sent to %s: %s%s", self.track_url, problem, kept)
        self._failing = True
        if retry and keep_on_retry:
            with self._lock:
                self._queue[:0] = batch
                if len(self._queue) > MAX_QUEUED:
                    del self._queue[: len(self._queue) - MAX_QUEUED]
