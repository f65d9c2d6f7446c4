"""Speculative upload (issue 28): a push that builds sends a new model layer as it hashes it.

Against the real docker-registry, through the fault proxy: the layer's digest and record are
byte for byte what ``build`` writes, a reset mid-stream resumes (or restarts) and still ends
with that digest, and a file changed while it is sent leaves no blob, no tag, no record and
an error naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from registry_fixtures import FaultProxy, Registry

from ociassemble.image.assemble import ImageBuilder
from ociassemble.image.blobref import UNKNOWN, SourceChangedError
from ociassemble.image.cache import BlobCache
from ociassemble.image.compress import Compression
from ociassemble.image.layer import LayerSource, build_layer
from ociassemble.image.parallel import build_in_parallel
from ociassemble.registry import push_image
from ociassemble.registry.client import RegistryClient, RegistryOptions
from ociassemble.registry.speculative import SpeculativeUploader

UPLOAD = r"/blobs/uploads/"
FINAL_PUT = r"/blobs/uploads/.*digest=sha256"


def _model(tmp_path: Path, size: int) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    (d / "weights.bin").write_bytes(os.urandom(size))
    (d / "config.json").write_text('{"dim": 4}\n')
    return d


def _built(cache: BlobCache, model: Path, uploader: SpeculativeUploader | None = None,
           on_bytes=None):  # type: ignore[no-untyped-def]
    return build_layer(cache, [LayerSource(model, "/var/models/m/1")], compression=Compression("none"), epoch=0,
                       uploader=uploader, on_bytes=on_bytes)


def _uploader(host: str, repo: str, options: RegistryOptions) -> SpeculativeUploader:
    return SpeculativeUploader(RegistryClient(host, options), repo, options)


def _blob_digest(reg: Registry, repo: str, digest: str) -> str | None:
    r = requests.get(f"{reg.url}/v2/{repo}/blobs/{digest}", timeout=30)
    return "sha256:" + hashlib.sha256(r.content).hexdigest() if r.status_code == 200 else None


@pytest.mark.parametrize("fault", [
    None,
    # the registry keeps the partial bytes but the Location is stale: a fresh upload from byte 0
    dict(method="PATCH", path=UPLOAD, action="reset", after=100_000, skip=2),
    # the PATCH never reached the registry: resume at its offset, the gap re-read, not re-hashed
    dict(method="PATCH", path=UPLOAD, action="status", status=503, times=2, skip=2),
    # the commit's answer lost: the retry sees the blob there and sends nothing again
    dict(method="PUT", path=FINAL_PUT, action="drop_response"),
], ids=["clean", "reset-mid-patch", "503-then-resume", "lost-final-put-response"])
def test_speculative_layer_is_the_built_one_and_survives_faults(fault, tmp_path: Path, plain_registry: Registry,
                                                                proxy: FaultProxy, options: RegistryOptions) -> None:
    model = _model(tmp_path, 1_100_000)  # five 256 KiB PATCHes with the test options
    plain = BlobCache(tmp_path / "plain")
    expected = _built(plain, model)
    f = proxy.add(**fault) if fault else None
    repo = f"spec/{fault['action'] if fault else 'clean'}"
    cache = BlobCache(tmp_path / "spec")
    up = _uploader(proxy.host, repo, options)
    try:
        layer = _built(cache, model, up)
    finally:
        up.client.close()
    assert f is None or f.hits >= 1
    assert layer.descriptor == expected.descriptor and layer.diff_id == expected.diff_id and layer.held
    record, built = cache.ref(layer.descriptor.digest), plain.ref(layer.descriptor.digest)
    assert record is not None and built is not None
    assert record == replace(built, parts=tuple(p if isinstance(p, int) else replace(p, sha256=UNKNOWN)
                                                for p in built.parts)), "the record build writes, less the files' digests"
    assert up.sent == {layer.descriptor.digest: layer.descriptor.size}
    assert _blob_digest(plain_registry, repo, layer.descriptor.digest) == layer.descriptor.digest
    proxy.clear()
    b = ImageBuilder(cache, None)
    b.add_layer(layer, "model")
    image = b.build(0)
    res = push_image(image, cache, [f"{proxy.host}/{repo}:v1"], options=options,
                     committed=(proxy.host, repo, up.outcomes()))
    assert res.blobs_speculative == (layer.descriptor.digest,) and layer.descriptor.digest in res.blobs_uploaded
    assert not any(m == "HEAD" and layer.descriptor.digest in p for m, p, _ in proxy.log), "not asked about again"
    assert not any(m == "PATCH" or (m == "PUT" and layer.descriptor.digest in p) for m, p, _ in proxy.log), \
        "not sent again (only the config goes up)"
    pulled = requests.get(f"{plain_registry.url}/v2/{repo}/manifests/v1", timeout=10,
                          headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert pulled.headers["Docker-Content-Digest"] == image.digest


def test_a_file_changed_while_sent_leaves_no_blob_no_tag_no_record(tmp_path: Path, plain_registry: Registry,
                                                                   proxy: FaultProxy, options: RegistryOptions) -> None:
    model = _model(tmp_path, 24 << 20)
    weights = model / "weights.bin"
    cache = BlobCache(tmp_path / "spec")
    repo = "spec/changed"
    up = _uploader(proxy.host, repo, options)
    seen = [0]

    def on_bytes(n: int) -> None:  # once the first MiB left: the user rewrites a byte in place
        seen[0] += n
        if seen[0] == 1 << 20:
            time.sleep(0.05)  # past the coarse timestamp tick of the open's fstat
            with open(weights, "r+b") as f:
                f.seek(123)
                f.write(b"X")

    try:
        with pytest.raises(SourceChangedError) as err:
            _built(cache, model, up, on_bytes)
    finally:
        up.client.close()
    message = str(err.value)
    assert "\n" not in message and str(weights) in message and "changed" in message
    assert not any(m == "PUT" and "digest=" in p for m, p, _ in proxy.log), "no commit was sent"
    assert any(m == "DELETE" for m, _, _ in proxy.log), "the upload was cancelled"
    assert up.sent == {}
    assert not list((cache.root / "refs").rglob("*")) or not any(p.is_file() for p in (cache.root / "refs").rglob("*"))
    assert not list((cache.root / "layers").glob("*.json")) if (cache.root / "layers").exists() else True
    tags = requests.get(f"{plain_registry.url}/v2/{repo}/tags/list", timeout=10)
    assert tags.status_code == 404 or not tags.json().get("tags")


def test_a_failed_layer_stops_the_other_uploads(tmp_path: Path, plain_registry: Registry, proxy: FaultProxy,
                                               options: RegistryOptions) -> None:
    """Two new layers go up side by side; one fails (its file rewritten mid-upload): the other
    stops at its next chunk and is cancelled too, instead of sending the rest of its bytes
    for an image that will not be pushed; the error is the first layer's, naming its file."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "w.bin").write_bytes(os.urandom(8 << 20))
    (b / "w.bin").write_bytes(os.urandom(64 << 20))  # 256 PATCHes of 256 KiB if it went up whole
    cache = BlobCache(tmp_path / "spec")
    up = _uploader(proxy.host, "spec/abort", options)
    seen = [0]

    def on_bytes(n: int) -> None:
        seen[0] += n
        if seen[0] == 1 << 20:
            time.sleep(0.05)  # past the coarse timestamp tick of the open's fstat
            with open(a / "w.bin", "r+b") as f:
                f.write(b"X")

    def build(d: Path, report):  # type: ignore[no-untyped-def]
        return build_layer(cache, [LayerSource(d, f"/m/{d.name}")], compression=Compression("none"), epoch=0,
                           uploader=up, on_bytes=report)

    try:
        with pytest.raises(SourceChangedError, match=str(a / "w.bin")):
            build_in_parallel(build, [(a, on_bytes), (b, None)], up)
    finally:
        up.close()
    assert not any(m == "PUT" and "digest=" in p for m, p, _ in proxy.log), "nothing was committed"
    assert sum(m == "DELETE" for m, _, _ in proxy.log) == 2, "both uploads were cancelled"
    assert sum(m == "PATCH" for m, _, _ in proxy.log) < 128, "the other layer stopped early, not after its 64 MiB"
    assert up.sent == {}


