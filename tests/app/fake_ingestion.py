"""A stand-in for App Insights' ingestion endpoint on 127.0.0.1 that records every envelope POSTed to it.

Both servers of the differential suite (and the unit tests) send their
telemetry here through a connection string's ``IngestionEndpoint``; the
recorded envelopes are what the tests compare.  It answers as the real
endpoint does on success (200, ``itemsReceived`` = ``itemsAccepted``).
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

__all__ = ["FakeIngestion", "Post"]


@dataclass(frozen=True)
class Post:
    """One POST: its path and the envelopes in its body."""

    path: str
    envelopes: list[dict[str, Any]] = field(default_factory=list)


class FakeIngestion:
    """``with FakeIngestion() as sink: ... sink.url ... sink.envelopes(ikey)``."""

    def __init__(self) -> None:
        self.posts: list[Post] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                text = body.decode("utf-8")
                try:
                    parsed = json.loads(text)
                    items = parsed if isinstance(parsed, list) else [parsed]
                except ValueError:  # newline-delimited JSON is accepted too
                    items = [json.loads(line) for line in text.splitlines() if line.strip()]
                with sink._lock:
                    sink.posts.append(Post(self.path, items))
                reply = json.dumps({"itemsReceived": len(items), "itemsAccepted": len(items), "errors": []}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The IngestionEndpoint to give, with a trailing slash as Azure's connection strings have."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def envelopes(self, ikey: str | None = None) -> list[dict[str, Any]]:
        """Every envelope received so far (only those of ``ikey`` when given), in arrival order."""
        with self._lock:
            items = [item for post in self.posts for item in post.envelopes]
        return [item for item in items if ikey is None or item.get("iKey") == ikey]

    def wait_for(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Poll ``done`` until it is true or ``timeout_s`` pass; whether it became true."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if done():
                return True
            time.sleep(0.2)
        return done()

    def __enter__(self) -> "FakeIngestion":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
