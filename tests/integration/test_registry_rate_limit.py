"""A 429 with Retry-After pauses every request to the registry, not only the one that got it.

A real docker-registry sits behind a proxy that answers one PATCH with ``429
Retry-After: 1`` while four blobs upload in parallel; the proxy notes when each request
it forwards arrives, and none may arrive during the second the registry asked for.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from registry_fixtures import FaultProxy, Registry

from ociassemble.image.assemble import Image, ImageBuilder
from ociassemble.image.cache import BlobCache
from ociassemble.image.layer import LayerSource, build_layer
from ociassemble.registry import RegistryOptions, push_image

#: A request the client began before the 429 reached it may still arrive after the proxy
#: answered: the proxy shares this test's process and two loaded cores, so its handler
#: thread can be scheduled tens of milliseconds late (seen: 70 ms). Without the gate,
#: requests arrive all through the second (a 256 KiB PATCH takes milliseconds here).
IN_FLIGHT = 0.25


class RateLimitingProxy(FaultProxy):
    """Answers the first ``method`` to an upload seen once ``uploads`` blob uploads have begun with 429."""

    def __init__(self, upstream_port: int, uploads: int, method: str = "PATCH", retry_after: str = "1") -> None:
        super().__init__(upstream_port)
        self.uploads = uploads
        self.method = method
        self.retry_after = retry_after
        self.posts = 0
        self.fired_at: float | None = None
        self.arrivals: list[tuple[float, str, str]] = []

    def _relay(self, h) -> None:  # type: ignore[no-untyped-def]
        now = time.monotonic()
        with self.lock:
            fire = (self.fired_at is None and h.command == self.method and "/blobs/uploads/" in h.path
                    and self.posts >= self.uploads)
            if fire:
                self.fired_at = now
            else:
                self.arrivals.append((now, h.command, h.path))
                if h.command == "POST" and "/blobs/uploads/" in h.path:
                    self.posts += 1
        if not fire:
            super()._relay(h)
            return
        left = int(h.headers.get("Content-Length") or 0)
        while left > 0:
            chunk = h.rfile.read(min(1 << 16, left))
            if not chunk:
                break
            left -= len(chunk)
        body = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}'
        h.send_response(429)
        h.send_header("Retry-After", self.retry_after)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)


@pytest.fixture
def four_layers(tmp_path: Path, cache: BlobCache) -> Image:
    """Four layers of 2 MiB of random bytes: each a POST and eight 256 KiB PATCHes."""
    b = ImageBuilder(cache, None)
    for i in range(4):
        src = tmp_path / f"layer-{i}"
        src.mkdir()
        (src / "weights.bin").write_bytes(os.urandom(2 << 20))
        b.add_layer(build_layer(cache, [LayerSource(src, f"/layer{i}")], epoch=0), f"layer {i}")
    return b.build(0)


def test_429_pauses_every_parallel_upload(plain_registry: Registry, cache: BlobCache, four_layers: Image,
                                          options: RegistryOptions) -> None:
    proxy = RateLimitingProxy(plain_registry.port, uploads=4)
    waits: list[tuple[str, float]] = []
    lock = threading.Lock()

    def on_wait(registry: str, seconds: float) -> None:
        with lock:
            waits.append((registry, seconds))

    opts = replace(options, concurrency=4, on_wait=on_wait)
    try:
        result = push_image(four_layers, cache, [f"{proxy.host}/rate/limited:v1"], options=opts)
    finally:
        proxy.stop()
    assert proxy.fired_at is not None, "the 429 was never sent: the uploads did not overlap"
    assert result.digest == four_layers.digest
    r = requests.get(f"{plain_registry.url}/v2/rate/limited/manifests/v1", timeout=10,
                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert r.status_code == 200
    # the four uploads were under way when the 429 came: each had begun, none had finished
    begun_before = [p for t, m, p in proxy.arrivals if t < proxy.fired_at and m == "POST" and "/blobs/uploads/" in p]
    assert len(begun_before) >= 4
    during = [(round(t - proxy.fired_at, 3), m, p.split("?")[0][-24:]) for t, m, p in proxy.arrivals
              if proxy.fired_at + IN_FLIGHT <= t < proxy.fired_at + 1.0]
    assert not during, f"requests reached the registry during the second it asked for: {during}"
    after = [t for t, _, _ in proxy.arrivals if t >= proxy.fired_at + 1.0]
    assert after, "nothing was sent after the pause: the push cannot have finished"
    assert waits == [(proxy.host, 1.0)]


def test_cli_push_says_it_is_waiting(plain_registry: Registry, tmp_path: Path) -> None:
    """The progress output names the registry and how long it waits."""
    from tests.conftest import run_cli

    app = tmp_path / "app"
    for i in range(4):
        (app / f"d{i}").mkdir(parents=True)
        (app / f"d{i}" / "w.bin").write_bytes(os.urandom(1 << 20))
    proxy = RateLimitingProxy(plain_registry.port, uploads=1, method="PUT")  # default options: monolithic PUTs
    try:
        layers = [arg for i in range(4) for arg in ("--layer", f"{app / f'd{i}'}:/d{i}")]
        proc = run_cli("push", "--plain", "--base", "scratch", *layers, f"{proxy.host}/rate/cli:v1",
                       "--cache-dir", str(tmp_path / "cache"), env={"DOCKER_CONFIG": str(tmp_path / "dc")})
    finally:
        proxy.stop()
    assert proc.returncode == 0, proc.stderr
    assert proxy.fired_at is not None
    assert f"ociassemble: registry {proxy.host} asked to slow down: waiting 1.0 s before any request to it" \
        in proc.stderr.splitlines(), proc.stderr


@pytest.fixture
def six_layers(tmp_path: Path, cache: BlobCache) -> Image:
    """Six layers of 1 MiB: with four uploads at a time, the fifth blob's POST comes while the
    others are in the middle of their PATCHes."""
    b = ImageBuilder(cache, None)
    for i in range(6):
        src = tmp_path / f"six-{i}"
        src.mkdir()
        (src / "weights.bin").write_bytes(os.urandom(1 << 20))
        b.add_layer(build_layer(cache, [LayerSource(src, f"/six{i}")], epoch=0), f"layer {i}")
    return b.build(0)


def test_429_on_a_post_pauses_every_request_class(plain_registry: Registry, cache: BlobCache, six_layers: Image,
                                                  options: RegistryOptions) -> None:
    """Issue 23 saw POSTs reach a registry 11 ms after it answered a POST with ``429 Retry-After: 1``.
    Those were requests already under way (sent before the 429 reached the client): the gate is the
    registry's, for every request class. Here the 429 lands on an upload's POST while the other
    uploads are PATCHing: no request of any kind (HEAD, POST, PATCH, PUT) may start in that second."""
    proxy = RateLimitingProxy(plain_registry.port, uploads=4, method="POST")
    opts = replace(options, concurrency=4)
    try:
        result = push_image(six_layers, cache, [f"{proxy.host}/rate/post:v1"], options=opts)
    finally:
        proxy.stop()
    assert proxy.fired_at is not None, "the 429 was never sent: no fifth upload began"
    assert result.digest == six_layers.digest
    before = [m for t, m, p in proxy.arrivals if t < proxy.fired_at and m == "PATCH"]
    assert before, "no PATCH had begun when the 429 came: the other uploads were not under way"
    during = [(round(t - proxy.fired_at, 3), m, p.split("?")[0][-24:]) for t, m, p in proxy.arrivals
              if proxy.fired_at + IN_FLIGHT <= t < proxy.fired_at + 1.0]
    assert not during, f"requests reached the registry during the second it asked for: {during}"
    after = {m for t, m, _ in proxy.arrivals if t >= proxy.fired_at + 1.0}
    assert {"POST", "PATCH"} <= after, after
