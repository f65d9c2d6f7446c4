"""A locked project on two runners sharing a registry: the base comes by its locked digest (its tag
moved meanwhile), and runner B's deps layer is runner A's, found in the registry layer cache by
the locked set of files: B runs no pex and pushes the same digest."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from recipe_fixtures import QuickRecipe
from registry_fixtures import Registry, start_registry, stop_pid

from ociassemble.image.assemble import ImageBuilder
from ociassemble.image.cache import BlobCache
from ociassemble.image.layer import LayerSource, build_layer
from ociassemble.inputs.base import load_base
from ociassemble.registry import push_image
from tests.conftest import run_cli
from tests.hostarch import HOST


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = start_registry(tmp_path_factory.mktemp("lock-registry"))
    yield reg
    stop_pid(reg.proc)


def test_a_locked_fresh_runner_takes_the_locked_base_and_the_cached_deps_layer(
        quick_recipe: QuickRecipe, registry: Registry, tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "seed")
    base = load_base(quick_recipe.base, cache)
    tag = f"{registry.host}/base/quick:1"
    push_image(base, cache, [tag])
    a_dir = quick_recipe.project("lock-runner-a")
    flags = ["--base", tag, "--model", "model.bin", "--json"]
    locked = run_cli("lock", ".", "--base", tag, "--cache-dir", str(tmp_path / "cache-a"), "--json", cwd=a_dir)
    assert locked.returncode == 0, locked.stderr
    assert json.loads(locked.stdout)["platforms"][str(HOST)]["base"] == base.digest

    # the tag moves on (a base rebuilt later): a locked build still takes the locked digest
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "new").write_text("a newer base\n")
    newer = ImageBuilder(cache, base)
    newer.add_layer(build_layer(cache, [LayerSource(tmp_path / "extra", "/etc/extra")], epoch=0), "newer")
    push_image(newer.build(0), cache, [tag])

    repo = f"{registry.host}/team/cache"
    a = run_cli("push", f"{registry.host}/team/app:a", *flags, "--locked", "--cache-dir", str(tmp_path / "cache-a"),
                "--cache-repo", repo, cwd=a_dir)
    assert a.returncode == 0, a.stderr
    a_doc = json.loads(a.stdout)
    assert a_doc["work"]["locked"]

    b_dir = quick_recipe.work / "lock-runner-b"
    shutil.copytree(a_dir, b_dir)
    b = run_cli("push", f"{registry.host}/team/app:b", *flags, "--locked", "--cache-dir", str(tmp_path / "cache-b"),
                "--cache-from", repo, cwd=b_dir)
    assert b.returncode == 0, b.stderr
    b_doc = json.loads(b.stdout)
    assert b_doc["digest"] == a_doc["digest"]
    assert not b_doc["work"]["pex_ran"]
    deps = [layer for layer in b_doc["layers"] if layer["what"] == "python-deps"]
    assert deps and deps[0]["source"] == "registry", b_doc["layers"]

    # without the lock, the tag's new base: another image
    (b_dir / "ociassemble.lock").unlink()
    c = run_cli("build", *flags, "-o", f"oci:{tmp_path / 'c'}", "--cache-dir", str(tmp_path / "cache-b"), cwd=b_dir)
    assert c.returncode == 0, c.stderr
    assert json.loads(c.stdout)["digest"] != a_doc["digest"]
