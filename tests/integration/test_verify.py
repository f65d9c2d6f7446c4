"""`ociassemble verify`: rebuild from the inputs and compare with an image in a real registry (and in
layouts and archives skopeo wrote): the same image exits 0 with its digest; otherwise exit 1 names
the first difference: the file that changed, only the compression, the layer count, the config key."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from recipe_fixtures import QuickRecipe
from registry_fixtures import Registry, skopeo

from ociassemble.image.cache import BlobCache
from ociassemble.image.digest import Digest
from ociassemble.image.verify import compare_images
from ociassemble.imageio import load_image
from tests.conftest import run_cli

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")

NO_TLS = ("--src-tls-verify=false", "--dest-tls-verify=false")


def _verify(*args: str) -> tuple[int, dict, str]:
    """``ociassemble verify ARGS --json``: (exit code, the JSON document, stderr)."""
    proc = run_cli("verify", *args, "--json")
    assert proc.returncode in (0, 1), proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stderr


@pytest.fixture(scope="module")
def pushed_recipe(quick_recipe: QuickRecipe, plain_registry: Registry) -> tuple[Path, str, str]:
    """(project, reference, digest) of a scoring image built with ``--env WORKER_COUNT=2`` and pushed."""
    project = quick_recipe.project("verify/proj")
    layout = quick_recipe.work / "verify-image"
    built = quick_recipe.build(project, "--env", "WORKER_COUNT=2", "-o", f"oci:{layout}")
    ref = f"{plain_registry.host}/verify/app:1"
    proc = run_cli("push", "--from", f"oci:{layout}", ref, "--cache-dir", str(quick_recipe.cache), "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == built["digest"]
    return project, ref, built["digest"]


def test_an_unchanged_rebuild_is_the_pushed_image(quick_recipe: QuickRecipe, pushed_recipe: tuple[Path, str, str],
                                                  tmp_path: Path) -> None:
    project, ref, digest = pushed_recipe
    # a fresh cache (but for pex's deps): every layer is rebuilt, the registry's are fetched to compare
    for n, against in enumerate((ref, f"docker://{ref}")):
        proc = run_cli("verify", *quick_recipe.inputs(project, quick_recipe.fresh_cache(tmp_path / f"cache-{n}")),
                       "--env", "WORKER_COUNT=2", "--against", against)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == digest
    code, doc, _ = _verify(*quick_recipe.inputs(project), "--env", "WORKER_COUNT=2", "--against", ref)
    assert code == 0 and doc["equal"] and doc["digest"] == doc["against"]["digest"] == digest
    assert doc["difference"] is None and doc["differences"] == [] and doc["comparedBy"] == "manifest"
    assert {layer["status"] for layer in doc["layers"]} == {"same"}


def test_an_edited_source_file_is_named(quick_recipe: QuickRecipe, pushed_recipe: tuple[Path, str, str],
                                        tmp_path: Path) -> None:
    project, ref, _ = pushed_recipe
    edited = tmp_path / "edited"
    shutil.copytree(project, edited)
    with open(edited / "score.py", "a") as f:
        f.write("# an edit after the push\n")
    proc = run_cli("verify", *quick_recipe.inputs(edited), "--env", "WORKER_COUNT=2", "--against", ref)
    assert proc.returncode == 1, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert "first differing file /var/azureml-app/src/score.py" in first and "ociassemble: source src" in first, first
    assert "size" in first and "content" in first

    code, doc, _ = _verify(*quick_recipe.inputs(edited), "--env", "WORKER_COUNT=2", "--against", ref)
    diff = doc["difference"]
    assert code == 1 and not doc["equal"] and diff["kind"] == "layer-content"
    assert diff["layer"] == len(doc["layers"]) - 1 and doc["layers"][-1]["status"] == "content"
    entry = diff["entry"]
    assert entry["path"] == "var/azureml-app/src/score.py" and set(entry["attributes"]) == {"size", "sha256"}
    assert entry["rebuilt"]["size"] == entry["image"]["size"] + len("# an edit after the push\n")
    # the changed diff_id is a consequence of the layer, not a finding of its own
    assert [d["kind"] for d in doc["differences"]] == ["layer-content"]


def test_a_config_difference_names_the_key(quick_recipe: QuickRecipe, pushed_recipe: tuple[Path, str, str]) -> None:
    project, ref, _ = pushed_recipe
    proc = run_cli("verify", *quick_recipe.inputs(project), "--against", ref)  # no --env WORKER_COUNT=2
    assert proc.returncode == 1, proc.stderr
    assert "the config differs at config.Env: WORKER_COUNT=2 only in the image" in proc.stdout.splitlines()[0]
    code, doc, _ = _verify(*quick_recipe.inputs(project), "--env", "WORKER_COUNT=3", "--against", ref)
    assert code == 1 and doc["difference"]["kind"] == "config" and doc["difference"]["key"] == "config.Env"
    assert 'WORKER_COUNT="3" (rebuilt) vs WORKER_COUNT="2" (image)' in doc["difference"]["message"]
    assert doc["configKeys"] == ["config.Env"] and {layer["status"] for layer in doc["layers"]} == {"same"}


def test_a_layer_recompressed_by_skopeo_differs_only_in_compression(
        quick_recipe: QuickRecipe, pushed_recipe: tuple[Path, str, str], plain_registry: Registry,
        tmp_path: Path) -> None:
    project, ref, _ = pushed_recipe
    # skopeo 1.9 may reuse a registry's gzip blobs on a registry-to-registry copy: recompress
    # into a layout, then copy that (zstd layers as they are) into another repository
    layout = tmp_path / "zstd"
    skopeo("copy", "-q", *NO_TLS, "--dest-compress-format", "zstd", f"docker://{ref}", f"oci:{layout}")
    other = f"{plain_registry.host}/verify/app-zstd:1"
    skopeo("copy", "-q", *NO_TLS, f"oci:{layout}", f"docker://{other}")
    media = {m["mediaType"] for m in json.loads(skopeo("inspect", "--raw", "--tls-verify=false",
                                                             f"docker://{other}"))["layers"]}
    assert media == {"application/vnd.oci.image.layer.v1.tar+zstd"}

    for against in (other, f"oci:{layout}"):
        code, doc, _ = _verify(*quick_recipe.inputs(project), "--env", "WORKER_COUNT=2", "--against", against)
        diff = doc["difference"]
        assert code == 1 and [d["kind"] for d in doc["differences"]] == ["layer-compression"], doc["differences"]
        assert "only the compression differs" in diff["message"] and "tar+zstd" in diff["message"]
        assert diff["layer"] == 0 and diff["layers"] == list(range(len(doc["layers"])))
        assert {layer["status"] for layer in doc["layers"]} == {"compression"}
        assert all(layer["rebuilt"]["diffID"] == layer["image"]["diffID"] for layer in doc["layers"])
        assert doc["rebuilt"]["config"] == doc["against"]["config"] and doc["configKeys"] == []


def test_archives_written_by_skopeo(quick_recipe: QuickRecipe, pushed_recipe: tuple[Path, str, str],
                                    tmp_path: Path) -> None:
    project, ref, digest = pushed_recipe
    skopeo("copy", "-q", *NO_TLS, f"docker://{ref}", f"oci-archive:{tmp_path / 'image.tar'}")
    skopeo("copy", "-q", *NO_TLS, f"docker://{ref}", f"docker-archive:{tmp_path / 'docker.tar'}:team/app:1")
    code, doc, _ = _verify(*quick_recipe.inputs(project), "--env", "WORKER_COUNT=2",
                           "--against", f"oci-archive:{tmp_path / 'image.tar'}")
    assert code == 0 and doc["digest"] == digest
    # a docker-archive keeps only uncompressed layers; read, they are gzipped as a build does,
    # so the default build's image comes back with its very digest
    code, doc, _ = _verify(*quick_recipe.inputs(project), "--env", "WORKER_COUNT=2",
                           "--against", f"docker-archive:{tmp_path / 'docker.tar'}")
    assert code == 0 and doc["digest"] == doc["against"]["digest"] == digest
    code, doc, _ = _verify(*quick_recipe.inputs(project), "--against", f"docker-archive:{tmp_path / 'docker.tar'}")
    assert code == 1 and doc["difference"]["key"] == "config.Env"

    # gzip level 6: its docker-archive's layers come back gzipped at the default level, other
    # bytes, so the same config (every layer's uncompressed diff_id) is what makes it the same image
    level6 = tmp_path / "level6-image"
    quick_recipe.build(project, "--compression", "gzip", "--compression-level", "6", "-o", f"oci:{level6}")
    skopeo("copy", "-q", f"oci:{level6}", f"docker-archive:{tmp_path / 'level6.tar'}:team/app:2")
    code, doc, err = _verify(*quick_recipe.inputs(project), "--compression", "gzip", "--compression-level", "6",
                             "--against", f"docker-archive:{tmp_path / 'level6.tar'}")
    assert code == 0 and doc["equal"] and doc["comparedBy"] == "config", doc["differences"]
    assert doc["digest"] != doc["against"]["digest"] and doc["against"]["config"] == doc["rebuilt"]["config"]
    assert "compression" in {layer["status"] for layer in doc["layers"]}


# -- the plain build (--plain --base … --layer SRC:DEST) -------------------------------------

def _tree(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_text("#!/bin/sh\necho tool\n")
    (root / "bin" / "tool").chmod(0o755)
    (root / "data.txt").write_text("some data\n")
    os.symlink("data.txt", root / "current")
    return root


def test_plain_images_file_mode_link_target_and_layer_count(quick_recipe: QuickRecipe, plain_registry: Registry,
                                                             tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree")
    inputs = ["--plain", "--base", quick_recipe.base, "--layer", f"{tree}:/opt/app", "--cmd", "/opt/app/bin/tool",
              "--cache-dir", str(tmp_path / "cache")]
    ref = f"{plain_registry.host}/verify/plain:1"
    layout = tmp_path / "plain"
    built = run_cli("build", *inputs, "-o", f"oci:{layout}", "-q")
    assert built.returncode == 0, built.stderr
    assert run_cli("push", "--from", f"oci:{layout}", ref, "--cache-dir", str(tmp_path / "cache")).returncode == 0
    for against in (ref, f"oci:{layout}"):
        proc = run_cli("verify", *inputs, "--against", against)
        assert proc.returncode == 0 and proc.stdout.strip() == built.stdout.strip(), proc.stderr

    (tree / "bin" / "tool").chmod(0o644)
    code, doc, _ = _verify(*inputs, "--against", ref)
    entry = doc["difference"]["entry"]
    assert code == 1 and entry["path"] == "opt/app/bin/tool" and entry["attributes"] == ["mode"]
    assert "mode 0644 (rebuilt) vs 0755 (image)" in doc["difference"]["message"]
    (tree / "bin" / "tool").chmod(0o755)

    os.unlink(tree / "current")
    os.symlink("bin/tool", tree / "current")
    code, doc, _ = _verify(*inputs, "--against", ref)
    entry = doc["difference"]["entry"]
    assert code == 1 and entry["path"] == "opt/app/current" and entry["attributes"] == ["linkname"]
    assert "link target 'bin/tool' (rebuilt) vs 'data.txt' (image)" in doc["difference"]["message"]
    os.unlink(tree / "current")
    os.symlink("data.txt", tree / "current")

    (tree / "new.txt").write_text("only here\n")
    code, doc, _ = _verify(*inputs, "--against", ref)
    assert code == 1 and doc["difference"]["entry"]["path"] == "opt/app/new.txt"
    assert doc["difference"]["entry"]["onlyIn"] == "rebuilt"
    (tree / "new.txt").unlink()

    extra = _tree(tmp_path / "extra")
    code, doc, _ = _verify(*inputs, "--layer", f"{extra}:/opt/extra", "--against", ref)
    assert code == 1 and doc["difference"]["kind"] == "layer-count"
    assert doc["difference"]["rebuilt"] == doc["difference"]["image"] + 1
    assert doc["layers"][-1]["status"] == "only-rebuilt" and doc["layers"][-1]["image"] is None


# -- the library function, and an image that lies about a layer -------------------------------

def _retar_with(layer_gz: bytes, path: str, data: bytes) -> bytes:
    """The same tar with ``path``'s content replaced (test images only: in memory)."""
    src = tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer_gz)))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for m in src.getmembers():
            if m.name == path:
                m.size = len(data)
                dst.addfile(m, io.BytesIO(data))
            else:
                dst.addfile(m, src.extractfile(m) if m.isreg() else None)
    return gzip.compress(out.getvalue(), mtime=0)


