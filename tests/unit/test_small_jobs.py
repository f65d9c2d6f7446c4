"""The library jobs of make-base, login and keygen: what they refuse before any work, and what keygen writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ociassemble import jobs
from ociassemble.errors import InputError, UsageError
from ociassemble.sign.keys import load_private_key, load_public_key
from ociassemble.settings import Settings


def _never() -> bytes:
    raise AssertionError("the password was asked for although nothing may be written")


def test_keygen_writes_a_pair_cosign_reads_and_keeps_an_existing_one(tmp_path: Path) -> None:
    pair = jobs.keygen(tmp_path / "cosign", lambda: b"pw")
    assert (pair.private, pair.public) == (tmp_path / "cosign.key", tmp_path / "cosign.pub")
    assert stat.S_IMODE(os.stat(pair.private).st_mode) == 0o600
    public = load_public_key(pair.public.read_bytes(), "pub")
    assert public.keyid == pair.keyid == pair.to_json()["key"]["sha256"]
    assert load_private_key(pair.private.read_bytes(), b"pw", "key").public.keyid == pair.keyid
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left
    with pytest.raises(InputError, match=r"cosign.key and .*cosign.pub already exist.*--force"):
        jobs.keygen(tmp_path / "cosign", _never)
    assert jobs.keygen(tmp_path / "cosign", lambda: b"", force=True).keyid != pair.keyid


def test_keygen_into_a_missing_folder_asks_nothing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        jobs.keygen(tmp_path / "nope" / "cosign", _never)


def test_make_base_refuses_a_mirror_with_mmdebstrap_before_any_work(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path / "cache")
    with pytest.raises(UsageError, match="drop --with-mmdebstrap"):
        jobs.make_base(settings, apt_mirror="http://127.0.0.1:9/debian", with_mmdebstrap=True)
    assert not (tmp_path / "cache").exists()  # refused before the cache was even made


def test_push_refuses_a_digest_file_in_a_missing_folder_before_any_work(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path / "cache")
    with pytest.raises(UsageError, match=r"--digest-file .*/nowhere/digest: folder .*/nowhere does not exist"):
        jobs.push(settings, ["127.0.0.1:9/team/model:1"], source=f"oci:{tmp_path / 'layout'}",
                  digest_file=tmp_path / "nowhere" / "digest")
    assert not (tmp_path / "cache").exists()  # refused before the cache was even made, or any request


def test_login_needs_a_username_and_a_password(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--username and --password-stdin"):
        jobs.login(Settings(cache_dir=tmp_path / "cache"), "127.0.0.1:9")
