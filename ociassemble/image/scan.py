"""What may go into a layer: host file trees scanned into sorted, checked entries, nothing read yet.

The scan decides each entry's kind, mode and owner (the layer format's rules, see
``layer``): modes normalised to 0755/0644 (a base rootfs folder keeps its own,
``preserve``); hard links inside one layer kept as links, the first in tar order
carrying the content; symlinks kept, but a relative one leading outside the tree it
came from refused; no entries for a destination's parents (they may be symlinks in the
base); sockets, devices and FIFOs refused (a base rootfs folder may keep them). Each
entry carries its stat stamp: an unchanged tree is recognised by its scan alone.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

from ..errors import InputError, UsageError
from .tarstream import Entry

__all__ = ["LayerSource", "scan_sources"]


@dataclass(frozen=True)
class LayerSource:
    """A host path copied to an in-image path.

    A directory's contents land under ``dest``; a file lands at ``dest``, or inside it
    when ``dest`` ends with ``/``. ``preserve`` keeps owners, modes and special files
    (for a base rootfs directory only: user content is normalised).
    """

    src: Path
    dest: str = "/"
    preserve: bool = False

    @classmethod
    def parse(cls, spec: str) -> "LayerSource":
        """``SRC[:DEST]`` as given to ``--layer`` (DEST defaults to ``/``)."""
        src, sep, dest = spec.rpartition(":") if ":" in spec else (spec, "", "/")
        if not sep:
            src, dest = spec, "/"
        if not src:
            raise UsageError(f"--layer {spec!r}: expected SRC[:DEST], e.g. ./model:/var/models")
        if not dest.startswith("/"):
            raise UsageError(f"--layer {spec!r}: DEST {dest!r} must be an absolute in-image path, e.g. /opt/app")
        return cls(Path(src), dest)

    def created_by(self) -> str:
        """The image history line of a ``--layer`` source: its in-image destination only.

        Not the host path, nor its folder's name: ``--layer $PWD:/app`` would put the
        checkout's own name into the config, and two checkouts would build two digests.
        """
        return f"ociassemble: layer {self.dest}"



def _norm_dest(dest: str) -> PurePosixPath:
    parts = [p for p in PurePosixPath("/" + dest.lstrip("/")).parts[1:] if p not in ("", ".")]
    if ".." in parts:
        raise UsageError(f"in-image path {dest!r} contains '..': give a plain absolute path")
    return PurePosixPath(*parts) if parts else PurePosixPath()


def _norm_mode(st_mode: int, kind: str) -> int:
    if kind == "dir":
        return 0o755
    if kind == "symlink":
        return 0o777
    return 0o755 if st_mode & 0o111 else 0o644


def _locate(source: LayerSource) -> tuple[os.stat_result, PurePosixPath, PurePosixPath, Path]:
    """``source``'s stat, the in-image folder its entries go under, the in-image name of a
    file source, and the host folder its relative symlinks must stay within."""
    src = source.src
    try:
        st = os.lstat(src)
    except FileNotFoundError:
        raise InputError(f"{src}: no such file or directory; check the path") from None
    except PermissionError:
        raise InputError(f"{src}: permission denied; make it readable") from None
    dest = _norm_dest(source.dest)
    if stat.S_ISDIR(st.st_mode):
        return st, dest, dest, src
    if source.dest.endswith("/") or str(dest) == ".":
        return st, dest, dest / src.name, src.parent
    return st, dest.parent, dest, src.parent


def _entry(path: str, name: str, st: os.stat_result, source: LayerSource, root: Path) -> Entry:
    """The entry for one host path (not a second name of a hard-linked file: ``_scan_one``
    knows those), by the layer format's rules; raises InputError for what may not go in."""
    mode = st.st_mode
    stamp = (st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
    if stat.S_ISDIR(mode):
        e = Entry(name, "dir", stat.S_IMODE(mode) if source.preserve else 0o755, stamp=(st.st_mtime_ns,))
    elif stat.S_ISREG(mode):
        if not os.access(path, os.R_OK):
            raise InputError(f"{path}: permission denied; make it readable or leave it out")
        m = stat.S_IMODE(mode) if source.preserve else _norm_mode(mode, "file")
        e = Entry(name, "file", m, size=st.st_size, source=str(path), stamp=stamp)
    elif stat.S_ISLNK(mode):
        target = os.readlink(path)
        if not target.startswith("/") and not source.preserve:
            resolved = os.path.normpath(os.path.join(os.path.dirname(os.path.relpath(path, root)), target))
            if resolved == ".." or resolved.startswith("../") or resolved.startswith("/"):
                raise InputError(
                    f"{path}: symlink to {target!r} points outside {root}; copy the file in, "
                    "or use an absolute in-image target"
                )
        e = Entry(name, "symlink", 0o777, linkname=target, stamp=stamp)
    elif source.preserve and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode)):
        kind = "chr" if stat.S_ISCHR(mode) else "blk" if stat.S_ISBLK(mode) else "fifo"
        e = Entry(name, kind, stat.S_IMODE(mode), devmajor=os.major(st.st_rdev) if kind != "fifo" else 0,
                  devminor=os.minor(st.st_rdev) if kind != "fifo" else 0, stamp=stamp)
    else:
        what = ("a socket" if stat.S_ISSOCK(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                else "a device file" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file")
        raise InputError(f"{path} is {what}, which cannot go into an image layer; remove it or ignore it")
    if source.preserve:
        e = Entry(e.name, e.kind, e.mode, e.size, e.source, e.linkname, st.st_uid, st.st_gid,
                  e.devmajor, e.devminor, e.stamp)
    return e


def _scan_one(source: LayerSource, out: dict[str, Entry], links: dict[tuple[int, int], str],
              ignore: Callable[[Path], bool] | None) -> None:
    st, base, target, root = _locate(source)
    is_dir = stat.S_ISDIR(st.st_mode)
    # Only the destination folder of a folder source is an entry; its parents are not:
    # an entry for /lib would replace a base's merged-usr symlink /lib -> usr/lib.
    # Runtimes create missing parents (0755, root) when they apply a layer.
    if is_dir and str(base) not in ("", "."):
        out.setdefault(str(base), Entry(str(base), "dir", 0o755))

    def add(path: str, name: str, st: os.stat_result) -> None:
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            first = links.get((st.st_dev, st.st_ino))
            if first is not None:  # a second name of a file already in the layer: a hard link to the first
                out[name] = Entry(name, "hardlink", _norm_mode(st.st_mode, "file"), linkname=first,
                                  stamp=(st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev))
                return
            links[(st.st_dev, st.st_ino)] = name
        e = _entry(path, name, st, source, root)
        prev = out.get(name)
        if prev is not None and not (prev.kind == "dir" and e.kind == "dir"):
            raise InputError(f"two sources put something at /{name} in one layer; give each a different destination")
        out[name] = e

    if not is_dir:
        add(str(source.src), str(target), st)
    else:
        _walk(str(source.src), "" if str(base) == "." else str(base), ignore, add)


def _walk(top: str, base_name: str, ignore: Callable[[Path], bool] | None,
          add: Callable[[str, str, os.stat_result], None]) -> None:
    """``add`` each path under the folder ``top`` (not ``top`` itself), by its in-image name
    under ``base_name``, in sorted order, leaving out what ``ignore`` says."""
    # Plain strings, not Path objects, from here on: an unchanged tree is only scanned
    # (its fingerprint is the layer index's key), and Path construction was most of that
    # scan's time for a deps tree of ~6000 files (measured).
    def name_of(rel: str) -> str:
        return f"{base_name}/{rel}" if base_name else rel

    for dirpath, dirnames, filenames in os.walk(top, onerror=_walk_error):
        rel = os.path.relpath(dirpath, top)
        prefix = "" if rel == "." else rel + "/"
        dirnames.sort()
        if ignore is not None:
            dirnames[:] = [d for d in dirnames if not ignore(Path(dirpath, d))]
        if rel != ".":
            add(dirpath, name_of(rel), os.lstat(dirpath))
        for fname in sorted(filenames):
            p = os.path.join(dirpath, fname)
            if ignore is not None and ignore(Path(p)):
                continue
            add(p, name_of(prefix + fname), os.lstat(p))
        # os.walk lists symlinks to directories in dirnames and does not follow them
        for d in list(dirnames):
            p = os.path.join(dirpath, d)
            if os.path.islink(p):
                dirnames.remove(d)
                add(p, name_of(prefix + d), os.lstat(p))


def _walk_error(exc: OSError) -> None:
    raise InputError(f"{exc.filename}: {exc.strerror}; check the path and its permissions")


def scan_sources(sources: Sequence[LayerSource], ignore: Callable[[Path], bool] | None = None) -> list[Entry]:
    """All entries of a layer built from ``sources``, sorted, validated, not yet read."""
    out: dict[str, Entry] = {}
    links: dict[tuple[int, int], str] = {}
    for source in sources:
        _scan_one(source, out, links, ignore)
    out.pop("", None)
    out.pop(".", None)
    _first_link_carries_content(out)
    return [out[k] for k in sorted(out, key=_tar_order)]


def _tar_order(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def _first_link_carries_content(out: dict[str, Entry]) -> None:
    """Make the first of each group of hard links, in tar order, the one with the content.

    The scan meets the files of a group in walk order, which is not the tar's sorted
    order (``zz`` at the top is walked before ``a/b``): a link written before its target
    is refused by every unpacker (found by the base-tarball property test).
    """
    groups: dict[str, list[str]] = {}
    for name, e in out.items():
        if e.kind == "hardlink":
            groups.setdefault(e.linkname, []).append(name)
    for target, links in groups.items():
        first = min([target, *links], key=_tar_order)
        if first == target or target not in out:
            continue
        content = out[target]
        out[first] = Entry(first, "file", content.mode, content.size, content.source, "", content.uid,
                           content.gid, stamp=content.stamp)
        for name in (target, *links):
            if name != first:
                old = out[name]
                out[name] = Entry(name, "hardlink", old.mode, linkname=first, uid=old.uid, gid=old.gid,
                                  stamp=old.stamp)

