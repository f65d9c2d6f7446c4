"""write_atomic: the file a user reads (lock, SBOM, key, config.json) is replaced whole, with its mode from the start."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ociassemble.atomicfile import write_atomic


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_replaces_the_file_whole_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "ociassemble.lock"
    target.write_text("old\n")
    write_atomic(target, "new ✓\n")
    assert target.read_bytes() == "new ✓\n".encode()
    write_atomic(target, b"\x00bytes")
    assert target.read_bytes() == b"\x00bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ociassemble.lock"]


def test_a_given_mode_holds_whatever_the_umask_and_the_default_follows_it(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_atomic(tmp_path / "cosign.pub", b"pub", mode=0o644, sync=True)
        write_atomic(tmp_path / "private.sbom", b"x")
        os.umask(0o022)
        write_atomic(tmp_path / "cosign.key", b"key", mode=0o600)
        write_atomic(tmp_path / "image.sbom", b"x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "cosign.pub") == 0o644 and _mode(tmp_path / "cosign.key") == 0o600
    assert _mode(tmp_path / "private.sbom") == 0o600 and _mode(tmp_path / "image.sbom") == 0o644


def test_a_failure_names_the_file_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "missing-folder" / "digest.txt"
    with pytest.raises(FileNotFoundError):
        write_atomic(target, "sha256:…\n")
    assert not target.parent.exists() and list(tmp_path.iterdir()) == []
