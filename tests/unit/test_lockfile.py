"""The lock's pieces without pex or a network: package-index settings, credentials kept out of text,
the normalised inputs, the lock file's text, and when a lock holds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ociassemble.azureml.deps import _summarise_pex_error
from ociassemble.azureml.indexes import PYPI, IndexConfig, index_config, inline_password, redact, strip_credentials
from ociassemble.azureml.locking import _keep_versions, lock_section, usable_lock
from ociassemble.azureml.lockfile import Distribution, LockFile, PlatformLock, inputs_digest, read_lock, write_lock
from ociassemble.azureml.project import Project
from ociassemble.azureml.pyenv import python_inputs
from ociassemble.errors import InputError
from ociassemble.image.platform import parse_platform


def test_requirement_options_win_over_pips_environment_and_keep_pips_meaning() -> None:
    env = {"PIP_INDEX_URL": "https://env.example/simple", "PIP_EXTRA_INDEX_URL": "https://a.example/s https://b.example/s",
           "TOKEN": "t0k3n-value"}
    cfg, rest = index_config(["--index-url https://u:${TOKEN}@private.example/simple", "numpy==2.0", "-f ./wheels",
                              "--trusted-host mirror.local"], environ=env)
    assert rest == ["numpy==2.0"]
    assert cfg.index_url == "https://u:t0k3n-value@private.example/simple"
    assert cfg.extra_index_urls == ("https://a.example/s", "https://b.example/s")
    # an --index-url replaces PyPI (pip's meaning), extra ones are added
    assert cfg.pex_args() == ["--no-pypi", "--index", "https://u:t0k3n-value@private.example/simple",
                              "--index", "https://a.example/s", "--index", "https://b.example/s", "--find-links", "./wheels"]
    assert cfg.redacted() == {"indexes": ["https://private.example/simple", "https://a.example/s", "https://b.example/s"],
                              "find_links": ["./wheels"], "trusted_hosts": ["mirror.local"]}
    assert "t0k3n-value" not in repr(cfg) and "t0k3n-value" in cfg.secrets
    only_env, _ = index_config(["x"], environ=env)
    assert only_env.indexes[0] == "https://env.example/simple"
    plain, _ = index_config(["--extra-index-url=https://extra.example/simple", "x"], environ={})
    assert plain.pex_args() == ["--index", "https://extra.example/simple"] and plain.indexes[0] == PYPI
    local, _ = index_config(["-f wheels", "-f /abs/wheels"], base_dir="/src/project", environ={})
    assert local.pex_args() == ["--find-links", "/src/project/wheels", "--find-links", "/abs/wheels"]
    assert local.redacted()["find_links"] == ["wheels", "/abs/wheels"]  # as written: the same on any checkout
    none, _ = index_config(["--no-index", "--find-links /w"], environ={})
    assert none.pex_args() == ["--no-pypi", "--find-links", "/w"] and none.indexes == []
    assert index_config(["x"], environ={})[0] == IndexConfig()


def test_an_unset_variable_or_an_option_without_value_is_one_line() -> None:
    with pytest.raises(InputError, match=r"\$\{NOPE\} is not set"):
        index_config(["-i https://u:${NOPE}@h/simple"], source="requirements.txt", environ={})
    with pytest.raises(InputError, match="--extra-index-url needs a value"):
        index_config(["--extra-index-url"], environ={})


def test_credentials_are_hidden_in_any_text() -> None:
    assert strip_credentials("https://u:p@h:8443/simple/") == "https://h:8443/simple/"
    assert strip_credentials("/local/wheels") == "/local/wheels"
    text = "Looking in indexes: https://user:s3cret-token@pkgs.example/simple, https://pypi.org/simple s3cret-token"
    assert redact(text, ["s3cret-token"]) == ("Looking in indexes: https://<hidden>@pkgs.example/simple, "
                                              "https://pypi.org/simple <hidden>")
    assert inline_password("-i https://u:p4ss@h/simple") and inline_password("-i https://tok@h/")
    assert not inline_password("-i https://u:${TOKEN}@h/simple") and not inline_password("-i https://${T}@h/")
    assert not inline_password("pkg @ https://h/pkg-1.0-py3-none-any.whl")


def _project(tmp_path: Path, requirements: str) -> Project:
    (tmp_path / "requirements.txt").write_text(requirements)
    return Project(root=tmp_path, requirements=tmp_path / "requirements.txt")


def test_normalised_inputs_ignore_comments_order_and_credentials_but_not_a_pin(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX", "PIP_TRUSTED_HOST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TOK", "abc123")

    def digest(text: str) -> str:
        return inputs_digest(python_inputs(_project(tmp_path, text), lambda _: None).normalised())

    base = digest("--extra-index-url https://u:${TOK}@pkgs.example/simple\nNumPy==2.0  # pinned\nscipy\n")
    assert digest("scipy\n\n# the arrays\nnumpy == 2.0\n--extra-index-url https://other:pw@pkgs.example/simple\n") == base
    assert digest("--extra-index-url https://u:${TOK}@pkgs.example/simple\nnumpy==2.1\nscipy\n") != base
    assert digest("--extra-index-url https://u:${TOK}@pkgs.example/simple\nnumpy==2.0\nscipy\npandas\n") != base
    assert digest("--extra-index-url https://u:${TOK}@elsewhere.example/simple\nnumpy==2.0\nscipy\n") != base
    # pip's environment is the runner's, not the project's: a laptop and CI may name other mirrors
    monkeypatch.setenv("PIP_INDEX_URL", "https://ci:token@mirror.example/simple")
    monkeypatch.setenv("PIP_FIND_LINKS", "/opt/wheels")
    assert digest("--extra-index-url https://u:${TOK}@pkgs.example/simple\nNumPy==2.0  # pinned\nscipy\n") == base


def _lock(sha: str = "a" * 64, inputs: str = "sha256:" + "1" * 64) -> LockFile:
    dists = (Distribution("zeta", "1.0", "zeta-1.0-py3-none-any.whl", "https://files.example/zeta-1.0-py3-none-any.whl",
                          "https://pkgs.example/simple", sha, ("alpha>=1",), ">=3.9"),
             Distribution("alpha", "2.0", "alpha-2.0-py3-none-any.whl", "https://files.example/alpha-2.0-py3-none-any.whl",
                          "https://pkgs.example/simple", "b" * 64))
    section = PlatformLock("linux/amd64", "default (ociassemble make-base)", "sha256:" + "c" * 64, dists,
                           {"style": "strict", "platform_tag": ["cp311", "cp311", "manylinux_2_36_x86_64"],
                            "requirements": ["zeta"]})
    return LockFile(inputs, {"linux/amd64": section})


def test_the_lock_text_is_sorted_stable_and_reads_back(tmp_path: Path) -> None:
    lock = _lock()
    text = lock.to_text()
    assert text.startswith('{\n  "#": "generated by `ociassemble lock`')
    assert text.index('"name": "alpha"') < text.index('"name": "zeta"') and '"debian": []' in text
    path = tmp_path / "ociassemble.lock"
    assert write_lock(path, lock) and not write_lock(path, lock)  # the second time: nothing to write
    again = read_lock(path)
    assert again is not None and again.to_text() == text
    pex = again.platforms["linux/amd64"].pex_lock()
    (resolve,) = pex["locked_resolves"]
    assert resolve["platform_tag"] == ["cp311", "cp311", "manylinux_2_36_x86_64"] and pex["style"] == "strict"
    assert {r["project_name"]: r["artifacts"][0]["hash"] for r in resolve["locked_requirements"]}["zeta"] == "a" * 64
    assert again.platforms["linux/amd64"].locked_set == [["alpha-2.0-py3-none-any.whl", "b" * 64],
                                                        ["zeta-1.0-py3-none-any.whl", "a" * 64]]
    (tmp_path / "bad.lock").write_text("{not json")
    with pytest.raises(InputError, match="is not a readable ociassemble lock"):
        read_lock(tmp_path / "bad.lock")
    (tmp_path / "old.lock").write_text(json.dumps({"version": 99}))
    with pytest.raises(InputError, match="lock format 99"):
        read_lock(tmp_path / "old.lock")
    assert read_lock(tmp_path / "absent.lock") is None


def test_a_stale_lock_warns_or_with_locked_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    project = _project(tmp_path, "numpy==2.0\n")
    inputs = python_inputs(project, lambda _: None)
    with pytest.raises(InputError, match="--locked: there is no"):
        usable_lock(project, inputs, "locked", lambda _: None)
    assert usable_lock(project, inputs, "use", lambda _: None) is None
    write_lock(tmp_path / "ociassemble.lock", _lock(inputs=inputs_digest(inputs.normalised())))
    assert usable_lock(project, inputs, "locked", lambda _: None) is not None
    changed = python_inputs(_project(tmp_path, "numpy==2.1\n"), lambda _: None)
    said: list[str] = []
    assert usable_lock(project, changed, "use", said.append) is None
    assert len(said) == 1 and said[0].startswith("warning:") and "out of date" in said[0]
    with pytest.raises(InputError, match="does not match the inputs"):
        usable_lock(project, changed, "locked", said.append)
    lock = _lock()
    assert lock_section(lock, None, "locked", project, said.append) is lock.platforms["linux/amd64"]
    with pytest.raises(InputError, match="no section for linux/arm64"):
        lock_section(lock, parse_platform("linux/arm64"), "locked", project, said.append)


def test_a_relock_keeps_versions_but_those_upgraded_or_no_longer_admitted(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    old = _lock().platforms["linux/amd64"]
    inputs = python_inputs(_project(tmp_path, "zeta\nalpha>=2\n"), lambda _: None)
    assert _keep_versions(old, inputs, None) == ["alpha==2.0", "zeta==1.0"]
    assert _keep_versions(old, inputs, ["Zeta"]) == ["alpha==2.0"]
    assert _keep_versions(old, inputs, []) == []
    moved = python_inputs(_project(tmp_path, "zeta\nalpha>=3\n"), lambda _: None)
    assert _keep_versions(old, moved, None) == ["zeta==1.0"]


def test_a_replaced_file_is_named_with_the_locked_hash() -> None:
    stderr = ("There was 1 error downloading required artifacts:\n"
              "1. tinypkg 1 from http://127.0.0.1:4000/files/tinypkg-1.0-py3-none-any.whl\n"
              "    Expected sha256 hash of 4b4dd79e when downloading tinypkg but hashed to b63c5a3a.\n")
    line = _summarise_pex_error(stderr)
    assert line.startswith("tinypkg-1.0-py3-none-any.whl (http://127.0.0.1:4000/files/tinypkg-1.0-py3-none-any.whl) "
                           "hashes to sha256:b63c5a3a, but the lock expects sha256:4b4dd79e")


def test_the_debian_packages_read_back_sorted_and_only_as_pool_paths(tmp_path: Path) -> None:
    from dataclasses import replace

    from ociassemble.azureml.locking import lock_inputs
    from ociassemble.debian.locked import LockedDeb

    debs = (LockedDeb("zlib1g", "1:1.2.13.dfsg-1", "amd64", "d" * 64, "pool/main/z/zlib/zlib1g_1.2.13.dfsg-1_amd64.deb",
                      90000, "same"),
            LockedDeb("libgomp1", "12.2.0-14+deb12u1", "amd64", "e" * 64,
                      "pool/main/g/gcc-12/libgomp1_12.2.0-14+deb12u1_amd64.deb", 115772, "same"))
    lock = _lock()
    lock = LockFile(lock.inputs, {"linux/amd64": replace(lock.platforms["linux/amd64"], debian=debs)})
    text = lock.to_text()
    assert text.index('"name": "libgomp1"') < text.index('"name": "zlib1g"')
    write_lock(tmp_path / "ociassemble.lock", lock)
    again = read_lock(tmp_path / "ociassemble.lock")
    assert again is not None and set(again.platforms["linux/amd64"].debian) == set(debs)
    bad = json.loads(text)
    bad["platforms"]["linux/amd64"]["debian"][0]["filename"] = "http://mirror.invalid/pool/x.deb"
    (tmp_path / "bad.lock").write_text(json.dumps(bad))
    with pytest.raises(InputError, match="not one inside a mirror"):
        read_lock(tmp_path / "bad.lock")
    # the apt packages are inputs (their order is not); a project without any keeps its digest
    project = _project(tmp_path, "numpy==2.0\n")
    inputs = python_inputs(project, lambda _: None)
    assert lock_inputs(project, inputs) == inputs_digest(inputs.normalised())
    with_apt = replace(project, apt=["libgomp1", "zlib1g"])
    assert lock_inputs(with_apt, inputs) != lock_inputs(project, inputs)
    assert lock_inputs(replace(project, apt=["zlib1g", "libgomp1"]), inputs) == lock_inputs(with_apt, inputs)


def test_a_locked_build_needs_every_package_asked_for_locked_or_in_the_base() -> None:
    from ociassemble.azureml.aptlayer import _check_covered
    from ociassemble.debian.locked import LockedDeb
    from ociassemble.debian.resolve import Installed

    locked = [LockedDeb("libgomp1", "12.2.0-14", "amd64", "e" * 64, "pool/main/g/gcc-12/libgomp1_12.2.0-14_amd64.deb",
                        1, "same")]
    base = Installed({"libc6": "2.36-9"})
    _check_covered(["libgomp1", "libgomp1 (>= 12)", "libc6"], locked, base)
    for asked in ("libgomp1=13.1-1", "curl"):
        with pytest.raises(InputError, match=f"pins no Debian package for '{re.escape(asked)}'"):
            _check_covered([asked], locked, base)
