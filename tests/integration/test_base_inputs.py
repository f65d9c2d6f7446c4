"""Bases read from layouts and archives are verified: a blob that does not hash to its
digest stops the build, naming the digest, and nothing is cached from it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ociassemble.image.assemble import ImageBuilder
from ociassemble.image.cache import BlobCache
from ociassemble.image.layer import LayerSource, build_layer
from ociassemble.inputs.base import load_base
from ociassemble.transport.layout import write_layout
from tests.conftest import run_cli


def _layout(tmp_path: Path) -> tuple[Path, str]:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "hostname").write_text("base\n")
    cache = BlobCache(tmp_path / "c0")
    image = load_base(f"rootfs:{rootfs}", cache)
    out = tmp_path / "base-layout"
    write_layout(image, cache, out, "v1")
    return out, image.manifest.layers[0].digest


def test_base_layer_with_wrong_digest_is_refused(tmp_path: Path) -> None:
    layout, layer_digest = _layout(tmp_path)
    blob = layout / "blobs" / "sha256" / layer_digest[7:]
    data = bytearray(blob.read_bytes())
    data[-20] ^= 0xFF  # one flipped byte in the gzip stream
    os.unlink(blob)  # it was hard-linked to the first cache: write a new file
    blob.write_bytes(bytes(data))
    app = tmp_path / "app"
    app.mkdir()
    (app / "x").write_text("x")
    cache_dir = tmp_path / "cache"
    proc = run_cli("build", "--plain", "--base", f"oci:{layout}:v1", "--layer", f"{app}:/app",
                   "-o", f"oci:{tmp_path / 'out'}", "--cache-dir", str(cache_dir))
    assert proc.returncode == 1, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("ociassemble: error: blob " + layer_digest), line
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
    assert not (cache_dir / "blobs" / "sha256" / layer_digest[7:]).exists()
    assert not list((cache_dir / "tmp").iterdir())  # the partial copy was removed


def test_generic_build_on_a_layout_base_keeps_its_layers(tmp_path: Path) -> None:
    layout, layer_digest = _layout(tmp_path)
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text("print(1)\n")
    proc = run_cli("build", "--plain", "--base", f"oci:{layout}:v1", "--layer", f"{app}:/opt/app",
                   "--cmd", '["python3", "/opt/app/main.py"]', "--env", "A=1", "--port", "8080",
                   "--label", "team=ml", "-o", f"oci:{tmp_path / 'out'}:v2", "--json",
                   "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    manifest = json.loads((tmp_path / "out/blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())
    assert manifest["layers"][0]["digest"] == layer_digest  # the base layer as it was
    config = json.loads((tmp_path / "out/blobs/sha256" / manifest["config"]["digest"][7:]).read_text())
    assert config["config"]["Cmd"] == ["python3", "/opt/app/main.py"]
    assert "A=1" in config["config"]["Env"] and "8080/tcp" in config["config"]["ExposedPorts"]
    assert config["config"]["Labels"]["team"] == "ml"
    assert len(config["rootfs"]["diff_ids"]) == 2


def test_scratch_is_the_empty_base_never_a_registry_image(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text("print(1)\n")
    cache = ["--cache-dir", str(tmp_path / "cache")]
    digests = []
    for base in (["--base", "scratch"], []):
        # no network is touched: an unroutable proxy would fail any registry request
        proc = run_cli("build", "--plain", *base, "--layer", f"{app}:/opt/app", "-o", f"oci:{tmp_path / 'o'}",
                       "--json", *cache, env={"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"})
        assert proc.returncode == 0, proc.stderr
        digests.append(json.loads(proc.stdout)["digest"])
    assert digests[0] == digests[1]
    # the scoring image cannot stand on nothing: one line saying what it needs
    (tmp_path / "score.py").write_text("def init():\n    pass\n\ndef run(data):\n    return data\n")
    proc = run_cli("build", str(tmp_path), "--base", "scratch", "-o", f"oci:{tmp_path / 'never'}", *cache)
    assert proc.returncode == 1 and "base 'scratch' is empty" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "never").exists()
