"""Real registries on loopback for the registry tests (fixtures re-exported by conftest.py): Debian's docker-registry (CNCF
distribution 2.8.2), a token server for the bearer flow, and a fault-injecting proxy.

Every process is started with a known PID and stopped by that PID; everything listens
on 127.0.0.1 only, on a free port chosen at start.
"""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from ociassemble.image.assemble import Image, ImageBuilder
from ociassemble.image.cache import BlobCache
from ociassemble.image.layer import LayerSource, build_layer
from ociassemble.registry import FAST_RETRY, RegistryOptions, push_image
from tests.conftest import free_port  # noqa: F401 (also imported from here by the tests)

REGISTRY_BIN = "/usr/bin/docker-registry"
LOOPBACK = "127.0.0.1"
TEST_USER = "alice"
TEST_PASSWORD = "s3cret-Pa55-word"


def credential_forms(user: str = TEST_USER, password: str = TEST_PASSWORD) -> dict[str, str]:
    """The ways a password can leak: as is, URL-quoted, and base64 (basic auth's ``user:password``)."""
    from urllib.parse import quote

    forms = {"the password": password, "the URL-quoted password": quote(password, safe="")}
    for label, raw in (("user:password", f"{user}:{password}"), ("the password", password)):
        for enc in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = enc(raw.encode()).decode()
            forms[f"base64 of {label}"] = encoded
            forms[f"base64 of {label} (unpadded)"] = encoded.rstrip("=")
    return forms


def credential_leaks(text: str, *passwords: str) -> list[str]:
    """Which forms of ``passwords`` (default: TEST_PASSWORD) for TEST_USER occur in ``text``: their
    names only, never the values (a report of a leak must not leak)."""
    found = set()
    for i, pw in enumerate(passwords or (TEST_PASSWORD,)):
        tag = "the test credentials" if pw == TEST_PASSWORD else f"password #{i + 1}"
        found.update(f"{label} ({tag})" for label, form in credential_forms(TEST_USER, pw).items() if form in text)
    return sorted(found)


def assert_log_has_no_credentials(log: Path) -> None:
    """A registry's log holds no form of the test credentials (checked when it stops)."""
    found = credential_leaks(log.read_text(errors="replace")) if log.exists() else []
    assert not found, f"the registry log {log} holds {', '.join(found)}"



def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {LOOPBACK}:{port} after {timeout} s")


