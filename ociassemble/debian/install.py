"""Packages into one deterministic layer: each ``.deb``'s ``data.tar`` unpacked into entries,
the named maintainer-script actions, and dpkg's records of every package added.

The layer goes through the same writer as every other layer (``image.layer``):
entries sorted, every mtime the build's epoch, no owner names, PAX headers. The
packages' own modes and numeric owners are kept (``/var/mail`` is ``2775 root:mail``),
as dpkg would leave them. A hard link in a ``data.tar`` becomes a copy of the file
(the sorted layer may not hold its target first). Conffiles are ordinary files of the
layer, recorded with their md5 in ``Conffiles`` as dpkg records them.

A layer is found again by what made it: the SHA256 of each ``.deb``, the base's dpkg
status and the layout; a warm build neither reads nor unpacks a package.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import PackageError
from ..image.compress import Compression
from ..image.layer import LAYER_FORMAT, BuiltLayer, layer_from_stream
from ..image.oci import canonical_json
from .deb import DebFile, open_deb
from .fetch import Fetcher
from .packages import Package
from .scripts import apply_actions, apply_alternatives, nginx_modules, uncovered
from .status import info_name, merge_status, status_stanza
from .tree import MERGED_DIRS, Tree

__all__ = ["PackagesLayer", "packages_layer", "fetch_debs", "ENGINE"]

#: Names how a package layer is made; bumped when the same .debs would give other bytes.
ENGINE = "ociassemble-debs-4"
#: parallel downloads: enough to fill a link to a near mirror with ~100 small files
_DOWNLOADS = 8
#: data.tar decompressions at once: the codecs release the GIL, so two cores are both used
_UNPACKERS = 4


@dataclass
class PackagesLayer:
    """The layer, the packages in it, and what was done or left undone for them."""

    layer: BuiltLayer
    packages: list[Package]
    notes: list[str] = field(default_factory=list)

    def created_by(self, what: str = "debian packages") -> str:
        """The history line: every package with its version (what ``inspect`` shows)."""
        return f"ociassemble: {what} " + " ".join(f"{p.name}={p.version}" for p in self.packages)


def fetch_debs(fetcher: Fetcher, packages: list[Package]) -> list[Path]:
    """Every package's .deb, checked against the SHA256 of its Packages stanza, in the cache."""
    def one(p: Package) -> Path:
        return fetcher.blob(p.uri.rstrip("/") + "/" + p.filename, p.sha256, p.size, f"{p.name} {p.version} (.deb)")

    with ThreadPoolExecutor(_DOWNLOADS) as pool:
        return list(pool.map(one, packages))


def _layer_key(packages: list[Package], base_status: str, merged_usr: bool, new_root: bool,
               compression: Compression, epoch: int) -> str:
    return hashlib.sha256(canonical_json({
        "engine": ENGINE, "format": LAYER_FORMAT, "debs": [p.sha256 for p in packages],
        "base_status": hashlib.sha256(base_status.encode()).hexdigest(), "merged_usr": merged_usr,
        "new_root": new_root, "compression": [compression.codec, compression.level], "epoch": epoch})).hexdigest()


def _safe(name: str, deb: DebFile) -> None:
    if ".." in PurePosixPath(name).parts or name.startswith("/"):
        raise PackageError(f"{deb.name}: its data.tar has the entry {name!r}, which leaves the image's root; "
                           "the package is corrupt or hostile")


@dataclass(frozen=True)
class _Member:
    """One data.tar entry as read: its header fields and, for a file, its bytes."""

    name: str  # as in the package, without "./"
    kind: str  # dir | file | symlink | hardlink
    mode: int
    uid: int
    gid: int
    linkname: str = ""
    data: bytes = b""


def _read_data(deb: DebFile) -> list[_Member]:
    """A package's data.tar, read whole (decompressing on a pool thread: lzma and zstd let go of the GIL)."""
    out = []
    with deb.data() as tf:
        for m in tf:
            name = m.name.removeprefix("./").rstrip("/")
            if not name or name == ".":
                continue
            _safe(name, deb)
            if m.isreg():
                f = tf.extractfile(m)
                out.append(_Member(name, "file", m.mode & 0o7777, m.uid, m.gid, data=f.read() if f else b""))
            elif m.isdir() or m.issym() or m.islnk():
                kind = "dir" if m.isdir() else "symlink" if m.issym() else "hardlink"
                out.append(_Member(name, kind, m.mode & 0o7777, m.uid, m.gid, m.linkname))
            # devices and FIFOs: none in Debian's packages; an image's runtime provides /dev
    return out


