"""WorkingDir resolution inside the image's root (as securejoin does) and the run's id maps."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ociassemble.errors import RunError
from ociassemble.run.idmap import ROOT_BASE, IdMap, IdRange, check_userns, host_idmap
from ociassemble.run.rootpath import resolve_in_root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "srv" / "app").mkdir(parents=True)
    os.symlink("/oldroot/etc", tmp_path / "srv" / "abs")          # absolute: restarts at the root
    os.symlink("../../../../oldroot", tmp_path / "srv" / "up")    # climbs: stops at the root
    os.symlink("app", tmp_path / "srv" / "rel")
    os.symlink("loop2", tmp_path / "loop1")
    os.symlink("loop1", tmp_path / "loop2")
    return tmp_path


@pytest.mark.parametrize("path, inside", [
    ("/", "/"),
    ("", "/"),
    ("/srv/app", "/srv/app"),
    ("/../oldroot/etc", "/oldroot/etc"),
    ("/srv/../../../etc/x", "/etc/x"),
    ("/srv/abs/passwd", "/oldroot/etc/passwd"),
    ("/srv/up/etc", "/oldroot/etc"),
    ("/srv/rel/../app/./x", "/srv/app/x"),
    ("relative/dir", "/relative/dir"),
])
def test_paths_resolve_inside_the_root(root: Path, path: str, inside: str) -> None:
    assert resolve_in_root(root, path) == inside


def test_a_symlink_loop_is_a_run_error(root: Path) -> None:
    with pytest.raises(RunError, match="symlink loop"):
        resolve_in_root(root, "/loop1/x")


def test_id_maps(tmp_path: Path) -> None:
    etc = tmp_path
    (etc / "subuid").write_text("someone:100000:65536\n")
    (etc / "subgid").write_text("someone:100000:65536\n")
    idmap = host_idmap(etc=etc)
    if os.geteuid() == 0:  # root without a range of its own: the fixed unprivileged one
        assert idmap.privileged and idmap.uids == (IdRange(0, ROOT_BASE, 65536),)
        assert idmap.host_uid(33) == ROOT_BASE + 33 and idmap.host_uid(65536) is None
    m = IdMap((IdRange(0, 1000, 1), IdRange(1, 100000, 65535)), (IdRange(0, 1000, 1),), privileged=False)
    assert m.host_uid(0) == 1000 and m.host_uid(33) == 100032 and m.host_gid(33) is None
    assert m.key == "u0-1000-1_1-100000-65535.g0-1000-1"


def test_user_namespaces_disabled_is_a_run_error(tmp_path: Path) -> None:
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "max_user_namespaces").write_text("0\n")
    with pytest.raises(RunError, match="max_user_namespaces"):
        check_userns(tmp_path)
