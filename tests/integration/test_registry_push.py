"""Pushing to a real registry (distribution 2.8) and reading it back with skopeo."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest
import requests
from registry_fixtures import FaultProxy, Registry, skopeo

from ociassemble.errors import RegistryError
from ociassemble.image.cache import BlobCache
from ociassemble.registry import pull_image, push_image


def _blob_in_registry(reg: Registry, repo: str, digest: str) -> bool:
    return requests.head(f"{reg.url}/v2/{repo}/blobs/{digest}", timeout=10).status_code == 200


def test_registry_push_then_skopeo_reads_back(plain_registry, cache, make_image, options, tmp_path):
    image = make_image(cache, {"score.py": b"def run(x):\n    return x\n", "model.bin": os.urandom(300_000)})
    repo = "push/readback"
    refs = [f"{plain_registry.host}/{repo}:1.0", f"{plain_registry.host}/{repo}:latest"]
    result = push_image(image, cache, refs, options=options)

    assert result.digest == image.digest
    assert result.refs == tuple(refs)
    assert set(result.blobs_uploaded) == {d.digest for d in image.blobs()}
    assert result.bytes_uploaded == sum(d.size for d in image.blobs())

    inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{refs[0]}"))
    assert inspected["Digest"] == image.digest
    assert sorted(inspected["RepoTags"]) == ["1.0", "latest"]
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{refs[1]}")
    assert raw.encode() == image.manifest_bytes

    out = tmp_path / "copied"
    skopeo("copy", "--src-tls-verify=false", f"docker://{refs[0]}", f"oci:{out}:copied")
    index = json.loads((out / "index.json").read_text())
    assert index["manifests"][0]["digest"] == image.digest
    for d in image.blobs():  # skopeo verified every blob's digest on the way
        assert (out / "blobs" / "sha256" / d.digest.split(":")[1]).stat().st_size == d.size
    # and by digest
    by_digest = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{plain_registry.host}/{repo}@{image.digest}"))
    assert by_digest["Digest"] == image.digest


def test_registry_second_push_uploads_no_blob_bytes(proxy: FaultProxy, cache, make_image, options):
    image = make_image(cache, {"model.bin": os.urandom(500_000)})
    ref = f"{proxy.host}/push/again:v1"
    first = push_image(image, cache, [ref], options=options)
    assert proxy.blob_bytes >= sum(d.size for d in image.blobs())
    proxy.clear()

    second = push_image(image, cache, [ref], options=options)
    assert second.digest == first.digest == image.digest
    assert proxy.blob_bytes == 0  # counted at the registry's door, not by the client
    assert second.bytes_uploaded == 0
    assert set(second.blobs_skipped) == {d.digest for d in image.blobs()}
    assert not second.blobs_uploaded and not second.blobs_mounted
    assert not [e for e in proxy.log if e[0] in ("POST", "PATCH")]


def test_registry_changed_top_layer_uploads_only_that_layer(proxy: FaultProxy, cache, make_image, options):
    base = make_image(cache, {"model.bin": os.urandom(400_000)}, dest="/model")
    v1 = make_image(cache, {"score.py": b"print('v1')\n"}, base=base)
    ref = f"{proxy.host}/push/edit:latest"
    push_image(v1, cache, [ref], options=options)
    proxy.clear()

    v2 = make_image(cache, {"score.py": b"print('v2: edited')\n"}, base=base)
    result = push_image(v2, cache, [ref], options=options)
    new_top, new_config = v2.manifest.layers[-1], v2.manifest.config
    assert set(result.blobs_uploaded) == {new_top.digest, new_config.digest}
    assert base.manifest.layers[0].digest in result.blobs_skipped
    assert proxy.blob_bytes == new_top.size + new_config.size
    assert result.bytes_uploaded == new_top.size + new_config.size


def test_registry_base_in_repo_a_is_mounted_into_repo_b(plain_registry, proxy: FaultProxy, tmp_path, make_image, options):
    build_cache = BlobCache(tmp_path / "build-cache")
    base = make_image(build_cache, {"python/lib.bin": os.urandom(600_000)}, dest="/usr")
    push_image(base, build_cache, [f"{plain_registry.host}/mount/base:3.11"], options=options)

    # a fresh machine: the base comes from the registry, its layers are never downloaded
    cache = BlobCache(tmp_path / "cache")
    pulled = pull_image(f"{proxy.host}/mount/base:3.11", cache, options=options)
    app = make_image(cache, {"score.py": b"print('app')\n"}, base=pulled)
    proxy.clear()
    result = push_image(app, cache, [f"{proxy.host}/mount/app:1"], options=options)

    base_layer = base.manifest.layers[0].digest
    assert result.blobs_mounted == (base_layer,)
    assert not cache.has(base_layer)  # mounted, so never fetched
    assert proxy.blob_bytes == app.manifest.layers[-1].size + app.manifest.config.size
    assert any(m == "POST" and "mount=" in p and s == 201 for m, p, s in proxy.log)
    assert _blob_in_registry(plain_registry, "mount/app", base_layer)
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{plain_registry.host}/mount/app:1"))
    assert inspected["Digest"] == app.digest


def test_registry_mount_refused_falls_back_to_upload(plain_registry, proxy: FaultProxy, tmp_path, make_image, options):
    """A base whose blobs the registry cannot mount (202) is fetched from the source and uploaded."""
    src_cache = BlobCache(tmp_path / "src-cache")
    base = make_image(src_cache, {"lib.bin": os.urandom(200_000)})
    push_image(base, src_cache, [f"{plain_registry.host}/mount/src:1"], options=options)
    cache = BlobCache(tmp_path / "cache")
    pulled = pull_image(f"{proxy.host}/mount/src:1", cache, options=options)
    # a "from" repository that does not hold the blob: the registry answers the mount
    # with 202 and an upload Location (as registries do for blobs they will not share)
    proxy.clear()
    pulled = replace(pulled, origin=f"{proxy.host}/mount/nowhere")
    result = push_image(pulled, cache, [f"{proxy.host}/mount/dst:1"], options=options)
    layer = base.manifest.layers[0].digest
    assert layer in result.blobs_uploaded and not result.blobs_mounted
    assert any(m == "POST" and "mount=" in p and s == 202 for m, p, s in proxy.log)
    assert cache.has(layer)  # fetched lazily from the source for the upload
    assert _blob_in_registry(plain_registry, "mount/dst", layer)


def test_registry_push_of_pulled_image_keeps_its_digest(plain_registry, cache, make_image, options, tmp_path):
    image = make_image(cache, {"a.txt": b"a" * 1000})
    push_image(image, cache, [f"{plain_registry.host}/copy/src:1"], options=options)
    pulled = pull_image(f"{plain_registry.host}/copy/src:1", BlobCache(tmp_path / "fresh"), options=options)
    result = push_image(pulled, BlobCache(tmp_path / "fresh"), [f"{plain_registry.host}/copy/dst:1"], options=options)
    assert result.digest == image.digest
    assert set(result.blobs_mounted) == {d.digest for d in image.manifest.layers}


def test_registry_push_rejects_digest_of_another_image(plain_registry, cache, make_image, options):
    image = make_image(cache, {"a.txt": b"x"})
    with pytest.raises(RegistryError, match="pins digest"):
        push_image(image, cache, [f"{plain_registry.host}/x/y@sha256:" + "0" * 64], options=options)