def test_compare_images_from_python_and_a_layer_that_is_not_its_diff_id(quick_recipe: QuickRecipe,
                                                                        tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree")
    layout = tmp_path / "plain"
    cache_dir = tmp_path / "cache"
    assert run_cli("build", "--plain", "--base", quick_recipe.base, "--layer", f"{tree}:/opt/app",
                   "-o", f"oci:{layout}", "--cache-dir", str(cache_dir)).returncode == 0
    cache = BlobCache(cache_dir)
    rebuilt = load_image(f"oci:{layout}", cache)
    report = compare_images(rebuilt, load_image(f"oci:{layout}", cache), cache)
    assert report.equal and report.render() == rebuilt.digest

    # a forged layout: the top layer's bytes swapped for another tar, the config (and its diff_id) kept
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((blobs / Digest(index["manifests"][0]["digest"]).hex).read_bytes())
    top = manifest["layers"][-1]
    forged = _retar_with((blobs / Digest(top["digest"]).hex).read_bytes(), "opt/app/data.txt", b"forged!!!\n")
    forged_digest = Digest.of_bytes(forged)
    (blobs / forged_digest.hex).write_bytes(forged)
    manifest["layers"][-1] = {**top, "digest": forged_digest.value, "size": len(forged)}
    data = json.dumps(manifest).encode()
    (blobs / Digest.of_bytes(data).hex).write_bytes(data)
    index["manifests"][0] = {**index["manifests"][0], "digest": Digest.of_bytes(data).value, "size": len(data)}
    (layout / "index.json").write_text(json.dumps(index))

    report = compare_images(rebuilt, load_image(f"oci:{layout}", cache), cache, name="forged")
    first = report.differences[0]
    assert not report.equal and first.kind == "layer-integrity" and first.layer == len(rebuilt.manifest.layers) - 1
    assert "not to the diff_id" in first.message and report.layers[-1]["status"] == "content"
    assert report.render().startswith("forged differs from the rebuilt image: layer ")


BIG = 256 << 20  # a layer bigger than the memory the comparison may use
MAX_RSS = 128 << 20


def test_layers_are_compared_as_streams(quick_recipe: QuickRecipe, tmp_path: Path) -> None:
    """A 256 MiB file differing in its last byte is found with the process's memory well under the layer's size."""
    tree = tmp_path / "big"
    tree.mkdir()
    with open(tree / "weights.bin", "wb") as f:
        f.truncate(BIG)
    inputs = ["--plain", "--base", quick_recipe.base, "--layer", f"{tree}:/models", "--compression", "gzip",
              "--cache-dir", str(tmp_path / "cache")]
    assert run_cli("build", *inputs, "-o", f"oci:{tmp_path / 'image'}", "-q").returncode == 0
    with open(tree / "weights.bin", "r+b") as f:
        f.seek(BIG - 1)
        f.write(b"x")
    # a launcher whose only child is the verify process: its RUSAGE_CHILDREN is that process's peak
    launcher = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
                "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", launcher, sys.executable, "-m", "ociassemble.cli", "verify", *inputs,
                           "--against", f"oci:{tmp_path / 'image'}", "--json"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["difference"]["entry"]["path"] == "models/weights.bin"
    assert doc["difference"]["entry"]["attributes"] == ["sha256"]
    peak = int(proc.stderr.strip().splitlines()[-1]) << 10  # ru_maxrss is in KiB on Linux
    assert peak < MAX_RSS, f"verify peaked at {peak >> 20} MiB comparing a {BIG >> 20} MiB layer"
