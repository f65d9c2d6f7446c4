"""A ``.deb`` file: an ``ar`` archive of ``debian-binary``, ``control.tar.*`` and ``data.tar.*``.

Read in Python, no dpkg: the control archive gives the package's ``control`` stanza,
``conffiles``, ``md5sums`` and maintainer scripts (read, never run); the data archive
is the package's files, streamed member by member. Compression: xz (``lzma``), zstd
(``zstandard``), gzip (``isal``) or none, as dpkg-deb writes them.
"""

from __future__ import annotations

import io
import lzma
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import zstandard

from ..errors import PackageError
from ..image.tarread import entries_of, read_small, stream_tar

__all__ = ["DebFile", "ControlInfo", "open_deb"]

_MAGIC = b"!<arch>\n"
_HEADER = 60
#: the maintainer scripts dpkg would run; read here so that what they would do is known
SCRIPTS = ("preinst", "postinst", "prerm", "postrm", "triggers")


@dataclass(frozen=True)
class ControlInfo:
    """The control archive's files that matter to an image."""

    control: str  # the stanza, as written in the package
    conffiles: tuple[str, ...] = ()
    md5sums: str = ""
    scripts: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DebFile:
    """Where each member of a .deb is (offset, size), and its control information."""

    path: Path
    name: str  # for messages: "libgomp1 12.2.0-14"
    members: dict[str, tuple[int, int]]
    info: ControlInfo

    @contextmanager
    def data(self) -> Iterator[tarfile.TarFile]:
        """The data archive as a streaming TarFile (read its members in order, once)."""
        member = next((m for m in self.members if m.startswith("data.tar")), None)
        if member is None:
            raise PackageError(f"{self.name}: the .deb has no data.tar member; it is not a Debian package")
        with open(self.path, "rb") as f:
            offset, size = self.members[member]
            f.seek(offset)
            raw = _decompressed(_Window(f, size), member, self.name)
            try:
                with stream_tar(raw) as tf:
                    yield tf
            except (tarfile.TarError, EOFError, OSError, lzma.LZMAError, zstandard.ZstdError) as exc:
                raise PackageError(f"{self.name}: its {member} cannot be read ({exc}); the file is corrupt") from None


class _Window(io.RawIOBase):
    """``size`` bytes of ``f`` from where it is now: one ar member, read in place."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f = f
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(b), self._left)
        if n <= 0:
            return 0
        data = self._f.read(n)
        b[: len(data)] = data
        self._left -= len(data)
        return len(data)


def _decompressed(raw: io.RawIOBase, member: str, name: str) -> BinaryIO:
    buffered = io.BufferedReader(raw, 1 << 20)
    if member.endswith(".xz"):
        return lzma.open(buffered, "rb")  # type: ignore[return-value]
    if member.endswith(".zst"):
        return zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)  # type: ignore[return-value]
    if member.endswith(".gz"):
        from isal import igzip

        return igzip.open(buffered, "rb")  # type: ignore[return-value]
    if member.endswith(".tar"):
        return buffered  # type: ignore[return-value]
    raise PackageError(f"{name}: {member} is compressed in a way ociassemble does not read (xz, zstd, gzip or none)")


def _members(f: BinaryIO, name: str) -> dict[str, tuple[int, int]]:
    if f.read(len(_MAGIC)) != _MAGIC:
        raise PackageError(f"{name}: not a .deb (no ar header)")
    out: dict[str, tuple[int, int]] = {}
    pos = len(_MAGIC)
    while True:
        header = f.read(_HEADER)
        if not header:
            return out
        if len(header) < _HEADER or header[58:60] != b"`\n":
            raise PackageError(f"{name}: a truncated or corrupt ar header at byte {pos}")
        member = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip() or 0)
        out[member] = (pos + _HEADER, size)
        pos += _HEADER + size + (size & 1)
        f.seek(pos)


def open_deb(path: Path, name: str) -> DebFile:
    """Index a .deb and read its control archive. Raises PackageError for anything else."""
    with open(path, "rb") as f:
        members = _members(f, name)
        control = next((m for m in members if m.startswith("control.tar")), None)
        if control is None or "debian-binary" not in members:
            raise PackageError(f"{name}: the .deb has no control archive; it is not a Debian package")
        offset, size = members[control]
        f.seek(offset)
        files: dict[str, bytes] = {}
        try:
            with stream_tar(_decompressed(_Window(f, size), control, name)) as tf:
                for m in entries_of(tf):
                    base = m.name.removeprefix("./")
                    if m.isreg() and base in ("control", "conffiles", "md5sums", *SCRIPTS):
                        files[base] = read_small(tf, m)
        except (tarfile.TarError, EOFError, OSError, lzma.LZMAError, zstandard.ZstdError) as exc:
            raise PackageError(f"{name}: its {control} cannot be read ({exc}); the file is corrupt") from None
    if "control" not in files:
        raise PackageError(f"{name}: the control archive has no control file")
    text = {k: v.decode("utf-8", "replace") for k, v in files.items()}
    info = ControlInfo(text["control"].strip("\n"), tuple(l.strip() for l in text.get("conffiles", "").splitlines()
                                                        if l.strip() and not l.startswith("remove-on-upgrade")),
                       text.get("md5sums", ""), {k: text[k] for k in SCRIPTS if k in text})
    return DebFile(path, name, members, info)