def _unpack(tree: Tree, deb: DebFile, members: list[_Member]) -> list[str]:
    """Put a package's files into ``tree``; returns its file list as dpkg's ``.list`` has it."""
    listed = ["/."]
    for m in members:
        listed.append("/" + m.name)
        name = tree.canonical(m.name)
        if m.kind == "symlink" and tree.merged_usr and m.name.strip("/") in MERGED_DIRS:
            # the merged-/usr links themselves (trixie's base-files ships ``bin -> usr/bin``): they stay
            # where they are; moved under usr/ they would make usr/bin a link to itself
            tree.add_symlink(m.name.strip("/"), m.linkname)
            continue
        if m.kind == "dir":
            if name not in tree.entries:
                tree.add_dir(name, m.mode, m.uid, m.gid)
        elif m.kind == "file":
            tree.add_file(name, m.data, m.mode, m.uid, m.gid)
        elif m.kind == "symlink":
            tree.add_symlink(name, m.linkname)
        else:
            data = tree.contents.get(tree.canonical(m.linkname))
            if data is None:
                raise PackageError(f"{deb.name}: the hard link {m.name} names {m.linkname}, which is not a file "
                                   "before it; the package is corrupt")
            tree.add_file(name, data, m.mode, m.uid, m.gid)
    return listed


def packages_layer(cache, fetcher: Fetcher, packages: list[Package], *, base_status: str = "",  # type: ignore[no-untyped-def]
                   merged_usr: bool = True, new_root: bool = False, compression: Compression = Compression("auto"),
                   epoch: int = 0, log: Callable[[str], None] = lambda _: None,
                   fetch: Callable[[list[Package]], list[Path]] | None = None) -> PackagesLayer:
    """One layer holding ``packages`` (resolved, sorted by name) over a base whose dpkg status is
    ``base_status``; ``new_root``: the layer is a whole root (``make-base``: the merged-/usr
    links, dpkg's folders). ``fetch``: how the .debs are had (default: from each package's
    repository, ``fetch_debs``; a locked build: ``locked.fetch_locked``).
    Raises PackageError for a package that cannot be fetched or read.
    """
    key = _layer_key(packages, base_status, merged_usr, new_root, compression, epoch)
    record = cache.get_layer(key)
    notes_path = cache.root / "layers" / f"{key}.notes"
    if record is not None:
        notes = notes_path.read_text().splitlines() if notes_path.is_file() else []
        return PackagesLayer(BuiltLayer.from_record(record), packages, notes)
    paths = fetch(packages) if fetch is not None else fetch_debs(fetcher, packages)
    debs = [open_deb(path, f"{p.name} {p.version}") for p, path in zip(packages, paths)]
    with ThreadPoolExecutor(_UNPACKERS) as pool:
        contents = list(pool.map(_read_data, debs))
    tree = Tree(merged_usr)
    lists = [_unpack(tree, deb, members) for deb, members in zip(debs, contents)]
    del contents
    names = [p.name for p in packages]
    notes = [f"done for {line}" for line in apply_actions(tree, names)]
    postinsts = {p.name: d.info.scripts.get("postinst", "") for p, d in zip(packages, debs)}
    alts = apply_alternatives(tree, postinsts)
    if alts:
        notes.append("alternatives: " + ", ".join(alts))
    mods = nginx_modules(tree, postinsts)
    if mods:
        notes.append("nginx modules enabled: " + ", ".join(mods))
    notes += [line for p, d in zip(packages, debs) if (line := uncovered(p.name, d.info.scripts))]
    _record(tree, packages, debs, lists, base_status, new_root)
    if new_root and merged_usr:
        for top in MERGED_DIRS:
            if tree.has(f"usr/{top}") and top not in tree.entries:
                tree.add_symlink(top, f"usr/{top}")
    samples, total = tree.samples()
    built = layer_from_stream(cache, tree.tar_chunks(epoch), compression, samples, total)
    cache.put_layer(key, built.to_record())
    notes_path.write_text("".join(n + "\n" for n in notes))
    return PackagesLayer(built, packages, notes)


def _record(tree: Tree, packages: list[Package], debs: list[DebFile], lists: list[list[str]], base_status: str,
            new_root: bool) -> None:
    """dpkg's status stanzas and info files for the packages added."""
    stanzas = []
    for p, deb, listed in zip(packages, debs, lists):
        conffiles = []
        for path in deb.info.conffiles:
            data = tree.read(tree.canonical(path))
            conffiles.append((path, hashlib.md5(data).hexdigest() if data is not None else "newconffile"))
        stanzas.append(status_stanza(deb.info.control, conffiles))
        info = "var/lib/dpkg/info/" + info_name(p.name, p.architecture, p.multi_arch)
        tree.add_file(info + ".list", "".join(l + "\n" for l in listed).encode())
        if deb.info.md5sums:
            tree.add_file(info + ".md5sums", deb.info.md5sums.encode())
        if deb.info.conffiles:
            tree.add_file(info + ".conffiles", "".join(c + "\n" for c in deb.info.conffiles).encode())
    tree.add_file("var/lib/dpkg/status", merge_status(base_status, stanzas).encode())
    if new_root:
        for folder in ("var/lib/dpkg/updates", "var/lib/dpkg/triggers", "var/lib/dpkg/alternatives"):
            tree.add_dir(folder)
        tree.add_file("var/lib/dpkg/available", b"")
