"""A cache copied or restored elsewhere (new inodes and ctimes, as CI cache actions give) keeps
its deps layer: the layer is indexed by what made the resolved deps, not by their stat stamps."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from ociassemble.image.cache import BlobCache
from tests.conftest import run_cli


def test_a_copied_cache_reuses_the_deps_layer_without_re_tarring(example_build: dict, trained_example: Path,
                                                                 debian_base: str, shared_cache: BlobCache,
                                                                 tmp_path: Path) -> None:
    again = run_cli("build", str(trained_example), "--base", debian_base, "-o", f"oci:{tmp_path / 'a'}", "--json",
                    "--cache-dir", str(shared_cache.root))  # records the deps layer under its deps key
    assert again.returncode == 0, again.stderr
    copied = tmp_path / "copied-cache"
    copied.mkdir()
    for sub in ("blobs", "refs", "layers", "deps", "baseinfo"):
        if (shared_cache.root / sub).exists():  # blobs linked (content never changes), folders of files copied
            subprocess.run(["cp", "-al" if sub == "blobs" else "-a", str(shared_cache.root / sub), str(copied / sub)],
                           check=True)
    proc = run_cli("build", str(trained_example), "--base", debian_base, "-o", f"oci:{tmp_path / 'b'}", "--json",
                   "--cache-dir", str(copied))
    assert proc.returncode == 0, proc.stderr
    deps = [l for l in json.loads(proc.stdout)["layers"] if l["what"] == "python-deps"]
    assert deps and deps[0]["reused"], deps
    assert json.loads(proc.stdout)["digest"] == example_build["digest"]
