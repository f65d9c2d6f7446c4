"""Every blob pulled is checked against its digest and size while it streams: a registry (or a
proxy) that sends other bytes stops the pull with the blob's digest in the error, and nothing
from it is cached, written or left in the cache's tmp/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from registry_fixtures import FaultProxy

from ociassemble.errors import DigestMismatchError
from ociassemble.image.cache import BlobCache
from ociassemble.registry import pull_image, push_image
from ociassemble.registry.pull import pull_to_layout
from tests.conftest import run_cli


def _via(proxy: FaultProxy, ref: str) -> str:
    return f"{proxy.host}/{ref.split('/', 1)[1]}"


def _nothing_from(cache: BlobCache, digest: str) -> None:
    assert not cache.has(digest), f"{digest} was cached from a corrupt download"
    assert not list(cache.tmp_dir.iterdir()), "a partial download was left in tmp/"
    assert cache.verify().clean


def test_a_corrupt_layer_stops_the_pull_names_the_digest_and_caches_nothing(pushed, proxy: FaultProxy,
                                                                            tmp_path: Path, options) -> None:
    image, ref = pushed
    layer = image.manifest.layers[0]
    proxy.add("GET", f"/blobs/{layer.digest}", "corrupt", after=layer.size // 2, times=None)
    cache = BlobCache(tmp_path / "fresh")
    dest = tmp_path / "layout"
    with pytest.raises(DigestMismatchError) as info:
        pull_to_layout(_via(proxy, ref), cache, dest, options=options)
    assert layer.digest in str(info.value) and "\n" not in str(info.value)
    assert ("GET", f"/v2/pull-verify/app/blobs/{layer.digest}", "corrupted") in proxy.log
    _nothing_from(cache, layer.digest)
    assert not dest.exists() and not list(tmp_path.glob(".layout.tmp-*"))

    # the same blob, sound this time: pulled and cached
    proxy.clear()
    assert pull_to_layout(_via(proxy, ref), cache, dest, options=options).digest == image.digest
    assert cache.has(layer.digest)


def test_a_corrupt_config_is_refused_before_it_is_cached(pushed, proxy: FaultProxy, tmp_path: Path, options) -> None:
    image, ref = pushed
    config = image.manifest.config
    proxy.add("GET", f"/blobs/{config.digest}", "corrupt", after=5, times=None)
    cache = BlobCache(tmp_path / "fresh")
    with pytest.raises(DigestMismatchError, match=config.digest):
        pull_image(_via(proxy, ref), cache, options=options)
    _nothing_from(cache, config.digest)


def test_a_corrupt_manifest_is_refused(pushed, proxy: FaultProxy, tmp_path: Path, options) -> None:
    image, ref = pushed
    proxy.add("GET", "/manifests/", "corrupt", after=len(image.manifest_bytes) // 2, times=None)
    cache = BlobCache(tmp_path / "fresh")
    with pytest.raises(DigestMismatchError, match=image.digest):
        pull_image(_via(proxy, ref.rsplit(":", 1)[0] + "@" + image.digest), cache, options=options)
    with pytest.raises(DigestMismatchError, match=image.digest):  # by tag: checked against the registry's digest
        pull_image(_via(proxy, ref), cache, options=options)
    assert not list(cache.iter_blobs())


def test_cli_pull_of_a_corrupt_layer_is_one_line_and_writes_nothing(pushed, proxy: FaultProxy, tmp_path: Path) -> None:
    image, ref = pushed
    layer = image.manifest.layers[0]
    proxy.add("GET", f"/blobs/{layer.digest}", "corrupt", after=0, times=None)
    out = tmp_path / "image.tar"
    cache = tmp_path / "cli-cache"  # not the fixture's cache (tmp_path/cache), which has every blob
    proc = run_cli("pull", _via(proxy, ref), f"oci-archive:{out}", "--cache-dir", str(cache))
    assert proc.returncode == 1, (proc.stderr, proxy.log)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and layer.digest in lines[0] and "corrupt" in lines[0], proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".image.tar.tmp-*"))
    _nothing_from(BlobCache(cache), layer.digest)


def test_a_registry_base_whose_config_lies_about_diff_ids_is_refused(plain_registry, cache: BlobCache, make_image,
                                                                     options, tmp_path: Path) -> None:
    """The layer is decompressed as it downloads; a diff_id its config gets wrong stops the
    build naming the layer, and the layer is not kept."""
    from ociassemble.image.assemble import ImageBuilder
    from ociassemble.image.layer import BuiltLayer

    honest = make_image(cache, {"model.bin": os.urandom(50_000)})
    layer = honest.manifest.layers[0]
    lie = "sha256:" + "ab" * 32
    b = ImageBuilder(cache, None)
    b.add_layer(BuiltLayer(layer, lie), "COPY /app")
    lying = b.build(0)
    ref = f"{plain_registry.host}/pull-verify/lying:1"
    push_image(lying, cache, [ref], options=options)
    fresh = tmp_path / "fresh"
    proc = run_cli("build", "--plain", "--base", ref, "-o", f"oci:{tmp_path / 'out'}", "--cache-dir", str(fresh))
    assert proc.returncode == 1, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr
    assert line.startswith("ociassemble: error: ") and f"layer {layer.digest} unpacks to diff_id {honest.config.diff_ids[0]}" in line, line
    assert f"config says {lie}" in line, line
    assert not (tmp_path / "out").exists()
    assert not BlobCache(fresh).has(layer.digest)
    assert not list((fresh / "diff_ids").iterdir())
    # the honest image from the same registry builds, and its verified pair is remembered
    good = f"{plain_registry.host}/pull-verify/honest:1"
    push_image(honest, cache, [good], options=options)
    proc = run_cli("build", "--plain", "--base", good, "-o", f"oci:{tmp_path / 'out'}", "--cache-dir", str(fresh))
    assert proc.returncode == 0, proc.stderr
    assert BlobCache(fresh).verified_diff_id(layer.digest) == honest.config.diff_ids[0]
