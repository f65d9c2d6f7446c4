"""The registry as the fleet's layer cache (issue 9), against a real docker-registry.

Runner A (its own empty cache dir) builds and pushes with ``--cache-to``; runner B (another
empty cache dir, another copy of the working dir) builds the same inputs with
``--cache-from``: B compresses nothing, runs no pex, downloads no base layer, uploads no
blob byte, and pushes the same digest. Concurrent writers keep each other's entries; a
poisoned entry is detected, warned about, and built around.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from registry_fixtures import FaultProxy, Registry, start_registry, stop_pid

from ociassemble.image.cache import BlobCache
from ociassemble.image.compress import Compression
from ociassemble.image.oci import Descriptor, Manifest, MediaType
from ociassemble.imageio import load_image
from ociassemble.registry import push_image
from ociassemble.registry.layercache import A_DIFF_ID, ARTIFACT_TYPE, layer_tag
from tests.conftest import run_cli

#: the model of the fresh-runner test: 256 MiB of float32 weights
MODEL_BYTES = 256 << 20


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = start_registry(tmp_path_factory.mktemp("registry-cache"))
    yield reg
    stop_pid(reg.proc)


@pytest.fixture
def counting(registry: Registry) -> Iterator[FaultProxy]:
    """A proxy in front of the registry counting the blob bytes that reach it."""
    p = FaultProxy(registry.port)
    yield p
    p.stop()


def _cli(*args: str, cwd: Path | None = None) -> dict[str, Any]:
    proc = run_cli(*args, "--json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    doc["_stderr"] = proc.stderr
    return doc


def _weights(path: Path, size: int) -> None:
    import numpy as np

    rng = np.random.default_rng(9)
    with open(path, "wb") as f:
        left = size // 4
        while left:
            n = min(left, 16 << 20)
            f.write(rng.random(n, dtype=np.float32).tobytes())
            left -= n


def _runner_dir(root: Path, example: Path, weights: Path) -> Path:
    """A runner's own checkout: the example project (same folder name) and its weights."""
    proj = root / example.name
    shutil.copytree(example, proj, ignore=shutil.ignore_patterns("image.tar", "__pycache__"))
    (proj / "weights").mkdir()
    shutil.copyfile(weights, proj / "weights" / "weights.bin")
    return proj


