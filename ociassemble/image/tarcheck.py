"""What a tar entry may be: the name rules the unpacker and the base-tarball check share,
and the streaming check of a rootfs tarball used as a base.

A rootfs tarball becomes a base layer byte for byte, so whatever unpacks the image
later (containerd, podman, ``ociassemble run``, a CI scanner) gets those exact entries.
``TarballChecker`` reads every header as the bytes stream past on their way to the
hasher and compressor (no second read), and refuses an entry that would break, or
attack, an unpacker:

* names: absolute, with a ``..`` component, with a NUL byte, or with a component
  longer than ``NAME_MAX`` bytes (``entry_parts``, the unpacker's own rule);
* an entry under a path that an earlier entry made a symlink (a later file written
  through it lands wherever the link points), or a directory over such a symlink;
* a relative symlink target that climbs above the root (the unpacker refuses it too);
* a hard link whose target is not an earlier non-directory entry of the tarball
  (outside it, or only later in it), or is reached through a symlink;
* entry types no unpacker agrees on (GNU sparse, volume headers, Solaris extended
  headers), a header-only entry (link, directory, device) that claims data, and
  anything but zeros after the end-of-archive marker: each could make two unpackers
  see different entries.

Device nodes, FIFOs and set-user-ID bits stay allowed: a Debian rootfs carries
``/dev`` nodes and setuid programs, and they belong to the operating system image.
"""

from __future__ import annotations

import posixpath
import tarfile
import zlib
from typing import Iterable, Iterator

__all__ = ["NAME_MAX", "UnsafeEntry", "entry_parts", "symlink_leaves_root", "TarballChecker", "MAX_META_BYTES",
           "BLOCK", "ZERO_BLOCK", "META_TYPES", "parse_header", "pax_records", "nts"]

#: Bytes in one path component: the limit of ext4, xfs, btrfs, tmpfs and overlayfs alike.
NAME_MAX = 255
#: One PAX or GNU long-name header's data is held in memory whole; real ones are < 64 KiB.
MAX_META_BYTES = 1 << 20

BLOCK = tarfile.BLOCKSIZE
_HIGH_BIT = bytes(1 if b > 127 else 0 for b in range(256))
_LOW_BITS = bytes(b & 0x7F for b in range(256))
ZERO_BLOCK = bytes(BLOCK)
_REGULAR = {tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE}
_HEADER_ONLY = {tarfile.LNKTYPE: "hard link", tarfile.SYMTYPE: "symlink", tarfile.CHRTYPE: "character device",
                tarfile.BLKTYPE: "block device", tarfile.DIRTYPE: "directory", tarfile.FIFOTYPE: "FIFO"}
META_TYPES = {tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK}
_UNSUPPORTED = {tarfile.GNUTYPE_SPARSE: "a GNU sparse file (re-create it without --sparse)",
                tarfile.SOLARIS_XHDTYPE: "a Solaris extended header"}


class UnsafeEntry(Exception):
    """An entry breaks a rule; the caller names the archive and the entry."""


