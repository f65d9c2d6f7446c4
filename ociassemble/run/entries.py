"""Which tar entries may be unpacked: the per-entry safety rules, checked from the header alone.

Each refusal is an ``EntryRefused`` that ``unpack`` turns into an ``ArchiveError``
naming the layer digest and the entry. Checked here, before anything is written:

* Names (``tarcheck.entry_parts``, the rule a base tarball is checked by too): an
  absolute name (entry or whiteout), a ``..`` component, a NUL byte or a component
  longer than 255 bytes is refused; an image carrying one is malformed.
* Symlinks: a relative target that climbs above the root (``a/b -> ../../x``
  lexically) is refused; absolute targets are in-image paths and are kept.
* Hard links: the target must be a clean name other than the root (that it already
  exists inside the root, and is no directory, ``writer`` checks where it looks).
* Whiteouts (OCI image spec, "Representing Changes"): ``D/.wh.NAME`` must name an
  entry; ``D/.wh..wh..opq`` is an opaque directory; other ``.wh..wh.`` names are AUFS
  bookkeeping and are ignored.
* Types: device nodes are skipped (``run`` gives ``/dev`` its own tmpfs); types other
  than files, directories, links and FIFOs are refused.
* Limits (``UnpackLimits``) bound the file bytes, the entry count and the size of a
  single tar metadata header per image, against tar and gzip bombs.
"""

from __future__ import annotations

import enum
import tarfile
from dataclasses import dataclass

from ..image.tarcheck import UnsafeEntry, entry_parts, symlink_leaves_root
from ..image.tarread import limited_tarinfo as _limited_tarinfo

__all__ = ["UnpackLimits", "DEFAULT_LIMITS", "EntryRefused", "Budget", "Kind", "Entry", "check_entry",
           "limited_tarinfo"]

_GIB = 1 << 30


@dataclass(frozen=True)
class UnpackLimits:
    """Per-image bounds on what unpacking may write; exceeding one is an ``ArchiveError``."""

    #: Total bytes of regular-file content over all layers. 1 TiB: above any model
    #: that fits a serving VM's disk, far below what a gzip bomb can claim.
    max_bytes: int = 1024 * _GIB
    #: Total tar entries over all layers (a Debian base has ~10k, a big Python
    #: environment ~200k); bounds inode exhaustion by empty files or links.
    max_entries: int = 10_000_000
    #: One PAX/GNU long-name header: tarfile reads it into memory whole, so a
    #: claimed size of gigabytes would be a memory bomb. Real ones are < 64 KiB.
    max_header_bytes: int = 1 << 20


DEFAULT_LIMITS = UnpackLimits()

_WH = ".wh."
_OPAQUE = ".wh..wh..opq"
#: Any entry name whose last component starts with this is AUFS metadata (``.wh..wh.plnk``…).
_WH_META = ".wh..wh."


class EntryRefused(Exception):
    """An entry is refused; turned into an ArchiveError naming layer and entry."""


@dataclass
class Budget:
    """What the image's layers have used of the limits so far (shared by all its layers)."""

    limits: UnpackLimits
    bytes: int = 0
    entries: int = 0

    def count_entry(self) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise EntryRefused(f"the image has more than {self.limits.max_entries} entries (the entry limit)")

    def take_bytes(self, size: int) -> None:
        if self.bytes + size > self.limits.max_bytes:
            raise EntryRefused(f"the image's files exceed {self.limits.max_bytes} bytes (the size limit)")
        self.bytes += size


def limited_tarinfo(max_header: int) -> type[tarfile.TarInfo]:
    """A TarInfo that refuses oversized PAX and GNU long-name headers before reading them."""
    return _limited_tarinfo(max_header, EntryRefused)


def _clean(name: str) -> list[str]:
    """The components of an entry name inside the root (``[]`` is the root itself)."""
    try:
        return entry_parts(name)
    except UnsafeEntry as exc:
        raise EntryRefused(str(exc)) from None


class Kind(enum.Enum):
    """What writing an entry does."""

    DIRECTORY = "directory"
    FILE = "file"
    SYMLINK = "symlink"
    HARDLINK = "hard link"
    FIFO = "fifo"
    #: A device node: skipped.
    DEVICE = "device"
    #: ``D/.wh.NAME``: removes ``D/NAME`` of the lower layers.
    WHITEOUT = "whiteout"
    #: ``D/.wh..wh..opq``: removes every lower entry of ``D``.
    OPAQUE = "opaque"


@dataclass(frozen=True)
class Entry:
    """A checked entry: its kind, where it goes, and for a link or whiteout what it names."""

    kind: Kind
    member: tarfile.TarInfo
    parts: list[str]
    #: A hard link's target, or the path a whiteout removes (components inside the root).
    target: list[str]

    @property
    def rel(self) -> str:
        return "/".join(self.parts)


def check_entry(m: tarfile.TarInfo, budget: Budget) -> Entry | None:
    """The checked entry ``m``, or None when there is nothing to write (the root, AUFS bookkeeping).

    Raises EntryRefused for an unsafe name, link target or type, or an exceeded limit.
    """
    budget.count_entry()
    parts = _clean(m.name)
    if not parts:
        return None  # the root itself: its mode and owner stay as created
    base = parts[-1]
    if base.startswith(_WH):
        if base == _OPAQUE:
            return Entry(Kind.OPAQUE, m, parts, parts[:-1])
        if base.startswith(_WH_META):
            return None  # AUFS bookkeeping (hard-link dirs): nothing to apply
        target = base[len(_WH):]
        if target in ("", ".", ".."):
            raise EntryRefused(f"whiteout of {target!r} names no entry")
        return Entry(Kind.WHITEOUT, m, parts, [*parts[:-1], target])
    if m.ischr() or m.isblk():
        return Entry(Kind.DEVICE, m, parts, [])
    if m.isdir():
        return Entry(Kind.DIRECTORY, m, parts, [])
    if m.isreg():
        budget.take_bytes(m.size)
        return Entry(Kind.FILE, m, parts, [])
    if m.issym():
        if not m.linkname or "\0" in m.linkname:
            raise EntryRefused("a symlink with an empty or NUL-bearing target")
        if symlink_leaves_root("/".join(parts), m.linkname):
            raise EntryRefused(f"symlink to {m.linkname!r} leads outside the root")
        return Entry(Kind.SYMLINK, m, parts, [])
    if m.islnk():
        try:
            target_parts = _clean(m.linkname)
        except EntryRefused as exc:
            raise EntryRefused(f"hard link to {m.linkname!r}: {exc}") from None
        if not target_parts:
            raise EntryRefused("hard link to the root directory")
        return Entry(Kind.HARDLINK, m, parts, target_parts)
    if m.isfifo():
        return Entry(Kind.FIFO, m, parts, [])
    raise EntryRefused(f"unsupported tar entry type {m.type!r}")
