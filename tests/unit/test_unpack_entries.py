"""The per-entry checks of ``run.entries``: decided from the header alone, before anything is written."""

from __future__ import annotations

import tarfile

import pytest

from ociassemble.run.entries import Budget, EntryRefused, Kind, UnpackLimits, check_entry


def member(name: str, kind: bytes = tarfile.REGTYPE, *, linkname: str = "", size: int = 0) -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type = kind
    m.linkname = linkname
    m.size = size
    return m


def test_kinds_and_targets() -> None:
    budget = Budget(UnpackLimits())
    assert check_entry(member("./"), budget) is None  # the root keeps its mode
    assert check_entry(member("etc/.wh..wh.plnk"), budget) is None  # AUFS bookkeeping
    whiteout = check_entry(member("etc/.wh.passwd"), budget)
    assert whiteout is not None and whiteout.kind is Kind.WHITEOUT and whiteout.target == ["etc", "passwd"]
    opaque = check_entry(member("var/cache/.wh..wh..opq"), budget)
    assert opaque is not None and opaque.kind is Kind.OPAQUE and opaque.target == ["var", "cache"]
    link = check_entry(member("usr/bin/vi", tarfile.LNKTYPE, linkname="./usr/bin/vim"), budget)
    assert link is not None and link.kind is Kind.HARDLINK and link.target == ["usr", "bin", "vim"]
    device = check_entry(member("dev/null", tarfile.CHRTYPE), budget)
    assert device is not None and device.kind is Kind.DEVICE and device.rel == "dev/null"
    assert budget.entries == 6


@pytest.mark.parametrize(("m", "words"), [
    (member("a/../../etc/passwd"), "path traversal"),
    (member("/etc/passwd"), "absolute"),
    (member("a/b", tarfile.SYMTYPE, linkname="../../x"), "leads outside the root"),
    (member("a", tarfile.SYMTYPE, linkname=""), "empty or NUL-bearing target"),
    (member("a", tarfile.LNKTYPE, linkname="../etc/shadow"), "hard link to '../etc/shadow'"),
    (member("a", tarfile.LNKTYPE, linkname="."), "hard link to the root directory"),
    (member("d/.wh.."), "names no entry"),
    (member("s", b"V"), "unsupported tar entry type"),
])
def test_unsafe_headers_are_refused(m: tarfile.TarInfo, words: str) -> None:
    with pytest.raises(EntryRefused, match=words):
        check_entry(m, Budget(UnpackLimits()))


def test_limits_count_over_the_whole_image() -> None:
    budget = Budget(UnpackLimits(max_bytes=10, max_entries=3))
    check_entry(member("a", size=6), budget)
    with pytest.raises(EntryRefused, match="size limit"):
        check_entry(member("b", size=5), budget)
    check_entry(member("c", tarfile.DIRTYPE), budget)
    with pytest.raises(EntryRefused, match="entry limit"):
        check_entry(member("d", tarfile.DIRTYPE), budget)
