"""An OCI layout's layers are held in the cache by reference to the layout's own files
(``diffid.stage_layer(held=)``): reading a layout of a model (``push --from oci:``, a base,
``inspect``) verifies it in one read and writes no second copy of its gigabytes; a blob of
the layout that changes afterwards is seen, and never handed out as the digest's bytes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import requests

from ociassemble.errors import DigestMismatchError, SourceChangedError
from ociassemble.image.cache import BlobCache
from ociassemble.imageio import load_image, write_image
from ociassemble.image.oci import canonical_json
from tests.conftest import run_cli
from tests.integration.test_hostile_bases import ROOT, _gz, _sha, f, tar_bytes

MIB = 1 << 20


def _layout(root: Path, weights: bytes) -> dict[str, str]:
    """A layout of two layers: the base's (gzip) and a model's (an uncompressed tar, as ours are)."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    base, model = tar_bytes(ROOT), tar_bytes([f("var/azureml-app/model.bin", weights)])
    layers = [("application/vnd.oci.image.layer.v1.tar+gzip", _gz(base)), ("application/vnd.oci.image.layer.v1.tar", model)]
    for _, blob in layers:
        (blobs / _sha(blob)[7:]).write_bytes(blob)
    config = canonical_json({"architecture": "amd64", "os": "linux", "config": {},
                             "rootfs": {"type": "layers", "diff_ids": [_sha(base), _sha(model)]}})
    (blobs / _sha(config)[7:]).write_bytes(config)
    manifest = canonical_json({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                          "digest": _sha(config), "size": len(config)},
                               "layers": [{"mediaType": m, "digest": _sha(b), "size": len(b)} for m, b in layers]})
    (blobs / _sha(manifest)[7:]).write_bytes(manifest)
    (root / "index.json").write_bytes(canonical_json({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _sha(manifest), "size": len(manifest)}]}))
    (root / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')
    return {"manifest": _sha(manifest), "base": _sha(_gz(base)), "model": _sha(model)}


def _bytes_under(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def test_a_layouts_layers_are_held_by_reference_not_copied(tmp_path: Path) -> None:
    layout, cache_dir = tmp_path / "layout", tmp_path / "cache"
    names = _layout(layout, os.urandom(MIB) * 24)
    cache = BlobCache(cache_dir)
    image = load_image(f"oci:{layout}", cache)
    assert image.digest == names["manifest"]
    assert _bytes_under(cache_dir) < MIB  # records, not the 24 MiB layer
    for layer in ("base", "model"):
        ref = cache.ref(names[layer])
        assert ref is not None and [p.path for p in ref.files] == [str(layout / "blobs" / "sha256" / names[layer][7:])]
        with cache.open(names[layer]) as blob:
            assert _sha(blob.read()) == names[layer]
    # written out again: linked from the layout's files, and still held (the link moved their ctime)
    write_image(image, cache, f"oci:{tmp_path / 'out'}")
    out_blob = tmp_path / "out" / "blobs" / "sha256" / names["model"][7:]
    assert out_blob.stat().st_ino == (layout / "blobs" / "sha256" / names["model"][7:]).stat().st_ino
    assert cache.has_current(names["model"])
    # the layout's blob overwritten in place with other bytes: seen, never handed out as the digest's
    blob_path = layout / "blobs" / "sha256" / names["model"][7:]
    os.unlink(out_blob)
    data = bytearray(blob_path.read_bytes())
    data[-2000] ^= 1
    blob_path.write_bytes(bytes(data))
    assert not cache.has_current(names["model"])
    with pytest.raises(SourceChangedError, match=str(blob_path)), cache.open(names["model"]) as blob:
        blob.read()
    with pytest.raises(DigestMismatchError):
        load_image(f"oci:{layout}", cache)


def test_push_from_a_layout_writes_no_copy_of_its_layers(tmp_path: Path, plain_registry) -> None:  # type: ignore[no-untyped-def]
    """``push --from oci:`` with a cache that never saw the image: the model goes up and the
    cache holds records only; the pushed manifest is the layout's."""
    layout, cache_dir = tmp_path / "layout", tmp_path / "cache"
    names = _layout(layout, os.urandom(MIB) * 16)
    ref = f"{plain_registry.host}/byref/model:1"
    proc = run_cli("push", "--from", f"oci:{layout}", ref, "--cache-dir", str(cache_dir), "--json",
                   env={"DOCKER_CONFIG": str(tmp_path / "docker-config")})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["digest"] == names["manifest"]
    assert _bytes_under(cache_dir) < MIB
    r = requests.get(f"{plain_registry.url}/v2/byref/model/blobs/{names['model']}", timeout=30)
    assert r.status_code == 200 and _sha(r.content) == names["model"]
