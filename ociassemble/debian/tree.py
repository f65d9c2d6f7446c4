"""The files of a package layer being made: layer entries, their contents staged in a folder.

Paths are the layer's (relative, no leading ``/``). On a merged-/usr root, a path
under ``bin``, ``sbin`` or ``lib*`` is put under ``usr/`` (``canonical``), as
dpkg's files land on such a system through the ``/bin -> usr/bin`` symlinks: a layer
holding a ``bin/`` folder would replace the base's symlink.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..image.tarstream import Entry

__all__ = ["Tree", "MERGED_DIRS"]

#: the top folders that are symlinks into /usr on a merged-/usr system
MERGED_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


@dataclass
class Tree:
    """Entries by path, and the staging folder their file contents are written to."""

    staging: Path
    merged_usr: bool
    entries: dict[str, Entry] = field(default_factory=dict)
    _count: int = 0

    def canonical(self, name: str) -> str:
        name = name.removeprefix("./").lstrip("/").rstrip("/")
        if self.merged_usr:
            top = name.split("/", 1)[0]
            if top in MERGED_DIRS:
                return "usr/" + name
        return name

    def _stage(self, data: bytes | None = None) -> Path:
        self._count += 1
        path = self.staging / f"{self._count:06d}"
        if data is not None:
            path.write_bytes(data)
        return path

    def stage_file(self) -> Path:
        """A new staging file's path, for a caller that writes the content itself."""
        return self._stage()

    def put_file(self, name: str, path: Path, mode: int, uid: int = 0, gid: int = 0) -> None:
        st = os.stat(path)
        self.entries[name] = Entry(name, "file", mode, st.st_size, str(path), uid=uid, gid=gid,
                                   stamp=(st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev))

    def add_file(self, name: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
        self.parents(name)
        self.put_file(name, self._stage(data), mode, uid, gid)

    def add_symlink(self, name: str, target: str) -> None:
        self.parents(name)
        self.entries[name] = Entry(name, "symlink", 0o777, linkname=target)

    def add_dir(self, name: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        """A folder, or a folder's owner and mode changed (as a script's chown/chmod would)."""
        self.parents(name)
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
            if e.kind == "file" and e.source:
                return Path(e.source).read_bytes()
            if e.kind == "hardlink":
                name = e.linkname
                continue
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