def stop_pid(proc: subprocess.Popen[bytes]) -> None:
    """Stop one process we started, by its PID: SIGTERM, then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def make_cert(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (and a key), made with the openssl CLI."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-addext", "basicConstraints=critical,CA:TRUE"],
        check=True, capture_output=True)
    return cert, key


@dataclass
class Registry:
    """A running docker-registry: ``host`` is ``127.0.0.1:PORT`` (what references use)."""

    proc: subprocess.Popen[bytes]
    port: int
    root: Path
    log: Path
    scheme: str = "http"
    ca_cert: Path | None = None

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"


def start_registry(workdir: Path, *, tls: tuple[Path, Path] | None = None, auth: dict[str, Any] | None = None) -> Registry:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    http_cfg: dict[str, Any] = {"addr": f"{LOOPBACK}:{port}", "secret": uuid.uuid4().hex}
    if tls:
        http_cfg["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": False}},
        "storage": {"filesystem": {"rootdirectory": str(workdir / "data")}, "delete": {"enabled": True},
                    "maintenance": {"uploadpurging": {"enabled": False}}},
        "http": http_cfg,
    }
    if auth:
        config["auth"] = auth
    cfg = workdir / "config.yml"
    cfg.write_text(json.dumps(config))  # JSON is YAML
    log = workdir / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([REGISTRY_BIN, "serve", str(cfg)], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
    except BaseException:
        stop_pid(proc)
        raise
    return Registry(proc, port, workdir, log, "https" if tls else "http", tls[0] if tls else None)


# -- token server (the bearer flow) ----------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenServer:
    """Issues JWTs distribution trusts (RS256, signed with ``openssl dgst``, cert in ``x5c``).

    ``alice`` with the right password gets every action asked for; anonymous gets pull;
    a wrong password gets 401. ``requests`` records each request's scopes.
    """

    key: Path
    cert: Path
    service: str = "test-registry"
    issuer: str = "test-token-issuer"
    lifetime: int = 300
    port: int = 0
    requests: list[tuple[str | None, list[str]]] = field(default_factory=list)
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def realm(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/token"

    def _sign(self, signing_input: bytes) -> bytes:
        return subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)], input=signing_input,
                              capture_output=True, check=True).stdout

    def issue(self, user: str | None, scopes: list[str]) -> str:
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"], capture_output=True,
                             check=True).stdout
        access = []
        for s in scopes:
            typ, _, rest = s.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = [a for a in actions.split(",") if user is not None or a == "pull"]
            access.append({"type": typ, "name": name, "actions": granted})
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "x5c": [base64.b64encode(der).decode()]}
        claims = {"iss": self.issuer, "sub": user or "", "aud": self.service, "exp": now + self.lifetime,
                  "nbf": now - 30, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}".encode()
        return signing_input.decode() + "." + _b64url(self._sign(signing_input))

    def start(self) -> None:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                scopes = [s for v in query.get("scope", []) for s in v.split(" ") if s]
                user = None
                header = self.headers.get("Authorization") or ""
                if header.startswith("Basic "):
                    u, _, p = base64.b64decode(header[6:]).decode().partition(":")
                    if (u, p) != (TEST_USER, TEST_PASSWORD):
                        owner.requests.append(("<refused>", scopes))
                        self.send_response(401)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    user = u
                owner.requests.append((user, scopes))
                body = json.dumps({"token": owner.issue(user, scopes), "expires_in": owner.lifetime}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True, name="token-server").start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()


# -- fault-injecting proxy ----------------------------------------------------------------


@dataclass
class Fault:
    """One injected failure for requests matching ``method`` and ``path`` (a regex).

    ``action``: ``status`` (answer ``status`` with ``headers``/``body`` without forwarding),
    ``reset`` (forward ``after`` body bytes, then abort both connections), ``drop_response``
    (forward the whole request, then reset the client instead of answering), ``corrupt``
    (forward, then flip the bits of the response body's byte at offset ``after``: same length).
    ``times`` = None means forever. ``skip`` lets that many matching requests through first.
    """

    method: str
    path: str
    action: str
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    after: int = 0
    times: int | None = 1
    skip: int = 0
    hits: int = 0


_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


class FaultProxy:
    """An HTTP reverse proxy on loopback in front of one registry; injects ``faults`` and
    counts the blob bytes (PATCH/PUT bodies to ``/blobs/uploads/``) that reach the registry."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.faults: list[Fault] = []
        self.lock = threading.Lock()
        self.blob_bytes = 0
        self.log: list[tuple[str, str, int | str]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 30

            def log_message(self, *_: Any) -> None:
                pass

            def handle(self) -> None:
                try:
                    first = self.connection.recv(1, socket.MSG_PEEK)
                except OSError:
                    return
                if first == b"\x16":  # a TLS ClientHello: we speak plain HTTP only
                    return
                super().handle()

            def do_GET(self) -> None:
                owner._relay(self)

            do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

        self.server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="fault-proxy")
        self.thread.start()

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def add(self, method: str, path: str, action: str, **kw: Any) -> Fault:
        fault = Fault(method, path, action, **kw)
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()
            self.blob_bytes = 0
            self.log.clear()

    def _match(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for f in self.faults:
                if f.method == method and re.search(f.path, path):
                    if f.skip > 0:
                        f.skip -= 1
                        continue
                    if f.times is not None and f.hits >= f.times:
                        continue
                    f.hits += 1
                    return f
        return None

    @staticmethod
    def _reset(h: http.server.BaseHTTPRequestHandler) -> None:
        h.close_connection = True
        try:
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.connection.close()
        except OSError:
            pass

    def _relay(self, h: http.server.BaseHTTPRequestHandler) -> None:
        method, path = h.command, h.path
        length = int(h.headers.get("Content-Length") or 0)
        is_blob_body = method in ("PATCH", "PUT") and "/blobs/uploads/" in path
        fault = self._match(method, path)
        if fault is not None and fault.action == "status":
            left = length
            while left > 0:
                chunk = h.rfile.read(min(1 << 16, left))
                if not chunk:
                    break
                left -= len(chunk)
            self.log.append((method, path, fault.status))
            h.send_response(fault.status)
            for k, v in fault.headers.items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(fault.body)))
            if fault.body:
                h.send_header("Content-Type", "application/json")
            h.end_headers()
            if fault.body and method != "HEAD":
                h.wfile.write(fault.body)
            return
        up = http.client.HTTPConnection(LOOPBACK, self.upstream_port, timeout=60)
        up.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for k, v in h.headers.items():
            if k.lower() not in _HOP:
                up.putheader(k, v)
        up.endheaders()
        left, sent = length, 0
        while left > 0:
            chunk = h.rfile.read(min(1 << 16, left))
            if not chunk:
                break
            if fault is not None and fault.action == "reset" and sent + len(chunk) >= fault.after:
                part = chunk[: max(fault.after - sent, 0)]
                up.send(part)
                if is_blob_body:
                    with self.lock:
                        self.blob_bytes += len(part)
                self.log.append((method, path, "reset"))
                up.close()
                self._reset(h)
                return
            up.send(chunk)
            sent += len(chunk)
            left -= len(chunk)
            if is_blob_body:
                with self.lock:
                    self.blob_bytes += len(chunk)
        resp = up.getresponse()
        if fault is not None and fault.action == "drop_response":
            resp.read()
            up.close()
            self.log.append((method, path, "dropped"))
            self._reset(h)
            return
        self.log.append((method, path, resp.status))
        h.send_response(resp.status, resp.reason)
        headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP]
        has_length = any(k.lower() == "content-length" for k, _ in headers)
        flip = fault.after if fault is not None and fault.action == "corrupt" else None
        if method == "HEAD" or resp.status in (204, 304) or has_length:
            for k, v in headers:
                h.send_header(k, v)
            h.end_headers()
            if method != "HEAD":
                offset = 0
                while True:
                    chunk = resp.read(1 << 16)
                    if not chunk:
                        break
                    if flip is not None and offset <= flip < offset + len(chunk):
                        chunk = chunk[:flip - offset] + bytes([chunk[flip - offset] ^ 0xFF]) + chunk[flip - offset + 1:]
                        self.log.append((method, path, "corrupted"))
                    offset += len(chunk)
                    h.wfile.write(chunk)
        else:
            body = resp.read()
            for k, v in headers:
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        up.close()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _isolated_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never read or write the real ~/.docker/config.json."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)


