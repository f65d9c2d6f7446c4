"""Property-based tests (hypothesis): the reference parser, the layer writer, the unpacker
and the base-tarball checker, over generated inputs rather than hand-picked ones."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import tarfile
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ociassemble.errors import ArchiveError, ImageReferenceError
from ociassemble.image.cache import BlobCache
from ociassemble.image.compress import Compression
from ociassemble.image.layer import LayerSource, build_layer, scan_sources, tar_chunks
from ociassemble.image.oci import Descriptor, MediaType
from ociassemble.image.tarcheck import TarballChecker
from ociassemble.registry.reference import parse_reference
from ociassemble.run.unpack import unpack_layers

component = st.from_regex(r"[a-z0-9]{1,8}(?:[._-][a-z0-9]{1,8})?", fullmatch=True)
tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
host = st.one_of(st.just("localhost:5000"), st.from_regex(r"[a-z]{1,8}\.[a-z]{2,5}(?::[0-9]{2,5})?", fullmatch=True))


@given(host, st.lists(component, min_size=1, max_size=3), tag)
def test_reference_round_trips(registry: str, parts: list[str], t: str) -> None:
    text = f"{registry}/{'/'.join(parts)}:{t}"
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag) == (registry, "/".join(parts), t)
    assert parse_reference(str(ref)) == ref


@given(st.text(max_size=40))
def test_reference_parser_never_crashes(text: str) -> None:
    try:
        ref = parse_reference(text)
    except ImageReferenceError as exc:
        assert "\n" not in str(exc)
    else:
        assert ref.repository and (ref.tag or ref.digest)


names = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}", fullmatch=True).filter(lambda n: n not in (".", ".."))
trees = st.recursive(
    st.one_of(st.binary(max_size=2000).map(lambda b: ("file", b, False)),
              st.binary(max_size=50).map(lambda b: ("file", b, True))),
    lambda children: st.dictionaries(names, children, min_size=0, max_size=4).map(lambda d: ("dir", d)),
    max_leaves=12)


def _materialise(root: Path, node) -> None:  # type: ignore[no-untyped-def]
    if node[0] == "dir":
        root.mkdir(exist_ok=True)
        for name, child in node[1].items():
            _materialise(root / name, child)
    else:
        root.write_bytes(node[1])
        os.chmod(root, 0o755 if node[2] else 0o644)


def _snapshot(root: Path) -> dict[str, tuple[str, int, bytes]]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = ("link", 0, os.readlink(p).encode())
        elif p.is_dir():
            out[rel] = ("dir", 0o755, b"")
        else:
            out[rel] = ("file", p.stat().st_mode & 0o777, p.read_bytes())
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(names, trees, max_size=5), st.booleans())
def test_any_tree_round_trips_through_gnu_tar_and_our_unpacker(top: dict, with_link: bool) -> None:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        src = t / "src"
        _materialise(src, ("dir", top))
        if with_link:
            os.symlink("some/where", src / "zz-link")
        cache = BlobCache(t / "cache")
        layer = build_layer(cache, [LayerSource(src, "/")], compression=Compression.parse("gzip"), epoch=0)
        expected = {k: v for k, v in _snapshot(src).items()}
        raw = gzip.decompress(cache.path(layer.descriptor.digest).read_bytes())
        gnu = t / "gnu"
        gnu.mkdir()
        subprocess.run(["tar", "-xf", "-", "-C", str(gnu)], input=raw, check=True)
        assert _snapshot(gnu) == expected
        ours = t / "ours"
        ours.mkdir()
        unpack_layers(cache, [layer.descriptor], ours, diff_ids=[layer.diff_id])
        assert _snapshot(ours) == expected


def _layer_from_tar_bytes(cache: BlobCache, data: bytes) -> Descriptor:
    digest = cache.put_bytes(data)
    return Descriptor(MediaType.LAYER_TAR, str(digest), len(data))


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=0, max_size=3000))
def test_unpacker_fuzz_random_bytes_only_raise_archive_errors(data: bytes) -> None:
    """A brief fuzz of the tar reader: garbage is refused with ArchiveError, never a crash,
    and nothing is written outside the target root."""
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        canary = t / "canary"
        canary.write_text("untouched")
        root = t / "root"
        root.mkdir()
        cache = BlobCache(t / "cache")
        try:
            unpack_layers(cache, [_layer_from_tar_bytes(cache, data)], root)
        except ArchiveError:
            pass
        assert canary.read_text() == "untouched"
        assert sorted(p.name for p in t.iterdir()) == ["cache", "canary", "root"]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "../x", "/abs", "a/../..", "c/.wh.d", ".wh..wh..opq", "ln"]),
                          st.sampled_from(["file", "dir", "sym", "hard"]),
                          st.sampled_from(["a", "../../etc", "/etc/passwd", "b", "c"])), max_size=8))
def test_unpacker_fuzz_hostile_member_lists_stay_inside(members: list[tuple[str, str, str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        outside = t / "etc"
        outside.mkdir()
        (outside / "passwd").write_text("canary")
        root = t / "root"
        root.mkdir()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for name, kind, target in members:
                info = tarfile.TarInfo(name)
                if kind == "dir":
                    info.type = tarfile.DIRTYPE
                elif kind == "sym":
                    info.type, info.linkname = tarfile.SYMTYPE, target
                elif kind == "hard":
                    info.type, info.linkname = tarfile.LNKTYPE, target
                data = b"x" if kind == "file" else b""
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        cache = BlobCache(t / "cache")
        try:
            unpack_layers(cache, [_layer_from_tar_bytes(cache, buf.getvalue())], root)
        except ArchiveError:
            pass
        assert (outside / "passwd").read_text() == "canary"
        assert sorted(p.name for p in t.iterdir()) == ["cache", "etc", "root"]
        for p in root.rglob("*"):
            if p.is_symlink():
                continue
            assert os.path.realpath(p).startswith(str(root))


# -- the base-tarball checker (tarcheck) -------------------------------------------------------

def _writer_tarball(t: Path, top: dict, with_links: bool) -> bytes:  # type: ignore[type-arg]
    """The tar stream our layer writer makes of a generated tree (with symlinks and hard links)."""
    src = t / "src"
    _materialise(src, ("dir", top))
    if with_links:
        os.symlink("some/where", src / "zz-link")
        os.symlink("/usr/lib", src / "zz-abs-link")
        files = sorted(p for p in src.rglob("*") if p.is_file() and not p.is_symlink())
        if files:
            os.link(files[0], src / "zz-hard")
    return b"".join(tar_chunks(scan_sources([LayerSource(src, "/", preserve=True)]), 0))


def _check(data: bytes, split: int = 4096) -> int:
    checker = TarballChecker("base tarball t.tar")
    for i in range(0, len(data), split):
        checker.feed(data[i:i + split])
    checker.finish()
    return checker.entries


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(names, trees, min_size=1, max_size=5), st.booleans(), st.sampled_from([512, 700, 4096, 1 << 20]))
def test_any_tarball_our_writer_makes_passes_the_base_check(top: dict, with_links: bool, split: int) -> None:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as tmp:
        data = _writer_tarball(Path(tmp), top, with_links)
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            count = len(tf.getmembers())
        assert _check(data, split) == count


def _single(info: tarfile.TarInfo, data: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data) if data else None)
    raw = buf.getvalue()
    while raw.endswith(bytes(512)):
        raw = raw[:-512]
    return raw


def _hostile(kind: str, name: str, last_file: str) -> tuple[tarfile.TarInfo, bytes, str]:
    """One hostile entry: (header, data, the name the refusal must quote)."""
    info = tarfile.TarInfo()
    if kind == "dotdot":
        info.name = f"{name}/../../{name}"
    elif kind == "usr-lib-dotdot":
        info.name = "usr/lib/../../../" + name
    elif kind == "absolute":
        info.name = "/" + name
    elif kind == "long":
        info.name = f"{name}/" + "n" * 256
    elif kind == "hard-outside":
        info.name, info.type, info.linkname = f"{name}-h", tarfile.LNKTYPE, "../" + name
    elif kind == "hard-absolute":
        info.name, info.type, info.linkname = f"{name}-h", tarfile.LNKTYPE, "/etc/shadow"
    elif kind == "hard-missing":
        info.name, info.type, info.linkname = f"{name}-h", tarfile.LNKTYPE, f"no/such/{name}"
    elif kind == "hard-later":  # spliced first: its target comes later
        info.name, info.type, info.linkname = f"aaa-{name}-h", tarfile.LNKTYPE, last_file
    elif kind == "symlink-out":
        info.name, info.type, info.linkname = f"{name}-up", tarfile.SYMTYPE, "../../../" + name
    else:  # through-symlink: spliced last, after the tree's zz-link
        info.name = f"zz-link/{name}"
    return info, b"pwned" if info.type == tarfile.REGTYPE else b"", info.name


HOSTILE_KINDS = ["dotdot", "usr-lib-dotdot", "absolute", "long", "hard-outside", "hard-absolute", "hard-missing",
                 "hard-later", "symlink-out", "through-symlink"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(names, trees, min_size=1, max_size=4), st.sampled_from(HOSTILE_KINDS), names,
       st.integers(min_value=0), st.sampled_from([512, 1000, 1 << 20]))
def test_any_single_hostile_entry_spliced_in_is_refused(top: dict, kind: str, name: str, where: int,  # type: ignore[type-arg]
                                                        split: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = _writer_tarball(Path(tmp), top, with_links=True)
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            members = tf.getmembers()
        files = [m.name for m in members if m.isreg()]
        end = len(data)
        while data[end - 512:end] == bytes(512):
            end -= 512
        offsets = [m.offset for m in members] + [end]
        if kind == "hard-later":
            if not files:
                return
            at = 0
        elif kind == "through-symlink":
            at = end
        else:
            at = offsets[where % len(offsets)]
        info, payload, quoted = _hostile(kind, name, files[-1] if files else "")
        spliced = data[:at] + _single(info, payload) + data[at:]
        try:
            _check(spliced, split)
        except ArchiveError as exc:
            assert f"entry {quoted!r}" in str(exc), str(exc)
            assert "\n" not in str(exc)
        else:
            raise AssertionError(f"{kind} entry {quoted!r} spliced at {at} was accepted")
