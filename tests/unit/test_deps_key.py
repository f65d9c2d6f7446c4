"""The deps key (``azureml.deps.DepsKey``): the one place what decides the Python deps is hashed, and its marker.

The hashes are pinned to the bytes earlier versions computed (with the key hashed in three
modules): a registry cache's ``oa-deps-`` entries, a local cache's deps folders and its
deps-layer index must still hit after the move.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ociassemble.azureml.baseinfo import BaseInfo
from ociassemble.azureml.deps import DepsKey, deps_cached, deps_key, resolve_deps
from ociassemble.azureml.lockfile import LOCK_NAME, LOCK_VERSION
from ociassemble.azureml.project import project_with
from ociassemble.azureml.recipe import build_azureml_image
from ociassemble.errors import BuildError
from ociassemble.image.cache import BlobCache
from ociassemble.image.compress import Compression
from ociassemble.registry.layercache import deps_tag
from tests.unit.test_recipe_inputs import GOOD_SCORE

#: a key with a non-ASCII index (``json.dumps`` escapes it, ``canonical_json`` does not)
KEY = {"reqs": ["flask==3.0.3\n"], "pex": "2.1.0", "args": ["--resolver-version", "pip-2020-resolver"],
       "platform": {"marker_environment": {"python_version": "3.11"},
                    "compatible_tags": ["cp311-cp311-manylinux_2_17_x86_64"]},
       "indexes": {"index": "https://ü.example/simple"}}
TOKEN = "0123456789abcdef0123456789abcdef"
BOOKWORM = BaseInfo("3.11", "3.11.2", "2.36", "amd64", ("python3", "nginx", "runsvdir"))


def test_the_keys_are_the_bytes_earlier_versions_wrote(tmp_path: Path) -> None:
    """Values computed by the code before the key moved here (registry/layercache.deps_tag,
    deps._deps_dir, recipe._deps_layer_key) for KEY."""
    key, gzip, auto = DepsKey(KEY), Compression.parse("gzip", 6), Compression.parse("auto")
    assert deps_tag(key.layer_key(gzip, 0)) == "oa-deps-e0cc26d89d25f9621686d891e271adccc45ec9dd84421ea5e7742a9bacac665c"
    assert deps_tag(key.layer_key(auto, 1700000000)) == \
        "oa-deps-6d9f978ac5a2e781276632bc45b0c8982513819ab9e0e2eba696c79adb4662a1"
    assert key.folder(BlobCache(tmp_path)).name == "71f17176602081f99cc54fd8ade3ce04"
    assert key.layer_key(gzip, 0, token=TOKEN) == "81ad2e4ddd186db367637e8f5b2678f42c27c396d66f1e22e6bd4afd68b17963"
    assert key.layer_key(auto, 1700000000, token=TOKEN) == \
        "6387ec8bac3f340841e1ee3b30b32d1152c3ef504e5aff683287b179ebe25e8d"


def test_the_layer_key_names_what_decides_the_bytes() -> None:
    gz = Compression.parse("gzip")
    key = DepsKey(KEY)
    keys = {key.layer_key(gz, 0), key.layer_key(gz, 1), key.layer_key(Compression.parse("zstd"), 0),
            DepsKey({**KEY, "reqs": ["flask==3\n"]}).layer_key(gz, 0), key.layer_key(gz, 0, token=TOKEN),
            key.layer_key(gz, 0, token="another")}
    assert len(keys) == 6


def _complete_folder(cache: BlobCache, requirements: Path, marker: str) -> Path:
    """The deps folder ``resolve_deps`` would make for ``requirements``, made by hand with ``marker``."""
    folder = deps_key([requirements], BOOKWORM).folder(cache)
    (folder / "site" / "flask").mkdir(parents=True)
    (folder / ".complete").write_text(marker)
    return folder


def test_a_cached_folder_gives_its_token_without_pex(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache")
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("flask==3.0.3\n")
    assert not deps_cached(cache, deps_key([reqs], BOOKWORM))
    folder = _complete_folder(cache, reqs, TOKEN + "\n")
    assert deps_cached(cache, deps_key([reqs], BOOKWORM))
    resolved = resolve_deps(cache, [reqs], BOOKWORM)
    assert (resolved.site, resolved.token, resolved.pex_ran) == (folder / "site", TOKEN, False)


def test_a_folder_marked_before_tokens_is_given_one_that_stays(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache")
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("flask==3.0.3\n")
    folder = _complete_folder(cache, reqs, "ok")
    first = resolve_deps(cache, [reqs], BOOKWORM).token
    assert first is not None and first != "ok" and len(first) == 32
    assert (folder / ".complete").read_text() == first
    assert resolve_deps(cache, [reqs], BOOKWORM).token == first
    assert sorted(p.name for p in folder.iterdir()) == [".complete", "site"]  # no temp file left


def test_the_recipe_prints_nothing_by_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A stale lock is a warning through ``log``; without a ``log`` the library prints nothing."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "score.py").write_text(GOOD_SCORE)
    (root / LOCK_NAME).write_text(json.dumps({"version": LOCK_VERSION, "inputs": "sha256:" + "0" * 64,
                                              "platforms": {}}))
    project = project_with(root, base="scratch")
    heard: list[str] = []
    with pytest.raises(BuildError, match="scratch"):
        build_azureml_image(project, BlobCache(tmp_path / "cache"), log=heard.append)
    assert any("out of date" in line for line in heard), heard
    capsys.readouterr()
    with pytest.raises(BuildError, match="scratch"):
        build_azureml_image(project, BlobCache(tmp_path / "cache"))
    assert capsys.readouterr() == ("", "")