def test_push_cli_uploads_new_layers_once_and_matches_build(tmp_path: Path, plain_registry: Registry) -> None:
    """``push`` (building) sends two new layers speculatively; the digest is ``build``'s; with
    ``--no-speculative-upload`` (the registry has the blobs now) nothing is uploaded."""
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "w.bin").write_bytes(os.urandom(3 << 20))
    layers = ["--layer", f"{a}:/m/a", "--layer", f"{b}:/m/b"]
    common = ["--plain", "--base", "scratch", *layers, "--compression", "none"]
    env = {**os.environ, "DOCKER_CONFIG": str(tmp_path / "dc"), "OCIASSEMBLE_CACHE_REPO": ""}
    cli = [sys.executable, "-m", "ociassemble.cli"]
    built = subprocess.run([*cli, "build", *common, "--cache-dir", str(tmp_path / "c1"), "--json",
                            "-o", f"oci:{tmp_path / 'out'}"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    ref = f"{plain_registry.host}/spec/cli:1"
    pushed = subprocess.run([*cli, "push", ref, *common, "--cache-dir", str(tmp_path / "c2"), "--json"],
                            capture_output=True, text=True, env=env, cwd=tmp_path)
    assert pushed.returncode == 0, pushed.stderr
    doc = json.loads(pushed.stdout)
    assert doc["digest"] == json.loads(built.stdout)["digest"]
    assert len(doc["blobs"]["speculative"]) == 2 and set(doc["blobs"]["speculative"]) <= set(doc["blobs"]["uploaded"])
    again = subprocess.run([*cli, "push", ref, *common, "--cache-dir", str(tmp_path / "c3"), "--json",
                            "--no-speculative-upload"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert doc["blobs"]["speculative"] == [] and doc["bytes_uploaded"] == 0 and len(doc["blobs"]["skipped"]) >= 2


def test_speculative_upload_off_in_the_config_hashes_first(tmp_path: Path, plain_registry: Registry) -> None:
    """``speculative_upload = false`` in ociassemble.toml: the push that builds sends nothing speculatively."""
    a = tmp_path / "a"
    a.mkdir()
    (a / "w.bin").write_bytes(os.urandom(1 << 20))
    (tmp_path / "ociassemble.toml").write_text("speculative_upload = false\n")
    env = {**os.environ, "DOCKER_CONFIG": str(tmp_path / "dc"), "OCIASSEMBLE_CACHE_REPO": ""}
    pushed = subprocess.run([sys.executable, "-m", "ociassemble.cli", "push", f"{plain_registry.host}/spec/cfg:1",
                             "--plain", "--base", "scratch", "--layer", f"{a}:/m", "--compression", "none",
                             "--cache-dir", str(tmp_path / "c"), "--json"], capture_output=True, text=True, env=env,
                            cwd=tmp_path)
    assert pushed.returncode == 0, pushed.stderr
    doc = json.loads(pushed.stdout)
    assert doc["blobs"]["speculative"] == [] and len(doc["blobs"]["uploaded"]) == 2
