"""Multi-platform images and the registry (issue 16): an index built for linux/amd64 and
linux/arm64 pushed whole (each shared blob uploaded once, no tag before what it names),
read back by skopeo, pushed again from a layout, pulled per platform and whole, inspected,
and with one SBOM per platform.

The images are ``--plain --base scratch``: no base is needed for arm64, and the one
``--layer`` is the same blob in both platforms' manifests (only the configs differ).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from registry_fixtures import FaultProxy, Registry, skopeo

from tests.conftest import run_cli, two_platform_index

PLATFORMS = "linux/amd64,linux/arm64"


def _cli(*args: str) -> dict[str, Any]:
    proc = run_cli(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the layer's source folder, a cache folder) shared by the module's builds."""
    root = tmp_path_factory.mktemp("multi")
    src = root / "app"
    src.mkdir()
    (src / "score.py").write_text("def run(x):\n    return x\n")
    (src / "model.bin").write_bytes(os.urandom(200_000))
    return src, root / "cache"


def _build_flags(app: tuple[Path, Path]) -> list[str]:
    src, cache = app
    return ["--plain", "--base", "scratch", "--layer", f"{src}:/app", "--platform", PLATFORMS,
            "--cache-dir", str(cache)]


def _uploads(proxy: FaultProxy) -> list[str]:
    """The digest of each blob upload that reached the registry (the closing PUT ?digest=)."""
    out = []
    for method, path, status in list(proxy.log):
        m = re.search(r"/blobs/uploads/[^?]*\?(?:.*&)?digest=(sha256(?::|%3A)[0-9a-f]{64})", path)
        if method == "PUT" and m and status == 201:
            out.append(m.group(1).replace("%3A", ":"))
    return out


