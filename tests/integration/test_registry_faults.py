"""Pushing through a loopback proxy that resets connections, answers 5xx/429, loses responses."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace

import pytest
import requests
from registry_fixtures import FaultProxy, Registry, free_port

from ociassemble.errors import AuthError, RegistryError
from ociassemble.registry import push_image

UPLOAD = r"/blobs/uploads/"
FINAL_PUT = r"/blobs/uploads/.*digest=sha256"


def _errors(code: str, message: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message, "detail": None}]}).encode()


def _manifest_digest(reg: Registry, repo: str, tag: str) -> str | None:
    r = requests.get(f"{reg.url}/v2/{repo}/manifests/{tag}", timeout=10,
                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    return r.headers.get("Docker-Content-Digest") if r.status_code == 200 else None


def _all_blobs_present(reg: Registry, repo: str, image) -> bool:
    return all(requests.head(f"{reg.url}/v2/{repo}/blobs/{d.digest}", timeout=10).status_code == 200
               for d in image.blobs())


@pytest.fixture
def big_image(cache, make_image):
    """~1 MiB of incompressible model: five 256 KiB PATCHes with the test options."""
    return make_image(cache, {"model.bin": os.urandom(1_100_000), "score.py": b"print(1)\n"})


SCENARIOS = {
    # the registry keeps the partial bytes but our Location is stale: fresh POST (registry-notes)
    "reset-mid-patch": [dict(method="PATCH", path=UPLOAD, action="reset", after=100_000, skip=1)],
    "reset-mid-monolithic-put": [dict(method="PUT", path=FINAL_PUT, action="reset", after=100)],
    # the PATCH never reached the registry: resume at the offset the registry reports
    "503-on-patch": [dict(method="PATCH", path=UPLOAD, action="status", status=503, times=2, skip=2)],
    "500-on-head": [dict(method="HEAD", path=r"/blobs/sha256", action="status", status=500, times=2)],
    "429-on-post": [dict(method="POST", path=UPLOAD, action="status", status=429, headers={"Retry-After": "1"},
                         body=_errors("TOOMANYREQUESTS", "slow down"))],
    "lost-final-put-response": [dict(method="PUT", path=FINAL_PUT, action="drop_response")],
    "503-on-manifest": [dict(method="PUT", path=r"/manifests/", action="status", status=503, times=2)],
    "all-at-once": [dict(method="PATCH", path=UPLOAD, action="reset", after=10_000, skip=3),
                    dict(method="PATCH", path=UPLOAD, action="status", status=502, skip=1),
                    dict(method="PUT", path=FINAL_PUT, action="drop_response", skip=1),
                    dict(method="POST", path=UPLOAD, action="status", status=429, headers={"Retry-After": "0"})],
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_registry_push_survives_faults(scenario, plain_registry, proxy: FaultProxy, cache, big_image, options):
    faults = [proxy.add(**f) for f in SCENARIOS[scenario]]
    repo = f"faults/{scenario}"
    started = time.monotonic()
    result = push_image(big_image, cache, [f"{proxy.host}/{repo}:v1"], options=options)
    elapsed = time.monotonic() - started

    assert all(f.hits >= 1 for f in faults), [(f.action, f.hits) for f in faults]
    assert result.digest == big_image.digest
    assert _manifest_digest(plain_registry, repo, "v1") == big_image.digest
    assert _all_blobs_present(plain_registry, repo, big_image)
    if scenario == "429-on-post":
        assert elapsed >= 1.0  # Retry-After honoured
    if scenario == "503-on-patch":
        # resumed from the registry's offset, not restarted: one upload, its GET answered 204 + Range
        assert any(m == "GET" and UPLOAD in p and s == 204 for m, p, s in proxy.log)
        assert sum(1 for m, p, s in proxy.log if m == "POST" and s == 202) == 2  # big layer + config
    if scenario == "lost-final-put-response":
        assert any(m == "HEAD" and s == 200 for m, p, s in proxy.log)


def test_registry_fault_that_never_clears_fails_once_and_keeps_the_tag(plain_registry, proxy: FaultProxy, cache,
                                                                       make_image, big_image, options):
    repo = "faults/never"
    v1 = make_image(cache, {"score.py": b"print('v1')\n"})
    push_image(v1, cache, [f"{plain_registry.host}/{repo}:prod"], options=options)

    fault = proxy.add("PATCH", UPLOAD, "status", status=503, times=None,
                      body=_errors("UNAVAILABLE", "storage backend unavailable"))
    started = time.monotonic()
    with pytest.raises(RegistryError) as info:
        push_image(big_image, cache, [f"{proxy.host}/{repo}:prod"], options=options)
    elapsed = time.monotonic() - started
    message = str(info.value)
    layer = next(d for d in big_image.manifest.layers if d.size > options.monolithic_max)

    assert "\n" not in message
    assert layer.digest in message and "503" in message and "UNAVAILABLE: storage backend unavailable" in message
    assert "gave up after 5 tries" in message
    assert info.value.status == 503 and info.value.codes == ("UNAVAILABLE",) and info.value.digest == layer.digest
    assert fault.hits == options.retry.attempts  # bounded: no request retried forever
    assert elapsed < 10
    # the tag still names the old, complete image; the new manifest was never sent
    assert _manifest_digest(plain_registry, repo, "prod") == v1.digest
    assert _manifest_digest(plain_registry, repo, big_image.digest) is None
    assert not any(m == "PUT" and "/manifests/" in p for m, p, s in proxy.log)


def test_registry_reset_that_never_clears_fails_with_one_line(proxy: FaultProxy, cache, big_image, options):
    proxy.add("PATCH", UPLOAD, "reset", after=1000, times=None)
    with pytest.raises(RegistryError) as info:
        push_image(big_image, cache, [f"{proxy.host}/faults/reset-forever:v1"], options=options)
    assert "\n" not in str(info.value)
    assert "connection failed" in str(info.value) and "gave up after" in str(info.value)


@pytest.mark.parametrize("status,code,expect", [
    (400, "NAME_INVALID", "refuses the repository name 'faults/refused'"),
    (413, None, "raise its body-size limit"),
    (507, None, "out of storage"),
    (403, "DENIED", "may not do this"),
])
def test_registry_refusals_are_one_clear_line(status, code, expect, proxy: FaultProxy, cache, big_image, options):
    body = _errors(code, "refused by policy") if code else b""
    method, path = ("POST", UPLOAD) if status in (400, 403) else ("PATCH", UPLOAD) if status == 413 else ("PUT", FINAL_PUT)
    fault = proxy.add(method, path, "status", status=status, times=None, body=body)
    with pytest.raises(RegistryError) as info:
        push_image(big_image, cache, [f"{proxy.host}/faults/refused:v1"], options=replace(options, concurrency=1))
    message = str(info.value)
    assert "\n" not in message and f"HTTP {status}" in message and expect in message, message
    assert info.value.status == status
    assert fault.hits == 1  # a 4xx (and 507) is never retried
    if status == 403:
        assert isinstance(info.value, AuthError)
    if code:
        assert f"{code}: refused by policy" in message


def test_registry_unknown_host_is_one_line(cache, big_image, options):
    started = time.monotonic()
    with pytest.raises(RegistryError) as info:
        push_image(big_image, cache, ["no-such-registry.invalid/team/app:1"], options=options)
    assert "\n" not in str(info.value)
    assert "cannot resolve registry host 'no-such-registry.invalid'" in str(info.value)
    assert time.monotonic() - started < 15


def test_registry_connection_refused_is_retried_then_one_line(cache, big_image, options):
    port = free_port()  # nothing listens there
    with pytest.raises(RegistryError) as info:
        push_image(big_image, cache, [f"127.0.0.1:{port}/team/app:1"], options=replace(options, concurrency=1))
    assert "\n" not in str(info.value)
    assert "Connection refused" in str(info.value) and "gave up after 5 tries" in str(info.value)


def test_manifest_blob_unknown_checks_the_blobs_again_and_resends_a_lost_one(proxy: FaultProxy, plain_registry: Registry,
                                                                            cache, big_image, options):
    # distribution answers this when a concurrent pusher is rewriting a blob's link in the
    # repository; here the proxy also hides the model layer from the second look, as if it
    # had really gone, so the client must send it again before the manifest.
    layer = max(big_image.manifest.layers, key=lambda d: d.size)
    put = proxy.add("PUT", r"/manifests/v1$", "status", status=400,
                    body=_errors("MANIFEST_BLOB_UNKNOWN", "blob unknown to registry"))
    head = proxy.add("HEAD", f"/blobs/{layer.digest}", "status", status=404, skip=1)
    result = push_image(big_image, cache, [f"{proxy.host}/faults/racy:v1"], options=options)
    assert put.hits == 1 and head.hits == 1
    assert _manifest_digest(plain_registry, "faults/racy", "v1") == big_image.digest == result.digest
    assert _all_blobs_present(plain_registry, "faults/racy", big_image)
    first_put = next(i for i, (m, p, s) in enumerate(proxy.log) if m == "PUT" and "/manifests/" in p)
    resent = [p for m, p, s in proxy.log[first_put:] if m == "PUT" and f"digest={layer.digest}" in p.replace("%3A", ":")]
    assert resent, proxy.log


def test_manifest_blob_unknown_for_good_is_one_line(proxy: FaultProxy, plain_registry: Registry, cache, big_image, options):
    put = proxy.add("PUT", r"/manifests/", "status", status=400, times=None,
                    body=_errors("MANIFEST_BLOB_UNKNOWN", "blob unknown to registry"))
    with pytest.raises(RegistryError) as info:
        push_image(big_image, cache, [f"{proxy.host}/faults/lost:v1"], options=options)
    assert "\n" not in str(info.value) and "MANIFEST_BLOB_UNKNOWN" in str(info.value)
    assert put.hits == 4  # the first try and three rounds of checking the blobs again
    assert _manifest_digest(plain_registry, "faults/lost", "v1") is None
