"""Property-based tests (hypothesis): the reference parser, the layer writer and the
unpacker, over generated inputs rather than hand-picked ones."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import tarfile
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from ociassemble.cache import BlobCache
from ociassemble.compress import Compression
from ociassemble.errors import ArchiveError, ImageReferenceError
from ociassemble.layer import LayerSource, build_layer
from ociassemble.oci import Descriptor, MediaType
from ociassemble.reference import parse_reference
from ociassemble.unpack import unpack_layers

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
