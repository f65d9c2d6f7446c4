"""ociassemble.lock against a private package index (PEP 503 on loopback, basic auth).

One project, built step by step: locked while tinypkg 1.0 is the newest; 1.1 published; the
locked build on an empty cache is the first image, bit for bit; without the lock 1.1 comes in;
a 1.0 wheel replaced on the index is refused in one line naming it and the locked hash. The
password (given through the environment, ``${VAR}`` in requirements.txt, ~/.netrc, and last a
keyring command for an index named in pip.conf with a user and no password) is then
looked for in every file of the caches, pex's cache, the project, the images' layers and
everything printed: it is nowhere.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pkgindex import PrivateIndex, make_wheel, serve_index, write_simple_index
from recipe_fixtures import QuickRecipe

from tests.conftest import run_cli
from tests.hostarch import HOST

PASSWORD = "pw-Zq8r3LockIdx"


@pytest.fixture
def index(tmp_path: Path):  # type: ignore[no-untyped-def]
    ix = serve_index(tmp_path / "index", "alice", PASSWORD)
    ix.publish("tinypkg", "1.0")
    try:
        yield ix
    finally:
        ix.close()


def _files_holding(root: Path, needle: bytes) -> list[str]:
    """Files under ``root`` whose bytes (gunzipped too, for layer blobs) hold ``needle``."""
    found = []
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            try:
                data += gzip.decompress(data)
            except (OSError, EOFError):
                pass
        if needle in data:
            found.append(str(path))
    return found


def _copy_without(pex_root: Path, dest: Path, name: str) -> None:
    """pex's downloaded and installed wheels but ``name``'s (pex sets up its own pip again, offline)."""
    for kind in ("downloads", "installed_wheels"):
        for entry in (pex_root / kind).glob("*"):
            if not any(name in p.name for p in entry.rglob("*")):
                shutil.copytree(entry, dest / kind / entry.name, symlinks=True)


def _installed(cache: Path, name: str) -> list[str]:
    """The versions of ``name`` in the deps folders pex made in ``cache``."""
    return sorted(p.name.removesuffix(".dist-info").split("-")[1] for p in cache.glob(f"deps/*/site/{name}-*.dist-info"))


def test_lock_pins_a_private_index_file_and_no_password_leaks(quick_recipe: QuickRecipe, index: PrivateIndex,
                                                              tmp_path: Path) -> None:
    project = quick_recipe.project("private-index")
    port = index.port
    # the token is named, not written: pip's ${VAR} expansion
    (project / "requirements.txt").write_text(
        f"--extra-index-url http://alice:${{INDEX_TOKEN}}@127.0.0.1:{port}/simple/\ntinypkg\n")
    pex_root = tmp_path / "pex-root"
    scratch = tmp_path / "tmpdir"  # pex's and pip's temporary files (pip's log among them)
    scratch.mkdir()
    # pip's configuration files: an empty one of the test's (this machine's user files are not the test's;
    # its global ones stay, as pip reads them: they may name the CA bundle that reaches PyPI here), till the
    # keyring step's
    no_conf = tmp_path / "pip.conf"
    no_conf.write_text("")
    env = {"INDEX_TOKEN": PASSWORD, "PEX_ROOT": str(pex_root), "TMPDIR": str(scratch), "PIP_CONFIG_FILE": str(no_conf)}
    printed: list[str] = []

    def cli(*args: str, cache: Path, extra_env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
        proc = run_cli(*args, *quick_recipe.inputs(project, cache)[1:], env={**env, **(extra_env or {})}, cwd=project)
        printed.extend([proc.stdout, proc.stderr])
        return proc

    first_cache = quick_recipe.fresh_cache(tmp_path / "cache1")
    locked = run_cli("lock", str(project), "--base", quick_recipe.base, "--cache-dir", str(first_cache), "--json",
                     env=env)
    printed.extend([locked.stdout, locked.stderr])
    assert locked.returncode == 0, locked.stderr
    assert json.loads(locked.stdout)["platforms"][str(HOST)]["python"]["tinypkg"] == "1.0"
    lock = json.loads((project / "ociassemble.lock").read_text())
    (tiny,) = [d for d in lock["platforms"][str(HOST)]["python"]["distributions"] if d["name"] == "tinypkg"]
    wheel = index.root / "files" / "tinypkg-1.0-py3-none-any.whl"
    assert tiny["sha256"] == hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert tiny["index"] == f"http://127.0.0.1:{port}/simple/" and tiny["file"] == wheel.name
    assert tiny["url"] == f"http://127.0.0.1:{port}/files/{wheel.name}"
    assert {"flask", "werkzeug", "gunicorn", "inference-schema", "click", "jinja2"} <= \
        {d["name"] for d in lock["platforms"][str(HOST)]["python"]["distributions"]}

    one = cli("build", str(project), "--locked", "--sbom", "-o", f"oci:{tmp_path / 'one'}", "--json", cache=first_cache)
    assert one.returncode == 0, one.stderr
    first = json.loads(one.stdout)
    assert first["work"]["locked"] is True

    index.publish("tinypkg", "1.1")
    # a fresh runner: no ociassemble cache, so pex installs from the lock (and never asks which version)
    second_cache = tmp_path / "cache2"
    again = cli("build", str(project), "--locked", "-o", f"oci:{tmp_path / 'two'}", "--json", cache=second_cache)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["digest"] == first["digest"]
    assert json.loads(again.stdout)["work"]["pex_ran"] is True and _installed(second_cache, "tinypkg") == ["1.0"]

    # lock again: what the lock pins is kept; --upgrade NAME takes the index's newest of that one only
    before = (project / "ociassemble.lock").read_text()
    kept = run_cli("lock", str(project), "--base", quick_recipe.base, "--cache-dir", str(first_cache), "--json", env=env)
    printed.extend([kept.stdout, kept.stderr])
    assert kept.returncode == 0 and json.loads(kept.stdout)["written"] is False, kept.stderr
    up = run_cli("lock", str(project), "--base", quick_recipe.base, "--cache-dir", str(first_cache), "--json",
                 "--upgrade", "tinypkg", env=env)
    printed.extend([up.stdout, up.stderr])
    assert up.returncode == 0, up.stderr
    upgraded = json.loads(up.stdout)["platforms"][str(HOST)]["python"]
    assert upgraded["tinypkg"] == "1.1" and upgraded["flask"] == json.loads(locked.stdout)["platforms"][
        str(HOST)]["python"]["flask"]
    (project / "ociassemble.lock").write_text(before)

    # without the lock the index's newest comes in; the credentials here come from ~/.netrc
    saved = tmp_path / "saved.lock"
    shutil.move(project / "ociassemble.lock", saved)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text(f"machine 127.0.0.1\nlogin alice\npassword {PASSWORD}\n")
    (home / ".netrc").chmod(0o600)
    (project / "requirements.txt").write_text(f"--extra-index-url http://127.0.0.1:{port}/simple/\ntinypkg\n")
    unlocked = cli("build", str(project), "-o", f"oci:{tmp_path / 'three'}", "--json", cache=second_cache,
                   extra_env={"HOME": str(home)})
    assert unlocked.returncode == 0, unlocked.stderr
    assert json.loads(unlocked.stdout)["digest"] != first["digest"]
    assert "1.1" in _installed(second_cache, "tinypkg")

    # a 1.0 wheel that is not the one locked: refused by its hash, in one line (the credentials of
    # the index requirements.txt names come from PIP_EXTRA_INDEX_URL now: the lock still holds)
    shutil.move(saved, project / "ociassemble.lock")
    make_wheel(index.root / "files", "tinypkg", "1.0", body="import os  # not what was locked\n")
    write_simple_index(index.root)
    # a runner that never downloaded tinypkg (the rest of pex's cache kept: PyPI is not the point)
    _copy_without(pex_root, tmp_path / "pex-root-2", "tinypkg")
    tamper_env = {"PEX_ROOT": str(tmp_path / "pex-root-2"),
                  "PIP_EXTRA_INDEX_URL": f"http://alice:{PASSWORD}@127.0.0.1:{port}/simple/"}
    tampered = cli("build", str(project), "--locked", "-q", "-o", f"oci:{tmp_path / 'four'}",
                   cache=tmp_path / "cache3", extra_env=tamper_env)
    assert tampered.returncode == 1 and tampered.stdout == ""
    (line,) = tampered.stderr.splitlines()
    assert line.startswith("ociassemble: error: ") and wheel.name in line and tiny["sha256"] in line, line
    assert not (tmp_path / "four").exists()
    # --debug shows pex's whole output: the password hidden there too
    debug = cli("build", str(project), "--locked", "--debug", "-o", f"oci:{tmp_path / 'four'}",
                cache=tmp_path / "cache3", extra_env=tamper_env)
    assert debug.returncode == 1 and "pex's output" in debug.stderr

    # the index named by pip.conf only (PIP_CONFIG_FILE), as alice with no password: the keyring
    # command on PATH (keyring + keyrings.alt's plaintext file, the test extra) gives it; no ~/.netrc
    shutil.move(project / "ociassemble.lock", saved)
    (project / "requirements.txt").write_text("tinypkg\n")
    conf = tmp_path / "pip.conf"
    conf.write_text(f"[global]\nextra-index-url = http://alice@127.0.0.1:{port}/simple/\n")
    bin_dir = tmp_path / "keyring-bin"
    bin_dir.mkdir()
    (bin_dir / "keyring").symlink_to(Path(sys.executable).parent / "keyring")
    keyring_env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path / "home-2"),
                   "XDG_DATA_HOME": str(tmp_path / "keyring-data"),
                   "PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring"}
    subprocess.run(["keyring", "set", index.url, "alice"], input=PASSWORD + "\n", text=True, check=True,
                   env={**os.environ, **keyring_env})
    del index.requested[:]
    keyed = cli("build", str(project), "-o", f"oci:{tmp_path / 'five'}", "--json", cache=tmp_path / "cache4",
                extra_env={**keyring_env, "PIP_CONFIG_FILE": str(conf)})
    assert keyed.returncode == 0, keyed.stderr
    assert _installed(tmp_path / "cache4", "tinypkg") == ["1.1"] and "/simple/tinypkg/" in index.requested

    roots = (first_cache, second_cache, tmp_path / "cache3", tmp_path / "cache4", pex_root, tmp_path / "pex-root-2",
             project, scratch, tmp_path / "one", tmp_path / "two", tmp_path / "three", tmp_path / "five",
             tmp_path / "home-2")
    leaks = [f for root in roots for f in _files_holding(root, PASSWORD.encode())]
    sbom = tmp_path / "one.sbom.spdx.json"
    assert "tinypkg" in sbom.read_text()
    leaks += [str(sbom)] if PASSWORD in sbom.read_text() else []
    assert leaks == []
    assert not [text for text in printed if PASSWORD in text]
    assert index.requested  # the index was asked (with the credentials: it answers 401 otherwise)


def test_a_password_written_in_requirements_txt_is_refused_before_anything_is_built(quick_recipe: QuickRecipe,
                                                                                     tmp_path: Path) -> None:
    project = quick_recipe.project("inline-password")
    (project / "requirements.txt").write_text("--index-url https://bob:hunter2-secret@pkgs.example.com/simple\nx\n")
    proc = run_cli("build", *quick_recipe.inputs(project, tmp_path / "cache"), "-o", f"oci:{tmp_path / 'img'}")
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "${TOKEN}" in proc.stderr and "hunter2-secret" not in proc.stderr
    assert not (tmp_path / "img").exists()
