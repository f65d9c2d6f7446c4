"""The files of a package layer being made: layer entries, and file contents held in memory.

Paths are the layer's (relative, no leading ``/``). On a merged-/usr root, a path
under ``bin``, ``sbin`` or ``lib*`` is put under ``usr/`` (``canonical``), as
dpkg's files land on such a system through the ``/bin -> usr/bin`` symlinks: a layer
holding a ``bin/`` folder would replace the base's symlink. Contents stay in memory
(a base's packages are ~150 MB): no staging folder of thousands of files written and
read back.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..image.digest import CHUNK
from ..image.tarstream import Entry, entry_headers

__all__ = ["Tree", "MERGED_DIRS"]

#: the top folders that are symlinks into /usr on a merged-/usr system
MERGED_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


@dataclass
class Tree:
    """Entries by path, and the content of each file entry."""

    merged_usr: bool
    entries: dict[str, Entry] = field(default_factory=dict)
    contents: dict[str, bytes] = field(default_factory=dict)

    def canonical(self, name: str) -> str:
        name = name.removeprefix("./").lstrip("/").rstrip("/")
        if self.merged_usr:
            top = name.split("/", 1)[0]
            if top in MERGED_DIRS:
                return "usr/" + name
        return name

    def add_file(self, name: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
        self.parents(name)
        self.entries[name] = Entry(name, "file", mode, len(data), uid=uid, gid=gid)
        self.contents[name] = data

    def add_symlink(self, name: str, target: str) -> None:
        self.parents(name)
        self.contents.pop(name, None)
        self.entries[name] = Entry(name, "symlink", 0o777, linkname=target)

    def add_dir(self, name: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        """A folder, or a folder's owner and mode changed (as a script's chown/chmod would)."""
        self.parents(name)
        self.contents.pop(name, None)
        self.entries[name] = Entry(name, "dir", mode, uid=uid, gid=gid)

    def parents(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            if parent not in self.entries and not (self.merged_usr and parent in MERGED_DIRS):
                self.entries[parent] = Entry(parent, "dir", 0o755)

    def read(self, name: str) -> bytes | None:
        """A file's content, following symlinks within the tree; None when it is not a file here."""
        for _ in range(16):
            e = self.entries.get(name)
            if e is None:
                return None
            if e.kind == "file":
                return self.contents.get(name)
            if e.kind != "symlink":
                return None
            target = e.linkname
            name = self.canonical(target if target.startswith("/") else os.path.normpath(
                os.path.join(os.path.dirname("/" + name), target)))
        return None

    def has(self, name: str) -> bool:
        return name in self.entries

    def sorted_entries(self) -> list[Entry]:
        return sorted(self.entries.values(), key=lambda e: e.name.encode())

    def tar_chunks(self, epoch: int) -> Iterator[bytes]:
        """The layer's tar stream (``tarstream``'s headers) in ``CHUNK``-sized chunks, the last shorter."""
        buf = bytearray()
        for e, header in entry_headers(self.sorted_entries(), epoch):
            buf += header
            if e.kind == "file":
                data = self.contents[e.name]
                buf += data
                buf += b"\0" * (-len(data) % tarfile.BLOCKSIZE)
            while len(buf) >= CHUNK:
                yield bytes(buf[:CHUNK])
                del buf[:CHUNK]
        buf += b"\0" * (2 * tarfile.BLOCKSIZE)
        while len(buf) >= CHUNK:
            yield bytes(buf[:CHUNK])
            del buf[:CHUNK]
        if buf:
            yield bytes(buf)

    def samples(self) -> tuple[list[bytes], int]:
        """Slices of the biggest files and the total size: what ``auto`` compression decides by."""
        from ..image.layer import SAMPLE_BYTES, SAMPLE_FILES

        big = sorted(self.contents.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:SAMPLE_FILES]
        return [d[len(d) // 2:len(d) // 2 + SAMPLE_BYTES] for _, d in big], sum(map(len, self.contents.values()))