def entry_parts(name: str) -> list[str]:
    """The components of an entry name under the root (``[]`` is the root itself).

    Raises UnsafeEntry for a NUL byte, an absolute name, a ``..`` component or a
    component longer than ``NAME_MAX`` bytes.
    """
    if "\0" in name:
        raise UnsafeEntry("the name contains a NUL byte")
    if name.startswith("/"):
        raise UnsafeEntry("an absolute name (entries are paths relative to the image's root)")
    if name.startswith("./"):
        name = name[2:]  # mmdebstrap's and GNU tar's form: every name
    parts = name.rstrip("/").split("/")
    if "" in parts or "." in parts:
        parts = [p for p in parts if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeEntry("path traversal ('..' in the name)")
    if len(name) > NAME_MAX // 4:  # no component can be longer than NAME_MAX bytes otherwise
        for p in parts:
            if len(p) > NAME_MAX // 4 and len(p.encode("utf-8", "surrogateescape")) > NAME_MAX:
                size = len(p.encode("utf-8", "surrogateescape"))
                raise UnsafeEntry(f"a name component of {size} bytes (filesystems take at most {NAME_MAX})")
    return parts


def symlink_leaves_root(rel: str, target: str) -> bool:
    """Whether a relative symlink at ``rel`` points above the root, read lexically.

    Absolute targets are in-image paths and never leave the root.
    """
    if target.startswith("/"):
        return False
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
    return resolved == ".." or resolved.startswith("../")


def pax_records(data: bytes) -> dict[str, str]:
    """``LEN key=value\\n`` records (POSIX pax); the last of a repeated key wins."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos)
        if space < 0:
            raise UnsafeEntry("a malformed PAX header")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise UnsafeEntry("a malformed PAX header") from None
        if length <= 0 or pos + length > len(data) or data[pos + length - 1] != 0x0A:
            raise UnsafeEntry("a malformed PAX header")
        key, eq, value = data[space + 1:pos + length - 1].partition(b"=")
        if not eq:
            raise UnsafeEntry("a malformed PAX header")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def parse_header(block: bytes) -> tuple[bytes, str, str | None, int, str] | None:
    """(type, name, the bare name field if a prefix was joined to it, size, linkname), or
    None for a bad checksum or size. The fields ``tarfile`` reads, read the way it reads
    them, and no more: this runs once per entry of a base (the stdlib's ``frombuf``
    costs four times as much)."""
    field = block[148:156]
    try:
        stored = int(field.split(b"\0", 1)[0].strip() or b"0", 8)
    except ValueError:
        return None
    # The sum of the bytes, with the checksum field counted as eight spaces, without a
    # Python loop: the low seven bits of 512 bytes sum to at most 65024, under
    # Adler-32's modulus, so its low half is that sum exactly (plus one).
    high = block.translate(_HIGH_BIT).count(1) - field.translate(_HIGH_BIT).count(1)
    low = (zlib.adler32(block.translate(_LOW_BITS)) & 0xFFFF) - 1 - sum(field.translate(_LOW_BITS))
    unsigned = low + 128 * high + 256
    if stored != unsigned and stored != unsigned - 256 * high:
        return None  # (the second form: old tars summed signed bytes, as tarfile accepts)
    raw = block[124:136]
    if raw[0] & 0x80:
        try:
            size = tarfile.nti(raw)
        except tarfile.HeaderError:
            return None
    else:
        try:
            size = int(raw.split(b"\0", 1)[0].strip() or b"0", 8)
        except ValueError:
            return None
    if size < 0:
        return None
    kind = block[156:157]
    name = nts(block[:100])
    if kind == tarfile.AREGTYPE and name.endswith("/"):
        kind = tarfile.DIRTYPE
    bare = None
    if block[345] and kind not in tarfile.GNU_TYPES:
        bare = name
        name = nts(block[345:500]) + "/" + name
    return kind, name, bare, size, nts(block[157:257])


def nts(data: bytes) -> str:
    return data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


class TarballChecker:
    """Checks a tar stream's headers as its bytes pass by, in chunks of any size.

    Example::

        checker = TarballChecker("base tarball rootfs.tar")
        for chunk in checker.checked(chunks):
            hash_and_compress(chunk)

    ``feed`` raises ``ArchiveError`` (one line naming ``where`` and the entry) at the
    first refused entry; ``finish`` raises for a truncated or empty archive. Memory
    grows with the number of entries (their paths), never with their size.
    """

    def __init__(self, where: str, fix: str = "re-create the rootfs tarball without it") -> None:
        self.where = where
        self.fix = fix
        self.entries = 0
        self._pending = bytearray()
        self._need = BLOCK  # bytes wanted for the header or meta data being read
        self._mode = "header"  # header | meta | skip | end
        self._skip = 0
        self._meta: tuple[bytes, int] = (b"", 0)  # (type, unpadded size) of the meta entry being read
        self._pax: dict[str, str] = {}
        self._longname: str | None = None
        self._longlink: str | None = None
        self._last = ""
        self._symlinks: set[str] = set()
        self._files: set[str] = set()  # earlier non-directory entries: what a hard link may name

    # -- driving --------------------------------------------------------------
    def checked(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """``chunks`` unchanged, each checked before it is passed on; then ``finish``."""
        for chunk in chunks:
            self.feed(chunk)
            yield chunk
        self.finish()

    def feed(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        i, n = 0, len(view)
        while i < n:
            if self._mode == "skip":
                k = min(self._skip, n - i)
                i += k
                self._skip -= k
                if not self._skip:
                    self._mode = "header"
                continue
            if self._mode == "end":
                rest = view[i:]
                if rest.tobytes().count(0) != len(rest):
                    self._refuse_at("the data after the end-of-archive marker",
                                    "data after the end-of-archive marker, which some unpackers read as more entries")
                return
            want = self._need - len(self._pending)
            if not self._pending and n - i >= want:
                block = view[i:i + want].tobytes()
                i += want
            else:
                k = min(want, n - i)
                self._pending += view[i:i + k]
                i += k
                if len(self._pending) < self._need:
                    continue
                block = bytes(self._pending)
                self._pending.clear()
            if self._mode == "header":
                self._header(block)
            else:
                self._meta_done(block)

    def finish(self) -> None:
        """The stream ended: refuse a truncated or empty archive."""
        if self._mode in ("meta", "skip") or self._pending:
            raise self._error(f"{self.where} ends in the middle of entry {self._last!r}: it is truncated; "
                              "re-create the rootfs tarball")
        if not self.entries:
            raise self._error(f"{self.where} is an empty tar archive; give a rootfs tarball")

    # -- headers ----------------------------------------------------------------
    def _error(self, message: str) -> Exception:
        from ..errors import ArchiveError

        return ArchiveError(message)

    def _refuse(self, name: str, reason: str) -> None:
        raise self._error(f"{self.where}: entry {name!r}: {reason}; {self.fix}")

    def _refuse_at(self, what: str, reason: str) -> None:
        raise self._error(f"{self.where}: {what} (after entry {self._last!r}): {reason}; {self.fix}")

    def _header(self, block: bytes) -> None:
        if block == ZERO_BLOCK:
            self._mode = "end"
            return
        parsed = parse_header(block)
        if parsed is None:
            if not self.entries and not self._pax and self._longname is None:
                raise self._error(f"{self.where} is not a readable tar archive (not a tar archive); "
                                  "give a rootfs .tar, .tar.gz or .tar.zst")
            raise self._error(f"{self.where} is corrupt after entry {self._last!r} (a header with a bad "
                              "checksum or size, which unpackers disagree on); re-create the rootfs tarball")
        kind, header_name, raw_name, size, header_link = parsed
        if kind in META_TYPES:
            if size > MAX_META_BYTES:
                self._refuse_at("a metadata header", f"a {size}-byte PAX or long-name header "
                                f"(the limit is {MAX_META_BYTES})")
            self._meta = (kind, size)
            self._need = -(-size // BLOCK) * BLOCK
            if self._need:
                self._mode = "meta"
            else:
                self._meta_done(b"")
            return
        pax = self._pax
        longname, longlink = self._longname, self._longlink
        if pax:
            self._pax = {}
        self._longname = self._longlink = None
        name = pax.get("path", longname if longname is not None else header_name) if pax else (
            longname if longname is not None else header_name)
        self._last = name
        if pax and "size" in pax:
            if not pax["size"].isdigit():
                self._refuse(name, f"a PAX size of {pax['size']!r}, which is not a number")
            size = int(pax["size"])
        if kind in _UNSUPPORTED:
            self._refuse(name, f"{_UNSUPPORTED[kind]}, which unpackers disagree on")
        if kind not in _REGULAR and kind not in _HEADER_ONLY:
            self._refuse(name, f"an unknown entry type {kind!r}")
        if size and kind in _HEADER_ONLY:
            self._refuse(name, f"a {_HEADER_ONLY[kind]} entry that claims {size} bytes of data, "
                               "which unpackers disagree on")
        linkname = pax.get("linkpath", longlink if longlink is not None else header_link) if pax else (
            longlink if longlink is not None else header_link)
        try:
            self._entry(name, kind, linkname)
            if raw_name is not None and name == header_name:
                entry_parts(raw_name)  # the name field alone, as readers that ignore the prefix see it
        except UnsafeEntry as exc:
            self._refuse(name, str(exc))
        self.entries += 1
        if size and kind in _REGULAR:
            self._skip = -(-size // BLOCK) * BLOCK
            self._mode = "skip"

    def _meta_done(self, data: bytes) -> None:
        kind, size = self._meta
        data = data[:size]
        self._need = BLOCK
        self._mode = "header"
        try:
            if kind == tarfile.XHDTYPE:
                self._pax.update(pax_records(data))
                if any(k.startswith("GNU.sparse.") for k in self._pax):
                    raise UnsafeEntry("a GNU sparse file (re-create it without --sparse), which unpackers disagree on")
            elif kind == tarfile.XGLTYPE:
                records = pax_records(data)
                if {"path", "linkpath", "size"} & records.keys() or any(k.startswith("GNU.sparse.") for k in records):
                    raise UnsafeEntry("a global PAX header that sets a path, link or size for the entries after it")
            elif kind == tarfile.GNUTYPE_LONGNAME:
                self._longname = nts(data)
            else:
                self._longlink = nts(data)
        except UnsafeEntry as exc:
            self._refuse_at("a metadata header", str(exc))

    def _entry(self, name: str, kind: bytes, linkname: str) -> None:
        parts = entry_parts(name)
        path = "/".join(parts)
        if not parts:
            if kind != tarfile.DIRTYPE:
                raise UnsafeEntry("a non-directory entry naming the root itself")
            return
        self._through_symlink(parts)
        if kind == tarfile.DIRTYPE:
            if path in self._symlinks:
                raise UnsafeEntry(f"a directory over the symlink {path!r} (an earlier entry), "
                                  "which unpackers may follow")
            self._files.discard(path)
            return
        if kind == tarfile.SYMTYPE:
            if not linkname or "\0" in linkname:
                raise UnsafeEntry("a symlink with an empty or NUL-bearing target")
            if symlink_leaves_root(path, linkname):
                raise UnsafeEntry(f"a symlink to {linkname!r}, which leads outside the root")
            self._symlinks.add(path)
        elif kind == tarfile.LNKTYPE:
            try:
                target = entry_parts(linkname)
            except UnsafeEntry as exc:
                raise UnsafeEntry(f"a hard link to {linkname!r}: {exc}") from None
            tpath = "/".join(target)
            if tpath not in self._files:
                raise UnsafeEntry(f"a hard link to {linkname!r}, which is not an earlier file of the tarball")
            try:
                self._through_symlink(target)
            except UnsafeEntry as exc:
                raise UnsafeEntry(f"a hard link to {linkname!r}: its target {exc}") from None
            if tpath in self._symlinks:
                self._symlinks.add(path)
        self._files.add(path)

    def _through_symlink(self, parts: list[str]) -> None:
        symlinks = self._symlinks
        if not symlinks or len(parts) < 2:
            return
        prefix = parts[0]
        for comp in parts[1:]:
            if prefix in symlinks:
                raise UnsafeEntry(f"is written through the symlink {prefix!r} (an earlier entry), "
                                  "which can point anywhere")
            prefix = f"{prefix}/{comp}"
