"""Reading a tar nobody checked, in flat memory: an image archive's headers, a layer's entries.

``tarfile`` reads a PAX or GNU long-name header whole into memory (a gzip layer of 1 MB can
hold a 4 GB one: zeros compress 1000 to 1), and in stream mode keeps every header it read
(millions, for a layer of empty files). What reads an archive (``transport.archive``, a bare
path's kind in ``transport.spec``) walks its headers first (``scan_headers``, ``walk_headers``:
one 512-byte read each); what reads a layer's files (a base's info, ``inspect --list``,
``verify``, the SBOM, a .deb) streams it with ``stream_tar``, ``entries_of`` and ``read_small``.
The entry rules themselves are ``tarcheck``'s.
"""

from __future__ import annotations

import tarfile
from typing import BinaryIO, Iterator

from .tarcheck import BLOCK, MAX_META_BYTES, META_TYPES, ZERO_BLOCK, UnsafeEntry, nts, parse_header, pax_records

__all__ = ["scan_headers", "walk_headers", "OversizedEntry", "limited_tarinfo", "LimitedTarInfo", "stream_tar",
           "entries_of", "read_small", "SMALL_FILE_MAX"]


def scan_headers(f: BinaryIO, max_entries: int) -> None:
    """Walk a seekable tar's headers (one 512-byte read each, the data skipped) before ``tarfile``
    reads it: ``tarfile`` reads a PAX or long-name header whole into memory and keeps every
    header it read, so an image archive (read, not unpacked: ``transport.archive``) with a 300 MB
    PAX header, or millions of entries, would cost that much memory. Raises UnsafeEntry for a
    metadata header over ``MAX_META_BYTES`` or more than ``max_entries`` entries; a header
    that does not parse is left for ``tarfile`` to report."""
    start = f.tell()
    for _ in walk_headers(f, max_entries):
        pass
    f.seek(start)


def walk_headers(f: BinaryIO, max_entries: int) -> Iterator[str]:
    """Each entry's name (a PAX ``path`` or GNU long name applied) of a seekable tar, from where
    ``f`` is, reading headers only and skipping data as ``tarfile`` does (a PAX ``size`` record
    too); it stops at the end or at a header that does not parse, and raises UnsafeEntry as
    ``scan_headers`` says."""
    entries = 0
    pax: dict[str, str] = {}
    longname: str | None = None
    while True:
        block = f.read(BLOCK)
        if len(block) < BLOCK or block == ZERO_BLOCK:
            return
        parsed = parse_header(block)
        if parsed is None:
            return
        kind, name, _, size, _ = parsed
        if kind in META_TYPES:
            if size > MAX_META_BYTES:
                raise UnsafeEntry(f"a {size}-byte PAX or long-name header (the limit is {MAX_META_BYTES})")
            data = f.read(-(-size // BLOCK) * BLOCK)[:size]
            if kind == tarfile.XHDTYPE:
                try:
                    pax = pax_records(data)
                except UnsafeEntry:
                    return  # tarfile says what is wrong with it
            elif kind == tarfile.GNUTYPE_LONGNAME:
                longname = nts(data)
            continue
        entries += 1
        if entries > max_entries:
            raise UnsafeEntry(f"more than {max_entries} entries")
        try:
            size = int(pax["size"]) if "size" in pax else size  # (files over 8 GiB)
        except ValueError:
            return
        yield pax.get("path") or longname or name
        pax, longname = {}, None
        if kind in tarfile.REGULAR_TYPES or kind not in tarfile.SUPPORTED_TYPES:  # what tarfile skips
            f.seek(-(-size // BLOCK) * BLOCK, 1)


#: The most read into memory of one file of a layer read for what it says (dpkg's status, os-release,
#: a dist-info's METADATA, a .deb's control files: a few MB at most in a real image).
SMALL_FILE_MAX = 64 << 20


class OversizedEntry(tarfile.TarError):
    """A layer's PAX or long-name header, or a file read whole, past its limit. A ``TarError``,
    so every reader that reports an unreadable layer reports this one the same way."""


def limited_tarinfo(max_header: int, error: type[Exception] = OversizedEntry) -> type[tarfile.TarInfo]:
    """A TarInfo that refuses (``error``) a PAX or GNU long-name header over ``max_header`` bytes
    before reading it: tarfile reads one whole, and a gzip layer of 1 MB can hold a 4 GB one
    (zeros compress 1000 to 1)."""

    class LimitedTarInfo(tarfile.TarInfo):
        def _proc_pax(self, tf):  # type: ignore[no-untyped-def]
            if self.size > max_header:
                raise error(f"a {self.size}-byte PAX header (the limit is {max_header})")
            return super()._proc_pax(tf)  # type: ignore[misc]

        def _proc_gnulong(self, tf):  # type: ignore[no-untyped-def]
            if self.size > max_header:
                raise error(f"a {self.size}-byte GNU long-name header (the limit is {max_header})")
            return super()._proc_gnulong(tf)  # type: ignore[misc]

    return LimitedTarInfo


#: the TarInfo of every untrusted tar ociassemble reads with tarfile (metadata headers up to 1 MiB)
LimitedTarInfo = limited_tarinfo(MAX_META_BYTES)


def stream_tar(raw: BinaryIO) -> tarfile.TarFile:
    """A layer's (or a .deb's) tar read as a stream, in flat memory however it was made: its
    metadata headers limited (``OversizedEntry``); read its entries with ``entries_of``."""
    return tarfile.open(fileobj=raw, mode="r|", tarinfo=LimitedTarInfo)


def entries_of(tf: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """Each entry once, not kept (stream mode keeps every header it read: millions, for a
    hostile layer of empty files)."""
    while True:
        m = tf.next()
        if m is None:
            return
        tf.members.clear()
        yield m


def read_small(tf: tarfile.TarFile, m: tarfile.TarInfo, limit: int = SMALL_FILE_MAX) -> bytes:
    """The data of regular entry ``m``, refused (``OversizedEntry``) past ``limit`` bytes unread."""
    if m.size > limit:
        raise OversizedEntry(f"{m.name} is {m.size} bytes, more than the {limit} read of it")
    f = tf.extractfile(m)
    return f.read() if f is not None else b""
