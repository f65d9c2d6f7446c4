"""Whether this machine can run another architecture's programs, read from a binfmt_misc
folder: each way it can fall short is one line saying what to do.

A folder in tmp_path stands for /proc/sys/fs/binfmt_misc (the files the kernel shows there:
``status`` once mounted, one file per handler). s390x is foreign to every machine this
runs on (x86-64 and arm64).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ociassemble import emulation
from ociassemble.emulation import emulation_problem, ensure_emulation, needs_emulation
from ociassemble.errors import BuildError
from ociassemble.image.cache import BlobCache
from ociassemble.image.platform import host_platform, parse_platform

#: What the kernel shows for Debian's qemu-user-static handler (update-binfmts --enable).
HANDLER = ("{state}\ninterpreter /usr/libexec/qemu-binfmt/s390x-binfmt-P\nflags: {flags}\noffset 0\n"
           "magic 7f454c460201010000000000000000000002001600\n"
           "mask ffffffffffffff00fffffffffffffffffffeffff\n")


def binfmt(tmp_path: Path, *, mounted: bool = True, state: str | None = None, flags: str = "PF") -> Path:
    d = tmp_path / "binfmt_misc"
    d.mkdir(exist_ok=True)
    if mounted:
        (d / "status").write_text("enabled\n")
    if state is not None:
        (d / "qemu-s390x").write_text(HANDLER.format(state=state, flags=flags))
    return d


def test_this_machines_own_architecture_needs_nothing(tmp_path: Path) -> None:
    own = host_platform().architecture
    assert not needs_emulation(own)
    assert emulation_problem(own, binfmt(tmp_path, mounted=False)) is None
    assert needs_emulation("s390x")


@pytest.mark.parametrize("setup, problem", [
    (dict(mounted=False), "binfmt_misc is not mounted, so this machine cannot run s390x programs: as root, "
                          "'mount -t binfmt_misc binfmt_misc {binfmt}'"),
    (dict(), "no qemu handler for s390x ({binfmt}/qemu-s390x is missing): 'apt-get install qemu-user-static "
             "binfmt-support', then 'update-binfmts --enable qemu-s390x'"),
    (dict(state="disabled"), "the qemu handler for s390x is disabled: run 'update-binfmts --enable qemu-s390x' as root"),
    (dict(state="enabled", flags="P"), "the qemu handler for s390x ({binfmt}/qemu-s390x) lacks the F flag"),
    (dict(state="enabled", flags="OC"), "lacks the F flag"),
])
def test_each_shortfall_is_named_with_its_fix(tmp_path: Path, setup: dict, problem: str) -> None:
    d = binfmt(tmp_path, **setup)
    got = emulation_problem("s390x", d)
    assert got is not None and problem.format(binfmt=d) in got
    assert "\n" not in got


def test_an_enabled_handler_with_the_f_flag_is_enough(tmp_path: Path) -> None:
    assert emulation_problem("s390x", binfmt(tmp_path, state="enabled", flags="PF")) is None
    assert emulation_problem("s390x", binfmt(tmp_path, state="enabled", flags="F")) is None
    ensure_emulation("s390x", what="a test", binfmt=binfmt(tmp_path, state="enabled"))  # nothing to do


def test_ensure_emulation_without_root_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not root, so it cannot mount or enable anything itself: the BuildError names the command and the fix."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    logged: list[str] = []
    with pytest.raises(BuildError) as err:
        ensure_emulation("s390x", what="running a linux/s390x image", binfmt=binfmt(tmp_path, state="disabled"),
                         log=logged.append)
    assert str(err.value) == (f"running a linux/s390x image needs to run s390x programs on this {os.uname().machine} "
                              "machine: the qemu handler for s390x is disabled: run 'update-binfmts --enable "
                              "qemu-s390x' as root")
    assert logged == []


def test_make_base_for_an_architecture_this_host_cannot_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``make-base --with-mmdebstrap --platform linux/s390x`` on a machine without binfmt_misc (and
    no update-binfmts to set it up): one line before mmdebstrap runs, nothing left in the cache.
    (The default engine, .debs, runs no program of the base's architecture.)"""
    from ociassemble.azureml import debianbase

    if not any(s.is_file() and s.stat().st_size for s in debianbase._SOURCES):
        pytest.skip("no apt sources on this machine: make_base stops before the emulation check")
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: f"/usr/bin/{name}" if name == "mmdebstrap" else None)
    cache = BlobCache(tmp_path / "cache")
    with pytest.raises(BuildError, match=r"^make-base --platform linux/s390x needs to run s390x programs on this "
                                         r"\S+ machine: binfmt_misc is not mounted"):
        debianbase.make_base(cache, platform=parse_platform("linux/s390x"), binfmt=binfmt(tmp_path, mounted=False),
                             log=lambda m: None, with_mmdebstrap=True)
    assert not list((cache.root / "bases").glob("bookworm-*"))  # no base (its lock file may stay)
    assert emulation.BINFMT == Path("/proc/sys/fs/binfmt_misc")  # the real one is the default