def test_fresh_runner_compresses_nothing_runs_no_pex_and_uploads_nothing(
        registry: Registry, counting: FaultProxy, debian_base: str, shared_cache: BlobCache,
        trained_example: Path, tmp_path: Path) -> None:
    # the Debian base, from the registry (as CI runners get it)
    base_img = load_image(debian_base, shared_cache)
    push_image(base_img, shared_cache, [f"{registry.host}/base/bookworm:1"])
    weights = tmp_path / "weights.bin"
    _weights(weights, MODEL_BYTES)
    a_dir = _runner_dir(tmp_path / "runner-a", trained_example, weights)
    b_dir = _runner_dir(tmp_path / "runner-b", trained_example, weights)
    a_cache, b_cache = tmp_path / "cache-a", tmp_path / "cache-b"
    # runner A has resolved these deps before (pex is not what this test is about): its
    # cache gets the shared test cache's resolved deps, copied, when they are there
    if (shared_cache.root / "deps").is_dir():
        a_cache.mkdir()
        subprocess.run(["cp", "-a", str(shared_cache.root / "deps"), str(a_cache / "deps")], check=True)
    host = counting.host
    cache_repo = f"{host}/team/cache"
    flags = ["--base", f"{host}/base/bookworm:1", "--model", "model.pkl:diabetes:1",
             "--model", "weights:weights:1", "--compression", "gzip"]

    a = _cli("push", f"{host}/team/model:a", *flags, "--cache-dir", str(a_cache), "--cache-to", cache_repo, cwd=a_dir)
    assert a["work"]["layers_compressed"] == 6 and a["work"]["layers_from_registry_cache"] == 0
    assert a["registry_cache"]["write"] and not a["registry_cache"]["read"]
    # one entry per layer, the deps entry and the base info
    assert a["registry_cache"]["written"] == 8, a["registry_cache"]
    assert not a["registry_cache"]["warnings"]
    assert a["bytes_uploaded"] > MODEL_BYTES // 2

    counting.clear()
    b = _cli("push", f"{host}/team/model:b", *flags, "--cache-dir", str(b_cache), "--cache-from", cache_repo, cwd=b_dir)
    assert b["digest"] == a["digest"]
    assert b["work"] == {"layers_compressed": 0, "layers_held_by_reference": 0, "layers_stored_uncompressed": 0,
                         "layers_reused": 0, "layers_from_registry_cache": 6,
                         "pex_ran": False, "locked": False}
    assert all(layer["source"] == "registry" for layer in b["layers"])
    assert b["bytes_uploaded"] == 0 and counting.blob_bytes == 0
    assert b["registry_cache"]["written"] == 0 and not b["registry_cache"]["warnings"]
    # B read no base layer (the base info came from the cache) and wrote no blob locally
    base_layers = {d.digest for d in base_img.manifest.layers}
    assert not any(m == "GET" and "/blobs/" in p and p.rsplit("/", 1)[-1] in base_layers for m, p, _ in counting.log)
    assert not [p for p in (b_cache / "blobs" / "sha256").iterdir() if p.stat().st_size > 1 << 20]
    assert not (b_cache / "deps").exists() or not any((b_cache / "deps").iterdir())

    # another repository: every layer is mounted (from the cache repo or the base's), only the config travels
    c = _cli("push", f"{host}/other/model:c", *flags, "--cache-dir", str(tmp_path / "cache-c"),
             "--cache-repo", cache_repo, cwd=b_dir)
    assert c["digest"] == a["digest"] and c["work"]["layers_compressed"] == 0
    assert len(c["blobs"]["mounted"]) == len(base_layers) + 6 and len(c["blobs"]["uploaded"]) == 1
    assert c["registry_cache"]["written"] == 0


def test_a_gzip_deps_entry_is_found_with_auto_compression(
        registry: Registry, debian_base: str, shared_cache: BlobCache, trained_example: Path, tmp_path: Path) -> None:
    """With the default ``auto``, the deps entry records the codec auto chose (gzip for a
    deps tree); a fresh runner takes it if this machine makes the same bytes at that level:
    the lookup goes through every gzip level's id (it once named a missing GZIP_LEVELS)."""
    base_img = load_image(debian_base, shared_cache)
    push_image(base_img, shared_cache, [f"{registry.host}/base/bookworm:2"])
    a_dir = tmp_path / "runner-a" / trained_example.name
    b_dir = tmp_path / "runner-b" / trained_example.name
    for d in (a_dir, b_dir):
        shutil.copytree(trained_example, d, ignore=shutil.ignore_patterns("image.tar", "__pycache__"))
    a_cache = tmp_path / "cache-a"
    if (shared_cache.root / "deps").is_dir():  # resolved deps, as in the test above: pex is not the point
        a_cache.mkdir()
        subprocess.run(["cp", "-a", str(shared_cache.root / "deps"), str(a_cache / "deps")], check=True)
    cache_repo = f"{registry.host}/team/auto-cache"
    flags = ["--base", f"{registry.host}/base/bookworm:2", "--model", "model.pkl:diabetes:1"]
    a = _cli("push", f"{registry.host}/team/auto:a", *flags, "--cache-dir", str(a_cache), "--cache-to", cache_repo,
             cwd=a_dir)
    deps_a = [layer for layer in a["layers"] if layer["what"] == "python-deps"]
    assert len(deps_a) == 1 and deps_a[0]["mediaType"] == MediaType.LAYER_GZIP, a["layers"]

    b = _cli("push", f"{registry.host}/team/auto:b", *flags, "--cache-dir", str(tmp_path / "cache-b"),
             "--cache-from", cache_repo, cwd=b_dir)
    assert b["digest"] == a["digest"]
    deps_b = [layer for layer in b["layers"] if layer["what"] == "python-deps"]
    assert deps_b[0]["source"] == "registry" and deps_b[0]["digest"] == deps_a[0]["digest"]
    assert not b["work"]["pex_ran"]
    assert b["registry_cache"]["rejected"] == 0 and not b["registry_cache"]["warnings"], b["registry_cache"]