@pytest.fixture(scope="session")
def plain_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    if not os.access(REGISTRY_BIN, os.X_OK):
        pytest.skip("docker-registry is not installed")
    reg = start_registry(tmp_path_factory.mktemp("registry-plain"))
    yield reg
    stop_pid(reg.proc)


@pytest.fixture(scope="session")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """htpasswd basic auth over TLS with a self-signed certificate."""
    if not os.access(REGISTRY_BIN, os.X_OK) or shutil.which("openssl") is None or shutil.which("htpasswd") is None:
        pytest.skip("docker-registry, openssl or htpasswd is not installed")
    work = tmp_path_factory.mktemp("registry-tls")
    cert, key = make_cert(work, "127.0.0.1")
    htpasswd = work / "htpasswd"
    out = subprocess.run(["htpasswd", "-Bbn", TEST_USER, TEST_PASSWORD], capture_output=True, check=True).stdout
    htpasswd.write_bytes(out)
    reg = start_registry(work, tls=(cert, key), auth={"htpasswd": {"realm": "test-realm", "path": str(htpasswd)}})
    yield reg
    stop_pid(reg.proc)
    assert_log_has_no_credentials(reg.log)


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, TokenServer]]:
    """distribution with ``auth: token`` trusting our token server's certificate."""
    if not os.access(REGISTRY_BIN, os.X_OK) or shutil.which("openssl") is None:
        pytest.skip("docker-registry or openssl is not installed")
    work = tmp_path_factory.mktemp("registry-token")
    cert, key = make_cert(work, "token-signer")
    tokens = TokenServer(key, cert)
    tokens.start()
    reg = start_registry(work, auth={"token": {"realm": tokens.realm, "service": tokens.service,
                                               "issuer": tokens.issuer, "rootcertbundle": str(cert)}})
    yield reg, tokens
    stop_pid(reg.proc)
    tokens.stop()
    assert_log_has_no_credentials(reg.log)


@pytest.fixture
def proxy(plain_registry: Registry) -> Iterator[FaultProxy]:
    p = FaultProxy(plain_registry.port)
    yield p
    p.stop()


@pytest.fixture
def options(tmp_path: Path) -> RegistryOptions:
    """Fast retries and small chunks, so chunked uploads and resumes happen on small blobs."""
    return RegistryOptions(retry=FAST_RETRY, chunk_size=256 << 10, monolithic_max=64 << 10, timeout=(5.0, 30.0),
                           docker_config=tmp_path / "docker-config" / "config.json")


@pytest.fixture
def cache(tmp_path: Path) -> BlobCache:
    return BlobCache(tmp_path / "cache")


@pytest.fixture
def make_image(tmp_path: Path) -> Callable[..., Image]:
    """``make_image(cache, {"path": bytes}, base=None)``: a one-new-layer image built by the engine."""
    counter = iter(range(10_000))

    def make(cache: BlobCache, files: dict[str, bytes], base: Image | None = None, dest: str = "/app") -> Image:
        src = tmp_path / f"src-{next(counter)}"
        for name, data in files.items():
            p = src / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        b = ImageBuilder(cache, base)
        b.add_layer(build_layer(cache, [LayerSource(src, dest)], epoch=0), f"COPY {dest}")
        return b.build(0)

    return make


@pytest.fixture
def pushed(request: pytest.FixtureRequest, plain_registry: Registry, cache: BlobCache,
           make_image: Callable[..., Image], options: RegistryOptions) -> tuple[Image, str]:
    """(image, reference) of a small image pushed to the plain registry, in a repository named
    after the test module (so two modules' pushes never meet)."""
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").removeprefix("registry_")
    image = make_image(cache, {"model.bin": os.urandom(300_000), "score.py": f"print({module!r})\n".encode()})
    ref = f"{plain_registry.host}/{module.replace('_', '-')}/app:1"
    push_image(image, cache, [ref], options=options)
    return image, ref


def skopeo(*args: str) -> str:
    proc = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"skopeo {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout
