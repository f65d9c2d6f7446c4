"""Unpacking layers: whiteouts applied, and hostile archives refused without touching the host.

Each hostile layer is made here with ``tarfile``; every refusal must be one line naming
the layer digest and the entry, and leave the canary files outside the root as they were.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard

from ociassemble.errors import ArchiveError
from ociassemble.image.assemble import ImageBuilder
from ociassemble.image.cache import BlobCache
from ociassemble.image.layer import BuiltLayer
from ociassemble.image.oci import Descriptor, MediaType
from ociassemble.run.unpack import UnpackLimits, rootfs_path, unpack_image, unpack_layers

CANARY = b"canary: must never change\n"


# -- building hostile layers -------------------------------------------------

def _info(name: str, kind: bytes, *, mode: int = 0o644, linkname: str = "", size: int = 0) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = mode
    ti.linkname = linkname
    ti.size = size
    return ti


def f(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    return _info(name, tarfile.REGTYPE, mode=mode, size=len(data)), data


def d(name: str, mode: int = 0o755) -> tuple[tarfile.TarInfo, bytes]:
    return _info(name, tarfile.DIRTYPE, mode=mode), b""


def sym(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    return _info(name, tarfile.SYMTYPE, mode=0o777, linkname=target), b""


def hard(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    return _info(name, tarfile.LNKTYPE, linkname=target), b""


def dev(name: str) -> tuple[tarfile.TarInfo, bytes]:
    ti = _info(name, tarfile.CHRTYPE, mode=0o666)
    ti.devmajor, ti.devminor = 1, 3
    return ti, b""


def tar_bytes(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, data in entries:
            tf.addfile(ti, io.BytesIO(data) if ti.isreg() else None)
    return buf.getvalue()


def put_layer(cache: BlobCache, raw_tar: bytes, media_type: str = MediaType.LAYER_GZIP) -> tuple[Descriptor, str]:
    if media_type == MediaType.LAYER_GZIP:
        blob = gzip.compress(raw_tar, mtime=0)
    elif media_type == MediaType.LAYER_ZSTD:
        blob = zstandard.ZstdCompressor().compress(raw_tar)
    else:
        blob = raw_tar
    digest = str(cache.put_bytes(blob))
    return Descriptor(media_type, digest, len(blob)), "sha256:" + hashlib.sha256(raw_tar).hexdigest()


def layer(cache: BlobCache, entries: list[tuple[tarfile.TarInfo, bytes]], media_type: str = MediaType.LAYER_GZIP) -> Descriptor:
    return put_layer(cache, tar_bytes(entries), media_type)[0]


# -- fixtures ------------------------------------------------------------------

@pytest.fixture
def cache(tmp_path: Path) -> BlobCache:
    return BlobCache(tmp_path / "cache")


@pytest.fixture
def box(tmp_path: Path) -> Path:
    """``box/root`` is the target; ``box/canary`` and ``box/outside/canary`` must survive."""
    (tmp_path / "box" / "root").mkdir(parents=True)
    (tmp_path / "box" / "outside").mkdir()
    (tmp_path / "box" / "canary").write_bytes(CANARY)
    (tmp_path / "box" / "outside" / "canary").write_bytes(CANARY)
    return tmp_path / "box"


def assert_host_untouched(box: Path) -> None:
    assert (box / "canary").read_bytes() == CANARY
    assert (box / "outside" / "canary").read_bytes() == CANARY
    assert sorted(p.name for p in (box / "outside").iterdir()) == ["canary"]
    assert sorted(p.name for p in box.iterdir()) == ["canary", "outside", "root"]


def refused(cache: BlobCache, box: Path, layers: list[Descriptor], *words: str) -> str:
    with pytest.raises(ArchiveError) as exc:
        unpack_layers(cache, layers, box / "root")
    msg = str(exc.value)
    assert "\n" not in msg
    assert layers[-1].digest in msg, msg
    for w in words:
        assert w in msg, msg
    assert_host_untouched(box)
    return msg


# -- hostile archives ------------------------------------------------------------

@pytest.mark.parametrize("name", ["../canary", "a/../../canary", "./../canary", "a/b/../../../canary"])
def test_path_traversal_is_refused(cache: BlobCache, box: Path, name: str) -> None:
    refused(cache, box, [layer(cache, [f(name, b"pwned")])], repr(name), "path traversal")


@pytest.mark.parametrize("absolute", [True, False])
def test_absolute_names_are_refused(cache: BlobCache, box: Path, absolute: bool) -> None:
    outside = str(box / "outside" / "canary")
    name = outside if absolute else "/etc/absolute-test"
    msg = refused(cache, box, [layer(cache, [d("etc"), f(name, b"pwned")])], repr(name), "an absolute name")
    assert msg.endswith("refusing to unpack an unsafe image")
    assert not Path("/etc/absolute-test").exists()
    assert not (box / "root" / outside.lstrip("/")).exists()


@pytest.mark.parametrize("name", ["/.wh.canary", "/etc/.wh.passwd", "/.wh..wh..opq", "//etc/.wh..wh..opq"])
def test_absolute_whiteouts_are_refused(cache: BlobCache, box: Path, name: str) -> None:
    lower = layer(cache, [d("etc"), f("etc/passwd", b"root"), f("canary", b"keep")])
    refused(cache, box, [lower, layer(cache, [f(name, b"")])], repr(name), "an absolute name")
    assert (box / "root" / "etc" / "passwd").read_bytes() == b"root"
    assert (box / "root" / "canary").read_bytes() == b"keep"


def test_over_long_name_component_is_refused(cache: BlobCache, box: Path) -> None:
    name = "etc/" + "x" * 256
    refused(cache, box, [layer(cache, [f(name, b"long")])], "256 bytes")


def test_symlink_leading_out_of_the_root_is_refused(cache: BlobCache, box: Path) -> None:
    refused(cache, box, [layer(cache, [d("a"), sym("a/up", "../../canary")])], "'a/up'", "leads outside the root")


def test_writing_through_a_symlink_in_the_same_layer_is_refused(cache: BlobCache, box: Path) -> None:
    # an absolute symlink is an in-image path, so it is allowed; writing through it is not
    hostile = layer(cache, [sym("out", str(box / "outside")), f("out/canary", b"pwned")])
    refused(cache, box, [hostile], "'out/canary'", "parent 'out' is a symlink")


def test_writing_through_a_symlink_of_a_lower_layer_is_refused(cache: BlobCache, box: Path) -> None:
    lower = layer(cache, [d("etc"), sym("etc/x", str(box / "outside"))])
    upper = layer(cache, [f("etc/x/new", b"pwned")])
    refused(cache, box, [lower, upper], "'etc/x/new'", "is a symlink")


def test_an_entry_replaces_a_symlink_instead_of_following_it(cache: BlobCache, box: Path) -> None:
    lower = layer(cache, [sym("victim", str(box / "outside" / "canary")), sym("dir", str(box / "outside"))])
    upper = layer(cache, [f("victim", b"replaced"), d("dir")])
    unpack_layers(cache, [lower, upper], box / "root")
    assert (box / "root" / "victim").read_bytes() == b"replaced"
    assert not (box / "root" / "victim").is_symlink()
    assert (box / "root" / "dir").is_dir() and not (box / "root" / "dir").is_symlink()
    assert_host_untouched(box)


@pytest.mark.parametrize("target, words", [
    ("../canary", ["path traversal"]),
    ("/etc/passwd", ["an absolute name"]),
    ("missing", ["not already inside the root"]),
])
def test_hard_link_escapes_are_refused(cache: BlobCache, box: Path, target: str, words: list[str]) -> None:
    refused(cache, box, [layer(cache, [hard("h", target)])], "'h'", *words)


def test_hard_link_through_a_symlink_is_refused(cache: BlobCache, box: Path) -> None:
    hostile = layer(cache, [sym("s", str(box / "outside")), hard("h", "s/canary")])
    refused(cache, box, [hostile], "'h'", "parent 's' is a symlink")


def test_hard_link_to_an_entry_inside_works(cache: BlobCache, box: Path) -> None:
    lower = layer(cache, [f("a", b"shared")])
    upper = layer(cache, [d("b"), hard("b/a2", "a"), hard("./b/a3", "./a")])
    unpack_layers(cache, [lower, upper], box / "root")
    st = (box / "root" / "a").stat()
    assert st.st_nlink == 3
    assert (box / "root" / "b" / "a3").read_bytes() == b"shared"


@pytest.mark.parametrize("entries, words", [
    ([f(".wh...")], ["names no entry"]),
    ([d("a"), f("a/.wh..")], ["names no entry"]),
    ([f(".wh.")], ["names no entry"]),
    ([f("../.wh.canary")], ["path traversal"]),
])
def test_whiteout_tricks_are_refused(cache: BlobCache, box: Path, entries: list, words: list[str]) -> None:
    (box / "root" / "keep").write_text("keep")
    refused(cache, box, [layer(cache, entries)], *words)
    assert (box / "root" / "keep").exists()


def test_whiteout_through_a_symlink_is_refused(cache: BlobCache, box: Path) -> None:
    lower = layer(cache, [sym("s", str(box / "outside"))])
    for upper in ([f("s/.wh.canary")], [f("s/.wh..wh..opq")]):
        refused(cache, box, [lower, layer(cache, upper)], "is a symlink")


def test_device_nodes_are_skipped_and_setuid_bits_cleared(cache: BlobCache, box: Path) -> None:
    entries = [d("dev"), dev("dev/null"), f("bin/su", b"#!", mode=0o4755), f("bin/wall", b"#!", mode=0o2755),
               d("shared", mode=0o2775), d("tmp", mode=0o1777)]
    unpack_layers(cache, [layer(cache, entries)], box / "root")
    assert not (box / "root" / "dev" / "null").exists()
    assert stat.S_IMODE((box / "root" / "bin" / "su").stat().st_mode) == 0o755
    assert stat.S_IMODE((box / "root" / "bin" / "wall").stat().st_mode) == 0o755
    assert stat.S_IMODE((box / "root" / "shared").stat().st_mode) == 0o775
    assert stat.S_IMODE((box / "root" / "tmp").stat().st_mode) == 0o1777


# -- bombs and broken streams ----------------------------------------------------

def test_size_bomb_is_refused(cache: BlobCache, box: Path) -> None:
    bomb = layer(cache, [f("zeros", bytes(32 << 20))])
    assert bomb.size < 1 << 20  # a gzip bomb: tiny blob, big content
    with pytest.raises(ArchiveError, match="size limit") as exc:
        unpack_layers(cache, [bomb], box / "root", limits=UnpackLimits(max_bytes=8 << 20))
    assert bomb.digest in str(exc.value) and "'zeros'" in str(exc.value)
    assert not (box / "root" / "zeros").exists()
    assert_host_untouched(box)


def test_size_limit_counts_all_layers(cache: BlobCache, box: Path) -> None:
    one = layer(cache, [f("a", bytes(6 << 20))])
    two = layer(cache, [f("b", bytes(6 << 20))])
    with pytest.raises(ArchiveError, match="size limit"):
        unpack_layers(cache, [one, two], box / "root", limits=UnpackLimits(max_bytes=8 << 20))


def test_entry_count_bomb_is_refused(cache: BlobCache, box: Path) -> None:
    bomb = layer(cache, [f(f"f{i}", b"") for i in range(500)])
    with pytest.raises(ArchiveError, match="entry limit"):
        unpack_layers(cache, [bomb], box / "root", limits=UnpackLimits(max_entries=100))
    assert_host_untouched(box)


def test_oversized_pax_header_is_refused(cache: BlobCache, box: Path) -> None:
    ti, data = f("big-header")
    ti.pax_headers = {"comment": "x" * (2 << 20)}
    with pytest.raises(ArchiveError, match="PAX header"):
        unpack_layers(cache, [layer(cache, [(ti, data)])], box / "root", limits=UnpackLimits(max_header_bytes=1 << 20))


@pytest.mark.parametrize("media_type", [MediaType.LAYER_GZIP, MediaType.LAYER_ZSTD, MediaType.LAYER_TAR])
def test_truncated_layer_is_refused(cache: BlobCache, box: Path, media_type: str) -> None:
    desc, _ = put_layer(cache, tar_bytes([f("a", os.urandom(200_000)), f("b", b"b")]), media_type)
    blob = cache.path(desc.digest).read_bytes()[: desc.size // 2]
    digest = str(cache.put_bytes(blob))
    truncated = Descriptor(media_type, digest, len(blob))
    with pytest.raises(ArchiveError, match="truncated or corrupt|not a valid tar") as exc:
        unpack_layers(cache, [truncated], box / "root")
    assert digest in str(exc.value)
    assert_host_untouched(box)


def test_blob_not_matching_its_digest_is_refused(cache: BlobCache, box: Path) -> None:
    desc = layer(cache, [f("a", b"original")])
    good = tar_bytes([f("a", b"tampered")])
    cache.path(desc.digest).write_bytes(gzip.compress(good, mtime=0))
    with pytest.raises(ArchiveError, match=desc.digest):
        unpack_layers(cache, [desc], box / "root")


def test_diff_id_mismatch_is_refused(cache: BlobCache, box: Path) -> None:
    desc = layer(cache, [f("a")])
    with pytest.raises(ArchiveError, match="diff_id"):
        unpack_layers(cache, [desc], box / "root", diff_ids=["sha256:" + "0" * 64])


# -- whiteouts and media types ---------------------------------------------------

def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("media_type", [MediaType.LAYER_GZIP, MediaType.LAYER_ZSTD, MediaType.LAYER_TAR])
def test_whiteouts_and_opaque_directories(cache: BlobCache, box: Path, media_type: str) -> None:
    lower = layer(cache, [
        d("a"), f("a/file1"), f("a/file2"),
        d("b"), f("b/x"),
        d("c"), f("c/y"), d("c/sub"), f("c/sub/deep"),
        d("d"), f("d/old"),
        d("e"), f("e/old"), sym("link", "/a"),
    ], media_type)
    upper = layer(cache, [
        f("a/.wh.file1"),
        f(".wh.b"),
        d("c"), f("c/.wh..wh..opq"), f("c/z"),
        d("d"), f("d/new"), f(".wh.d"),        # same layer: d/new stays, lower d/old goes
        f("e/new"), f("e/.wh..wh..opq"),      # opaque after a new entry: the new one stays
        f(".wh.link"),                        # removes the symlink, not its target
        f(".wh.never-existed"), f("nowhere/.wh.x"),
        f("x/.wh..wh.plnk"),                  # AUFS metadata: ignored
    ], media_type)
    unpack_layers(cache, [lower, upper], box / "root")
    assert listing(box / "root") == ["a", "a/file2", "c", "c/z", "d", "d/new", "e", "e/new"]
    assert_host_untouched(box)


def test_file_replaces_directory_and_back(cache: BlobCache, box: Path) -> None:
    lower = layer(cache, [d("p"), f("p/child"), f("q", b"file")])
    upper = layer(cache, [f("p", b"now a file"), d("q"), f("q/inner")])
    unpack_layers(cache, [lower, upper], box / "root")
    assert (box / "root" / "p").read_bytes() == b"now a file"
    assert (box / "root" / "q" / "inner").exists()


# -- the cached rootfs ---------------------------------------------------------------

def _image(cache: BlobCache, layers: list[tuple[Descriptor, str]]):
    b = ImageBuilder(cache)
    for desc, diff_id in layers:
        b.add_layer(BuiltLayer(desc, diff_id), "test")
    return b.build()


def test_unpack_image_is_cached_and_atomic(cache: BlobCache) -> None:
    good = put_layer(cache, tar_bytes([d("etc"), f("etc/hostname", b"box\n")]))
    img = _image(cache, [good])
    root = unpack_image(img, cache)
    assert root == rootfs_path(cache, img)
    assert (root / "etc" / "hostname").read_bytes() == b"box\n"
    (root / "marker").write_text("same dir reused")
    assert (unpack_image(img, cache) / "marker").exists()

    bad = put_layer(cache, tar_bytes([f("../escape")]))
    broken = _image(cache, [good, bad])
    with pytest.raises(ArchiveError, match="path traversal"):
        unpack_image(broken, cache)
    assert not rootfs_path(cache, broken).exists()
    assert [p.name for p in rootfs_path(cache, broken).parent.iterdir()] == [root.name]


def test_stale_temp_dirs_of_dead_unpacks_are_removed(cache: BlobCache) -> None:
    img = _image(cache, [put_layer(cache, tar_bytes([f("a")]))])
    parent = rootfs_path(cache, img).parent
    parent.mkdir(parents=True)
    stale = parent / ".tmp-0123456789abcdef-999999999-00000000"
    (stale / "half").mkdir(parents=True)
    unpack_image(img, cache)
    assert not stale.exists()