def _plain_layer_dirs(root: Path, files: dict[str, bytes]) -> list[str]:
    out = []
    for name, data in files.items():
        d = root / name
        d.mkdir(parents=True)
        (d / f"{name}.bin").write_bytes(data)
        out += ["--layer", f"{d}:/data/{name}"]
    return out


def _tags(registry: Registry, repo: str) -> set[str]:
    resp = requests.get(f"{registry.url}/v2/{repo}/tags/list", timeout=10)
    resp.raise_for_status()
    return set(resp.json().get("tags") or [])


def test_concurrent_writers_keep_each_others_entries(registry: Registry, tmp_path: Path) -> None:
    shared = os.urandom(3 << 20)
    images = {"one": {"shared": shared, "own": os.urandom(2 << 20)},
              "two": {"shared": shared, "own": os.urandom(2 << 20)}}
    cache_repo = f"{registry.host}/conc/cache"
    layer_flags = {n: _plain_layer_dirs(tmp_path / n, files) for n, files in images.items()}
    procs = {n: subprocess.Popen([sys.executable, "-m", "ociassemble.cli", "push", f"{registry.host}/conc/{n}:1",
                                  *layer_flags[n], "--compression", "gzip", "--cache-dir", str(tmp_path / f"cache-{n}"),
                                  "--cache-to", cache_repo, "--json"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in images}
    results = {}
    for n, p in procs.items():
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        results[n] = json.loads(out)
        assert results[n]["registry_cache"]["written"] == 2 and not results[n]["registry_cache"]["warnings"], results[n]["registry_cache"]
    gzip_id = Compression.parse("gzip").id
    expected = {layer_tag(l["diffID"], gzip_id) for r in results.values() for l in r["layers"]}
    assert len(expected) == 3  # the shared layer is one key, written by both
    assert expected <= _tags(registry, "conc/cache")
    # each image, rebuilt by a fresh runner, finds all its layers
    for n in images:
        again = _cli("build", *layer_flags[n], "--compression", "gzip", "--cache-dir", str(tmp_path / f"fresh-{n}"),
                     "--cache-from", cache_repo, "-o", f"oci:{tmp_path / f'out-{n}'}")
        assert again["work"]["layers_from_registry_cache"] == 2 and again["work"]["layers_compressed"] == 0
        assert again["digest"] == results[n]["digest"]
        # the oci: output needed the bytes: they were fetched from the cache repository, verified
        layout = json.loads((tmp_path / f"out-{n}" / "index.json").read_text())
        assert layout["manifests"][0]["digest"] == results[n]["digest"]


def _put_entry(registry: Registry, repo: str, tag: str, manifest: Manifest) -> None:
    resp = requests.put(f"{registry.url}/v2/{repo}/manifests/{tag}", data=manifest.to_bytes(),
                        headers={"Content-Type": MediaType.MANIFEST}, timeout=10)
    assert resp.status_code == 201, resp.text


def _entry(registry: Registry, repo: str, tag: str) -> Manifest:
    resp = requests.get(f"{registry.url}/v2/{repo}/manifests/{tag}", headers={"Accept": MediaType.MANIFEST},
                        timeout=10)
    resp.raise_for_status()
    return Manifest.from_json(resp.json())


@pytest.mark.parametrize("poison", ["missing-blob", "wrong-size", "other-layer"])
def test_a_poisoned_entry_is_detected_and_built_around(registry: Registry, tmp_path: Path, poison: str) -> None:
    from dataclasses import replace

    repo = f"poison/{poison}"
    cache_repo = f"{registry.host}/{repo}-cache"
    flags = [*_plain_layer_dirs(tmp_path / "src", {"a": os.urandom(1 << 20), "b": os.urandom(1 << 20)}),
             "--compression", "gzip"]
    first = _cli("push", f"{registry.host}/{repo}:1", *flags, "--cache-dir", str(tmp_path / "c1"), "--cache-to", cache_repo)
    gzip_id = Compression.parse("gzip").id
    victim, other = first["layers"]
    tag = layer_tag(victim["diffID"], gzip_id)
    good = _entry(registry, f"{repo}-cache", tag)
    blob = good.layers[0]
    if poison == "missing-blob":
        # the entry stays; its blob goes from the cache repository
        resp = requests.delete(f"{registry.url}/v2/{repo}-cache/blobs/{blob.digest}", timeout=10)
        assert resp.status_code == 202, resp.text
    elif poison == "wrong-size":
        _put_entry(registry, f"{repo}-cache", tag, replace(good, layers=(replace(blob, size=blob.size + 1),)))
    else:  # the entry of another layer, put under this layer's tag
        _put_entry(registry, f"{repo}-cache", tag, _entry(registry, f"{repo}-cache", layer_tag(other["diffID"], gzip_id)))

    second = _cli("push", f"{registry.host}/{repo}:2", *flags, "--cache-dir", str(tmp_path / "c2"),
                  "--cache-repo", cache_repo)
    assert second["digest"] == first["digest"]  # a correct image, the same one
    assert second["work"]["layers_compressed"] == 1 and second["work"]["layers_from_registry_cache"] == 1
    warnings = second["registry_cache"]["warnings"]
    assert second["registry_cache"]["rejected"] == 1 and len(warnings) == 1 and tag in warnings[0]
    assert "warning" in second["_stderr"] and tag in second["_stderr"]
    # that push rewrote the entry: a third runner finds both layers again
    assert second["registry_cache"]["written"] == 1
    if poison == "other-layer":
        assert _entry(registry, f"{repo}-cache", tag).annotations[A_DIFF_ID] == victim["diffID"]  # type: ignore[index]
    third = _cli("build", *flags, "--cache-dir", str(tmp_path / "c3"), "--cache-from", cache_repo,
                 "-o", f"oci:{tmp_path / 'out'}")
    assert third["work"]["layers_from_registry_cache"] == 2 and not third["registry_cache"]["warnings"]
    assert third["digest"] == first["digest"]


def test_an_unreachable_cache_is_one_warning_and_a_normal_build(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    flags = [*_plain_layer_dirs(tmp_path / "src", {"a": b"a" * 1000, "b": b"b" * 1000})]
    done = _cli("build", *flags, "--cache-dir", str(tmp_path / "c"), "--cache-from", f"127.0.0.1:{port}/x/cache",
                "-o", f"oci:{tmp_path / 'out'}")
    assert done["work"]["layers_compressed"] == 2
    assert len(done["registry_cache"]["warnings"]) == 1 and "cannot be read" in done["registry_cache"]["warnings"][0]


def test_artifact_entries_are_what_the_docs_say(registry: Registry, tmp_path: Path) -> None:
    flags = _plain_layer_dirs(tmp_path / "src", {"a": b"x" * 5000})
    first = _cli("push", f"{registry.host}/shape/app:1", *flags, "--cache-dir", str(tmp_path / "c"),
                 "--cache-to", f"{registry.host}/shape/cache")
    layer = first["layers"][0]
    entry = _entry(registry, "shape/cache", layer_tag(layer["diffID"], Compression.parse("gzip").id))
    assert entry.artifact_type == ARTIFACT_TYPE and entry.config.media_type == MediaType.EMPTY
    assert entry.layers == (Descriptor(layer["mediaType"], layer["digest"], layer["size"]),)
    assert entry.annotations is not None and entry.annotations[A_DIFF_ID] == layer["diffID"]
