"""A scripted registry on loopback for the attack tests: the test decides every answer, and every
request it receives is recorded (method, path, headers), so a test can say who saw which credential.

Each server listens on 127.0.0.1 on a port of its own (another origin than any other), over plain
HTTP or, with a certificate, HTTPS; it is stopped by the test that started it.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
MIB = 1 << 20


@dataclass(frozen=True)
class Seen:
    """One request as the server received it (header names lowercased)."""

    method: str
    path: str
    headers: dict[str, str]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_: Any) -> None:
        pass

    def _any(self) -> None:
        owner: FakeRegistry = self.server.owner  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = _read_chunked(self)
        owner.seen.append(Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
        try:
            owner.answer(self, body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client stopped reading: what a bounded client does

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _any

    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              reason: str | None = None) -> None:
        self.send_response(status, reason)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def reply_huge(self, status: int, size: int, *, chunked: bool = False, headers: dict[str, str] | None = None) -> None:
        """``size`` bytes of body, written a MiB at a time (never held whole, here either)."""
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(size))
        self.end_headers()
        block = b'{"errors":[{"code":"DENIED","message":"' + b"x" * (MIB - 64)
        left = size
        while left > 0:
            piece = block[:min(MIB, left)]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            left -= len(piece)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")


def _read_chunked(h: http.server.BaseHTTPRequestHandler) -> bytes:
    out = b""
    while True:
        size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            h.rfile.readline()
            return out
        out += h.rfile.read(size)
        h.rfile.readline()


@dataclass
class FakeRegistry:
    """``answer(handler, body)`` answers each request (``handler.reply(...)``); ``seen`` records them."""

    answer: Callable[[Handler, bytes], None]
    cert: tuple[Path, Path] | None = None
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.server.daemon_threads = True
        self.server.owner = self  # type: ignore[attr-defined]
        if self.cert is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(self.cert[0]), str(self.cert[1]))
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True, name=f"fake-registry-{self.port}").start()

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.cert else 'http'}://{self.host}"

    def authorizations(self) -> list[str]:
        return [s.headers["authorization"] for s in self.seen if "authorization" in s.headers]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def tiny_image(labels: dict[str, str] | None = None) -> tuple[bytes, bytes]:
    """(manifest, config) of an image with no layers: enough for pull and inspect to read."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": labels or {}},
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": digest(config), "size": len(config)},
                           "layers": []}).encode()
    return manifest, config


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