def test_multiplatform_push_pull_inspect_and_sboms(proxy: FaultProxy, plain_registry: Registry, app, tmp_path: Path):
    layout = tmp_path / "layout"
    built = _cli("build", *_build_flags(app), "-o", f"oci:{layout}")
    assert [p["platform"] for p in built["platforms"]] == ["linux/amd64", "linux/arm64/v8"]
    index_digest = built["digest"]
    per_platform = {p["platform"]: p["digest"] for p in built["platforms"]}

    # -- push the build (same inputs: the index from the cache) through the counting proxy
    ref = f"{proxy.host}/multi/app:1"
    digest_file = tmp_path / "digest"
    pushed = _cli("push", *_build_flags(app), ref, "--sbom", "--digest-file", str(digest_file))
    assert pushed["digest"] == index_digest
    assert digest_file.read_text().strip() == index_digest
    assert pushed["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert {m["platform"]: m["digest"] for m in pushed["manifests"]} == per_platform

    # each blob uploaded once: the shared layer too (one upload though two manifests name it)
    index = json.loads((layout / "blobs" / "sha256" / index_digest.split(":")[1]).read_bytes())
    manifests = {m["digest"]: json.loads((layout / "blobs" / "sha256" / m["digest"].split(":")[1]).read_bytes())
                 for m in index["manifests"]}
    layer_sets = [{l["digest"] for l in m["layers"]} for m in manifests.values()]
    shared = set.intersection(*layer_sets)
    assert shared, "the --layer blob is the same in both platforms' manifests"
    image_blobs = shared | {m["config"]["digest"] for m in manifests.values()} | set.union(*layer_sets)
    uploads = _uploads(proxy)
    for d in image_blobs:
        assert uploads.count(d) == 1, f"blob {d} uploaded {uploads.count(d)} times"
    assert len(set(pushed["blobs"]["uploaded"]) & image_blobs) == len(image_blobs)

    # order: every blob, then each platform manifest by digest, then the tag (the index); never a tag first
    manifest_puts = [(i, p.split("/manifests/")[1]) for i, (m, p, _s) in enumerate(proxy.log)
                     if m == "PUT" and "/multi/app/manifests/" in p]
    assert [ref for _i, ref in manifest_puts][:4] == [*per_platform.values(), "1", index_digest]
    first_manifest_put = manifest_puts[0][0]
    blob_puts = [i for i, (m, p, _s) in enumerate(proxy.log) if m == "PUT" and "/multi/app/blobs/uploads/" in p
                 and any(d in p.replace("%3A", ":") for d in image_blobs)]
    assert len(blob_puts) == len(image_blobs) and max(blob_puts) < first_manifest_put

    # -- skopeo reads the index and picks arm64 out of it
    direct = f"{plain_registry.host}/multi/app:1"
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{direct}"))
    assert raw["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [m["platform"] for m in raw["manifests"]] == [
        {"architecture": "amd64", "os": "linux"}, {"architecture": "arm64", "os": "linux", "variant": "v8"}]
    arm_dir = tmp_path / "skopeo-arm64"
    skopeo("copy", "--src-tls-verify=false", "--override-arch", "arm64", f"docker://{direct}", f"oci:{arm_dir}:x")
    got = json.loads((arm_dir / "index.json").read_text())["manifests"][0]["digest"]
    assert got == per_platform["linux/arm64/v8"]

    # -- one SBOM per platform, each referring to its platform's manifest
    sboms = {s["platform"]: s for s in pushed["sbom"]}
    assert set(sboms) == set(per_platform)
    for platform, s in sboms.items():
        assert s["subject"] == per_platform[platform]
        art = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{s['refs'][0].replace(proxy.host, plain_registry.host)}"))
        assert art["subject"]["digest"] == per_platform[platform]
        assert art["artifactType"] == "application/spdx+json"

    # -- push --from the layout: the same index digest; with --platform, that platform's image
    again = _cli("push", "--from", f"oci:{layout}", f"{plain_registry.host}/multi/copy:1",
                 "--cache-dir", str(tmp_path / "cache2"))
    assert again["digest"] == index_digest
    one = _cli("push", "--from", f"oci:{layout}", "--platform", "linux/arm64", f"{plain_registry.host}/multi/arm:1",
               "--cache-dir", str(tmp_path / "cache2"))
    assert one["digest"] == per_platform["linux/arm64/v8"]
    assert "manifests" not in one
    mirrored = _cli("push", "--from", direct, f"{plain_registry.host}/multi/mirror:1",
                    "--cache-dir", str(tmp_path / "cache5"))  # registry to registry: the index as it is
    assert mirrored["digest"] == index_digest
    assert set(mirrored["blobs"]["mounted"]) == image_blobs - {m["config"]["digest"] for m in manifests.values()}

    # -- pull one platform, and all of them (the registry's index digest kept)
    cache3 = ["--cache-dir", str(tmp_path / "cache3")]
    arm = _cli("pull", direct, f"oci:{tmp_path / 'pulled-arm'}", "--platform", "linux/arm64", *cache3)
    assert arm["digest"] == per_platform["linux/arm64/v8"]
    whole = _cli("pull", direct, f"oci-archive:{tmp_path / 'all.tar'}", "--platform", "all", *cache3)
    assert whole["digest"] == index_digest
    listed = _cli("inspect", f"oci-archive:{tmp_path / 'all.tar'}", *cache3)
    assert listed["kind"] == "index" and listed["digest"] == index_digest

    # -- inspect the registry image: the platforms, without downloading a layer
    proxy.clear()
    doc = _cli("inspect", ref, "--cache-dir", str(tmp_path / "cache4"))
    assert doc["kind"] == "index" and doc["digest"] == index_digest
    assert [(m["platform"], m["digest"]) for m in doc["manifests"]] == list(per_platform.items())
    assert all(m["size"] > 0 and m["totalSize"] > 0 for m in doc["manifests"])
    assert not [p for m, p, _s in proxy.log if m == "GET" and "/blobs/" in p and any(d in p for d in shared)]
    text = run_cli("inspect", ref, "--cache-dir", str(tmp_path / "cache4"))
    assert text.returncode == 0, text.stderr
    assert "linux/arm64/v8" in text.stdout and per_platform["linux/amd64"] in text.stdout
    arm_doc = _cli("inspect", ref, "--platform", "linux/arm64", "--cache-dir", str(tmp_path / "cache4"))
    assert arm_doc["kind"] == "image" and arm_doc["digest"] == per_platform["linux/arm64/v8"]
    assert arm_doc["platform"] == {"os": "linux", "architecture": "arm64", "variant": "v8"}


def _base_info(architecture: str) -> Any:
    from ociassemble.azureml.baseinfo import BaseInfo

    return BaseInfo(python="3.11", python_full="3.11.2", glibc="2.36", architecture=architecture,
                    has=("python3", "nginx", "runsvdir"), dpkg_architecture=architecture)


def test_registry_cache_never_serves_an_arm64_deps_layer_to_amd64(plain_registry: Registry, tmp_path: Path):
    """The deps entry's key holds pex's complete platform (from the base's architecture), and
    base-info entries are keyed by the base's config digest (which names its architecture):
    an arm64 build's entries are misses for an amd64 build, never hits."""
    from ociassemble.azureml.deps import deps_key
    from ociassemble.image.cache import BlobCache
    from ociassemble.image.compress import Compression
    from ociassemble.image.layer import LayerSource, build_layer
    from ociassemble.registry import FAST_RETRY, RegistryOptions
    from ociassemble.registry.layercache import RegistryLayerCache, deps_tag

    reqs = tmp_path / "requirements.txt"
    reqs.write_text("numpy==1.26.4\n")
    arm_key, amd_key = deps_key([reqs], _base_info("arm64")), deps_key([reqs], _base_info("amd64"))
    assert arm_key.inputs["platform"]["marker_environment"]["platform_machine"] == "aarch64"  # type: ignore[index]
    gzip = Compression.parse("gzip")
    arm_tag, amd_tag = arm_key.layer_key(gzip, 0), amd_key.layer_key(gzip, 0)
    assert deps_tag(arm_tag) != deps_tag(amd_tag)

    cache = BlobCache(tmp_path / "cache")
    site = tmp_path / "site"
    (site / "numpy").mkdir(parents=True)
    (site / "numpy" / "__init__.py").write_text("# built for aarch64\n")
    layer = build_layer(cache, [LayerSource(site, "/var/azureml-deps")], compression=gzip, epoch=0)
    options = RegistryOptions(retry=FAST_RETRY)
    repo = f"{plain_registry.host}/multi/cache"
    writer = RegistryLayerCache(repo, cache, options, read=False, write=True)
    writer.note_deps(arm_tag, layer)
    writer.note_baseinfo("sha256:" + "a" * 64, {"architecture": "arm64"})  # the arm64 base's config digest
    assert writer.write() == 3  # the layer, the deps entry, the base info

    reader = RegistryLayerCache(repo, BlobCache(tmp_path / "fresh"), options, read=True, write=False)
    assert reader.find_deps(amd_tag, gzip) is None
    assert reader.find_baseinfo("sha256:" + "b" * 64) is None  # another config: another base
    assert reader.stats.rejected == 0  # misses, not entries found and refused
    hit = reader.find_deps(arm_tag, gzip)
    assert hit is not None and hit.diff_id == layer.diff_id
    assert reader.find_baseinfo("sha256:" + "a" * 64) == {"architecture": "arm64"}


# -- the ordering contract for an index, through the library, with faults -------------------


def _index_of(cache: Any, tmp_path: Path) -> Any:
    """An amd64 + arm64 index whose one layer (~600 KiB, chunked with the test options) both share."""
    return two_platform_index(cache, tmp_path / "src", {"model.bin": os.urandom(600_000)})


def _errors(code: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": code.lower(), "detail": None}]}).encode()


def _tagged(reg: Registry, repo: str, tag: str) -> str | None:
    import requests

    r = requests.get(f"{reg.url}/v2/{repo}/manifests/{tag}", timeout=10,
                     headers={"Accept": "application/vnd.oci.image.index.v1+json"})
    return r.headers.get("Docker-Content-Digest") if r.status_code == 200 else None


def test_an_index_whose_platform_manifest_is_refused_gets_no_tag(proxy: FaultProxy, plain_registry: Registry,
                                                                  cache, options, tmp_path: Path):
    from ociassemble.errors import RegistryError
    from ociassemble.registry import push_image

    index = _index_of(cache, tmp_path)
    arm = index.images[1]
    refused = proxy.add("PUT", f"/manifests/{arm.digest}$", "status", status=400, times=None,
                        body=_errors("MANIFEST_INVALID"))
    with pytest.raises(RegistryError) as info:
        push_image(index, cache, [f"{proxy.host}/multi/refused:1"], options=options)
    assert refused.hits == 1 and "\n" not in str(info.value)
    assert _tagged(plain_registry, "multi/refused", "1") is None  # the tag never named an index missing a manifest
    assert not [p for m, p, _s in proxy.log if m == "PUT" and p.endswith(("/manifests/1", f"/manifests/{index.digest}"))]

    proxy.clear()  # the registry accepts it now: the re-run sends no blob again and tags the index
    result = push_image(index, cache, [f"{proxy.host}/multi/refused:1"], options=options)
    assert result.digest == index.digest == _tagged(plain_registry, "multi/refused", "1")
    assert not result.blobs_uploaded and proxy.blob_bytes == 0


def test_manifest_blob_unknown_on_a_platform_manifest_resends_the_shared_layer_once(
        proxy: FaultProxy, plain_registry: Registry, cache, options, tmp_path: Path):
    from ociassemble.registry import push_image

    index = _index_of(cache, tmp_path)
    arm, shared = index.images[1], index.images[1].manifest.layers[0]
    put = proxy.add("PUT", f"/manifests/{arm.digest}$", "status", status=400, body=_errors("MANIFEST_BLOB_UNKNOWN"))
    head = proxy.add("HEAD", f"/blobs/{shared.digest}", "status", status=404, skip=1)  # gone at the second look
    result = push_image(index, cache, [f"{proxy.host}/multi/racy:1"], options=options)
    assert put.hits == 1 and head.hits == 1
    assert result.digest == _tagged(plain_registry, "multi/racy", "1") == index.digest
    assert result.manifests == {"linux/amd64": index.images[0].digest, "linux/arm64/v8": arm.digest}
    uploads = _uploads(proxy)
    assert uploads.count(shared.digest) == 2  # once at first, once when the registry said it was gone
    assert uploads.count(index.images[0].manifest.config.digest) == 1
    tag_put = next(i for i, (m, p, _s) in enumerate(proxy.log) if m == "PUT" and p.endswith("/manifests/1"))
    last_upload = max(i for i, (m, p, _s) in enumerate(proxy.log) if m == "PUT" and "/blobs/uploads/" in p)
    assert last_upload < tag_put
