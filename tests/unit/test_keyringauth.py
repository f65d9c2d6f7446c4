"""Passwords from a real keyring command (keyring with keyrings.alt's plaintext file backend, from the test
extra): asked as pip asks it (the index URL, then its host), only for a URL with a user and no password."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ociassemble.azureml.indexes import IndexConfig, redact
from ociassemble.azureml.keyringauth import from_keyring


def _keyring_env(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    link = bin_dir / "keyring"
    if not link.exists():
        link.symlink_to(Path(sys.executable).parent / "keyring")
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "XDG_DATA_HOME": str(tmp_path / "data"),
            "PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring"}


def _set(env: dict[str, str], service: str, user: str, password: str) -> None:
    subprocess.run([env["PATH"].split(":")[0] + "/keyring", "set", service, user], input=password + "\n", text=True,
                   env=env, check=True)


def test_a_user_without_password_gets_it_from_the_keyring_by_url_then_host(tmp_path: Path) -> None:
    env = _keyring_env(tmp_path)
    _set(env, "https://feed.example/simple/", "alice", "kr/pass word")
    _set(env, "mirror.example:8443", "bob", "host-level-pw")
    notes: list[str] = []
    cfg = IndexConfig(index_url="https://alice@feed.example/simple/",
                      extra_index_urls=("https://bob@mirror.example:8443/s/", "https://carol@none.example/s/",
                                        "https://dan:given@other.example/s/", "https://pypi.example/simple"))
    got = from_keyring(cfg, notes.append, environ=env)
    assert got.index_url == "https://alice:kr%2Fpass%20word@feed.example/simple/"
    assert got.extra_index_urls == ("https://bob:host-level-pw@mirror.example:8443/s/", "https://carol@none.example/s/",
                                    "https://dan:given@other.example/s/", "https://pypi.example/simple")
    assert got.redacted() == cfg.redacted()  # keys and the lock never see it
    assert "kr/pass word" in got.secrets and redact("pip: kr/pass word", got.secrets) == "pip: <hidden>"
    (note,) = notes
    assert "https://none.example/s/" in note and "carol" in note


def test_no_keyring_command_or_nothing_to_ask_changes_nothing(tmp_path: Path) -> None:
    cfg = IndexConfig(extra_index_urls=("https://alice@feed.example/simple/",))
    assert from_keyring(cfg, print, environ={"PATH": str(tmp_path)}) == cfg
    plain = IndexConfig(extra_index_urls=("https://feed.example/simple/",))
    assert from_keyring(plain, print, environ=_keyring_env(tmp_path)) == plain
