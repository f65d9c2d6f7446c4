"""The layer writer: deterministic bytes, the tree rules, and refusals with clear errors."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import deflate
import pytest
import zstandard

from ociassemble.errors import InputError
from ociassemble.image.cache import BlobCache
from ociassemble.image.compress import Compression, _huffman_member
from ociassemble.image.layer import ALIGN, ALIGN_MIN_SIZE, LayerSource, build_layer, scan_sources
from ociassemble.image.tarcheck import TarballChecker
from ociassemble.run.unpack import unpack_layers

GZIP = Compression.parse("gzip")


def make_tree(root: Path, mtime: float) -> Path:
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "a.txt").write_text("alpha\n")
    (root / "pkg" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "pkg" / "run.sh", 0o700)
    (root / "pkg" / "sub" / "data.bin").write_bytes(bytes(range(256)) * 100)
    os.symlink("../a.txt", root / "pkg" / "sub" / "link")
    os.link(root / "pkg" / "a.txt", root / "pkg" / "hard.txt")
    os.chmod(root / "pkg" / "a.txt", 0o600)
    for p in (root / "pkg").rglob("*"):
        os.utime(p, (mtime, mtime), follow_symlinks=False)
    return root / "pkg"


def layer_bytes(cache: BlobCache, digest: str) -> bytes:
    with cache.open(digest) as f:  # a file of the cache, or (uncompressed) held by reference
        return f.read()


def test_same_tree_in_two_places_gives_same_digest(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        a = make_tree(tmp_path / "one", 1_000_000)
    finally:
        os.umask(old)
    b = make_tree(tmp_path / "two", time.time())
    la = build_layer(BlobCache(tmp_path / "c1"), [LayerSource(a, "/opt/app")], compression=GZIP, epoch=0)
    lb = build_layer(BlobCache(tmp_path / "c2"), [LayerSource(b, "/opt/app")], compression=GZIP, epoch=0)
    assert la.descriptor.digest == lb.descriptor.digest
    assert la.diff_id == lb.diff_id
    assert not la.reused and not lb.reused


#: The blob digest of the fixed tiny tree below, per codec. tests/e2e/test_cross_arch.py
#: checks the same tree on arm64 (under qemu): a codec that changes these changes every
#: user's digests (bump LAYER_FORMAT).
GOLDEN_TINY_TREE = {
    "gzip": "sha256:c6bd18a716eb53249787ff393ee3aec5bc4438ab69f2285ef8aa7edd1a1106e4",
    "zstd": "sha256:ac291835b3beb8131c503f90820db6cb809baee55ffe7866db54b624fd843e29",
    "none": "sha256:915abbaec382c7fb3d5e2f3062b5b5a33019072dab79ee2a0e624a79533ea4af",
}


@pytest.mark.parametrize("codec", sorted(GOLDEN_TINY_TREE))
def test_golden_digest_for_a_fixed_tiny_tree(tmp_path: Path, codec: str) -> None:
    """Pins the layer format: a change here changes every user's digests (bump LAYER_FORMAT)."""
    src = tmp_path / "t"
    src.mkdir()
    (src / "hello.txt").write_text("hello, world\n")
    (src / "bin").mkdir()
    (src / "bin" / "tool").write_text("#!/bin/sh\n")
    os.chmod(src / "bin" / "tool", 0o755)
    layer = build_layer(BlobCache(tmp_path / "c"), [LayerSource(src, "/app")],
                        compression=Compression.parse(codec), epoch=0)
    assert layer.diff_id == "sha256:915abbaec382c7fb3d5e2f3062b5b5a33019072dab79ee2a0e624a79533ea4af"
    assert layer.descriptor.digest == GOLDEN_TINY_TREE[codec]


#: The diff_id of the tree of big files below, which pins where the alignment puts their data
#: (the tiny tree above has no file of ALIGN_MIN_SIZE, so its tar is the same as before it).
GOLDEN_ALIGNED_TREE = "sha256:35ced752e9d0bbe5e269fe4499c8f8bf86313e2f58a6b569f594efcc4daf7103"


def make_big_tree(src: Path) -> Path:
    """Files at, above and below ALIGN_MIN_SIZE, one behind a path too long for a ustar header."""
    (src / "m" / ("deep-" * 30)).mkdir(parents=True)
    block = bytes(range(256)) * 16  # 4 KiB
    (src / "m" / "a.bin").write_bytes(block * 256)  # exactly ALIGN_MIN_SIZE
    (src / "m" / "b.txt").write_text("between\n")
    (src / "m" / "c.bin").write_bytes(block * 300 + b"tail")
    (src / "m" / ("deep-" * 30) / "w.bin").write_bytes(block * 257 + b"x" * 700)
    (src / "m" / "small.bin").write_bytes(block * 255)  # under the threshold: not aligned
    return src


@pytest.mark.parametrize("codec", sorted(GOLDEN_TINY_TREE))
def test_big_files_data_is_aligned_in_the_tar_for_every_codec(tmp_path: Path, codec: str) -> None:
    """Each file of ALIGN_MIN_SIZE or more has its data at a multiple of ALIGN of the tar (what
    a reflink needs), padded by a PAX comment that Python's tarfile, GNU tar and our own
    base-tarball check all take; the tar is the same whatever the codec."""
    src = make_big_tree(tmp_path / "t")
    cache = BlobCache(tmp_path / "c")
    layer = build_layer(cache, [LayerSource(src, "/")], compression=Compression.parse(codec), epoch=0)
    assert layer.diff_id == GOLDEN_ALIGNED_TREE
    raw = layer_bytes(cache, layer.descriptor.digest)
    raw = {"gzip": gzip.decompress, "zstd": lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b),
           "none": bytes}[codec](raw)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        members = {m.name: m for m in tf.getmembers() if m.isfile()}
        for name, m in members.items():
            data = tf.extractfile(m).read()  # type: ignore[union-attr]
            assert data == (src / name).read_bytes()
            assert m.offset_data % ALIGN == 0 or m.size < ALIGN_MIN_SIZE, name
    assert members["m/small.bin"].offset_data % ALIGN != 0  # below the threshold: as before
    assert all(members[n].offset_data % ALIGN == 0 for n in members if members[n].size >= ALIGN_MIN_SIZE)
    assert len([n for n in members if members[n].size >= ALIGN_MIN_SIZE]) == 3
    checker = TarballChecker("the layer")
    checker.feed(raw)
    checker.finish()
    out = tmp_path / "x"
    out.mkdir()
    proc = subprocess.run(["tar", "-xf", "-", "-C", str(out)], input=raw, capture_output=True, check=True)
    assert proc.stderr == b""  # no "unknown keyword" warning: comment is a standard one
    ours = tmp_path / "ours"  # and ociassemble's own unpacker (run, inspect) takes it, diff_id checked
    ours.mkdir()
    unpack_layers(cache, [layer.descriptor], ours, diff_ids=[layer.diff_id])
    for name in members:
        assert (out / name).read_bytes() == (src / name).read_bytes() == (ours / name).read_bytes()


def weights_like(n: int) -> bytes:
    """``n`` bytes that barely compress, as float32 weights: each bit 1 with p = 5/8
    ((x & y) | z of SHAKE-256 streams, fixed by this code alone), so Huffman coding saves
    ~4 % and LZ77 matches next to nothing."""
    x, y, z = (int.from_bytes(hashlib.shake_256(b"weights %s" % k).digest(n), "big") for k in (b"x", b"y", b"z"))
    return ((x & y) | z).to_bytes(n, "big")


#: Blob digest of a 17 MiB ``weights_like`` file as /m/w.bin, gzip forced: written
#: Huffman-only by zlib-ng. tests/e2e/test_cross_arch.py checks the same case on arm64.
GOLDEN_WEIGHTS_GZIP = "sha256:7615212a8e17a00b2315fd696216f4e5fb668e29c643ea052d828aa66f066c8d"


def test_forced_gzip_of_weights_is_huffman_only_and_golden(tmp_path: Path) -> None:
    """A layer whose sample barely compresses is gzipped Huffman-only: no bigger than
    libdeflate level 1 would make it, readable by any gunzip, and pinned."""
    src = tmp_path / "m"
    src.mkdir()
    data = weights_like(17 << 20)
    (src / "w.bin").write_bytes(data)
    cache = BlobCache(tmp_path / "c")
    layer = build_layer(cache, [LayerSource(src, "/m")], compression=Compression.parse("gzip"), epoch=0)
    assert layer.compression.startswith("gzip-huffman-")
    blob = layer_bytes(cache, layer.descriptor.digest)
    raw = gzip.decompress(blob)
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == layer.diff_id
    libdeflate = sum(len(deflate.gzip_compress(raw[i:i + (1 << 20)], 1)) for i in range(0, len(raw), 1 << 20))
    # this synthetic data gives libdeflate a few short matches (real float32 weights do not:
    # docs/performance.md); with the tar's alignment padding it stays within 0.3 %
    assert len(blob) <= libdeflate * 1.003
    assert len(blob) < 0.97 * len(raw)  # Huffman-coded, not stored
    assert layer.descriptor.digest == GOLDEN_WEIGHTS_GZIP


def test_huffman_only_layer_gives_text_blocks_to_libdeflate(tmp_path: Path) -> None:
    """Weights plus text, the weights the eight biggest files (the sample, so the layer is
    Huffman-only): the text's blocks still get libdeflate's matches, and the layer is no
    bigger than libdeflate level 1 would make it."""
    src = tmp_path / "m"
    src.mkdir()
    w = weights_like(16 << 20)
    for i in range(8):
        (src / f"w{i}.bin").write_bytes(w[i << 21:(i + 1) << 21])
    (src / "t.txt").write_bytes(b"".join(b"line %d of a text that compresses\n" % i for i in range(45_000)))
    cache = BlobCache(tmp_path / "c")
    layer = build_layer(cache, [LayerSource(src, "/m")], compression=Compression.parse("gzip"), epoch=0)
    assert layer.compression.startswith("gzip-huffman-")
    blob = layer_bytes(cache, layer.descriptor.digest)
    raw = gzip.decompress(blob)
    blocks = [raw[i:i + (1 << 20)] for i in range(0, len(raw), 1 << 20)]
    all_huffman = sum(len(_huffman_member(b, 1)) for b in blocks)
    assert len(blob) < all_huffman - 500_000  # the 1.6 MB of text: ~0.53 Huffman-only, ~0.07 with matches
    # on this synthetic data libdeflate finds a few short matches Huffman-only cannot (on
    # float32 weights it does not); a block half text, half weights stays Huffman-only
    assert len(blob) <= 1.003 * sum(len(deflate.gzip_compress(b, 1)) for b in blocks)


def test_gzip_keeps_libdeflate_for_content_that_compresses_or_another_level(tmp_path: Path) -> None:
    src = tmp_path / "m"
    src.mkdir()
    (src / "w.bin").write_bytes(weights_like(17 << 20))
    (src / "t.txt").write_bytes(b"text that compresses well " * (700 << 10))  # 18 MiB: the biggest file
    layer = build_layer(BlobCache(tmp_path / "c"), [LayerSource(src, "/m")], compression=Compression.parse("gzip"), epoch=0)
    assert layer.compression.startswith("gzip1-") and "libdeflate" in layer.compression
    (src / "t.txt").unlink()
    layer6 = build_layer(BlobCache(tmp_path / "c6"), [LayerSource(src, "/m")], compression=Compression.parse("gzip", 6), epoch=0)
    assert layer6.compression.startswith("gzip6-")


def test_tar_rules_and_roundtrip_through_gnu_tar(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", 12345)
    cache = BlobCache(tmp_path / "c")
    layer = build_layer(cache, [LayerSource(src, "/opt/app")], compression=GZIP, epoch=0)
    raw = gzip.decompress(layer_bytes(cache, layer.descriptor.digest))
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        members = {m.name.rstrip("/"): m for m in tf.getmembers()}
    names = list(members)
    assert names == sorted(names, key=lambda n: n.encode())
    assert names[0] == "opt/app"  # no entry for /opt: the base's own is kept
    for m in members.values():
        assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", 0)
    assert members["opt/app/a.txt"].mode == 0o644  # 0600 normalised
    assert members["opt/app/run.sh"].mode == 0o755  # exec bit kept
    assert members["opt/app/sub/link"].issym() and members["opt/app/sub/link"].linkname == "../a.txt"
    assert members["opt/app/hard.txt"].islnk() and members["opt/app/hard.txt"].linkname == "opt/app/a.txt"
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["tar", "-xf", "-", "-C", str(out)], input=raw, check=True)
    assert (out / "opt/app/sub/data.bin").read_bytes() == (src / "sub" / "data.bin").read_bytes()
    assert os.stat(out / "opt/app/a.txt").st_ino == os.stat(out / "opt/app/hard.txt").st_ino
    gz = layer_bytes(cache, layer.descriptor.digest)
    assert gz[3] == 0 and gz[4:8] == b"\0\0\0\0"  # no file name, mtime 0


def test_unchanged_tree_is_not_read_again(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", 1)
    cache = BlobCache(tmp_path / "c")
    first = build_layer(cache, [LayerSource(src, "/")], compression=GZIP)
    again = build_layer(cache, [LayerSource(src, "/")], compression=GZIP)
    assert again.reused and again.descriptor == first.descriptor
    (src / "a.txt").write_text("changed\n")
    changed = build_layer(cache, [LayerSource(src, "/")], compression=GZIP)
    assert not changed.reused and changed.descriptor.digest != first.descriptor.digest


def test_single_file_source_and_directory_destination(tmp_path: Path) -> None:
    f = tmp_path / "model.pkl"
    f.write_bytes(b"weights")
    names = [e.name for e in scan_sources([LayerSource(f, "/models/m/1/")])]
    assert names == ["models/m/1/model.pkl"]
    names = [e.name for e in scan_sources([LayerSource(f, "/srv/renamed.bin")])]
    assert names[-1] == "srv/renamed.bin"


def test_symlink_escaping_the_tree_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "ctx"
    src.mkdir()
    (tmp_path / "secret").write_text("x")
    os.symlink("../secret", src / "escape")
    with pytest.raises(InputError, match="points outside"):
        scan_sources([LayerSource(src, "/")])


def test_absolute_symlink_is_an_in_image_path(tmp_path: Path) -> None:
    src = tmp_path / "ctx"
    src.mkdir()
    os.symlink("/etc/nginx/sites-available/app", src / "app")
    (entry,) = [e for e in scan_sources([LayerSource(src, "/")]) if e.kind == "symlink"]
    assert entry.linkname == "/etc/nginx/sites-available/app"


def test_fifo_and_socket_and_device_are_refused(tmp_path: Path) -> None:
    src = tmp_path / "ctx"
    src.mkdir()
    os.mkfifo(src / "pipe")
    with pytest.raises(InputError, match="is a FIFO"):
        scan_sources([LayerSource(src, "/")])
    os.unlink(src / "pipe")
    if os.geteuid() == 0:
        os.mknod(src / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        with pytest.raises(InputError, match="is a device file"):
            scan_sources([LayerSource(src, "/")])


def test_missing_source_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nope: no such file"):
        scan_sources([LayerSource(tmp_path / "nope", "/")])


def test_file_changing_during_build_is_detected(tmp_path: Path) -> None:
    from ociassemble.image.layer import tar_chunks

    src = tmp_path / "ctx"
    src.mkdir()
    (src / "f").write_bytes(b"a" * 10)
    entries = scan_sources([LayerSource(src, "/")])
    (src / "f").write_bytes(b"b" * 20)
    with pytest.raises(InputError, match="changed while it was being read"):
        list(tar_chunks(entries, 0))


@pytest.mark.parametrize("codec", ["gzip", "zstd", "none"])
def test_every_codec_round_trips(tmp_path: Path, codec: str) -> None:
    src = make_tree(tmp_path / "src", 5)
    cache = BlobCache(tmp_path / "c")
    layer = build_layer(cache, [LayerSource(src, "/")], compression=Compression.parse(codec))
    data = layer_bytes(cache, layer.descriptor.digest)
    if codec == "gzip":
        data = gzip.decompress(data)
    elif codec == "zstd":
        import zstandard

        data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    import hashlib

    assert "sha256:" + hashlib.sha256(data).hexdigest() == layer.diff_id
    assert layer.descriptor.media_type.endswith({"gzip": "+gzip", "zstd": "+zstd", "none": ".tar"}[codec])
    import hashlib as _h

    blob = layer_bytes(cache, layer.descriptor.digest)
    assert "sha256:" + _h.sha256(blob).hexdigest() == layer.descriptor.digest  # hashed once for none, still right
    assert layer.descriptor.size == len(blob)


def test_layer_bytes_do_not_depend_on_chunking_or_cores(tmp_path: Path) -> None:
    """Fixed-size blocks: the compressed bytes are the same however the tar stream arrives."""
    from unittest import mock

    from ociassemble.image.compress import GZIP_BLOCK, compress_stream

    data = (os.urandom(GZIP_BLOCK // 3) + b"text " * 100_000) * 5  # several blocks, not aligned
    outs = set()
    for size, cpus in ((GZIP_BLOCK, 2), (GZIP_BLOCK * 2, 1), (4097, 8), (len(data), 3)):
        for codec in ("gzip", "zstd"):
            out = io.BytesIO()
            with mock.patch("os.cpu_count", return_value=cpus):
                compress_stream((data[i:i + size] for i in range(0, len(data), size)), out,
                                Compression.parse(codec), lambda c: None)
            outs.add((codec, out.getvalue()))
    assert len(outs) == 2
    by = dict(outs)
    assert gzip.decompress(by["gzip"]) == data


def test_a_failing_blob_write_fails_the_build_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ociassemble.image.cache import BlobWriter

    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(3 << 20))
    cache = BlobCache(tmp_path / "c")

    def broken(self: BlobWriter, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(BlobWriter, "write", broken)
    for codec in ("gzip", "zstd", "none"):
        with pytest.raises(OSError):  # none: as cached bytes (a held one writes no blob)
            build_layer(cache, [LayerSource(src, "/")], compression=Compression.parse(codec), by_reference=False)
    assert list((tmp_path / "c" / "tmp").iterdir()) == []
    assert list((tmp_path / "c" / "blobs" / "sha256").iterdir()) == []


def test_compression_level_from_the_config_reaches_the_codec(tmp_path: Path) -> None:
    from ociassemble.settings import Settings

    (tmp_path / "ociassemble.toml").write_text('compression = "zstd"\ncompression_level = 7\n')
    project = Settings.load(tmp_path, environ={})
    assert Compression.parse(project.compression, project.compression_level) == Compression("zstd", 7)
    (tmp_path / "ociassemble.toml").write_text('compression_level = "fast"\n')
    with pytest.raises(Exception, match="compression_level must be a whole number"):
        Settings.load(tmp_path, environ={})


def test_gzip_is_one_member_per_block_each_compressed_alone() -> None:
    """Reproducibility: the stream is independent gzip members, one per 1 MiB of input,
    whatever the chunking or the number of codec threads; each member carries no name and
    mtime 0, and inflates alone to exactly its block."""
    import zlib as _zlib

    from ociassemble.image.compress import GZIP_BLOCK, compress_stream

    rng = __import__("random").Random(7)
    words = [bytes(rng.choice(b"abcdefghij ") for _ in range(rng.randint(2, 9))) for _ in range(500)]
    data = b"".join(rng.choice(words) for _ in range(3_000_000))[: 12 * GZIP_BLOCK + 12345]
    outs = set()
    for step in (700_001, 1 << 20, 65536):
        out = io.BytesIO()
        compress_stream(iter([data[i:i + step] for i in range(0, len(data), step)]), out,
                        Compression.parse("gzip"), lambda c: None)
        outs.add(out.getvalue())
    assert len(outs) == 1
    stream = outs.pop()
    members, rest = [], stream
    while rest:
        assert rest[:4] == b"\x1f\x8b\x08\x00" and rest[4:8] == b"\0\0\0\0", "a member has a name, flags or a time"
        d = _zlib.decompressobj(31)
        members.append(d.decompress(rest))
        assert d.eof
        rest = d.unused_data
    assert [len(m) for m in members] == [GZIP_BLOCK] * 12 + [12345]
    assert b"".join(members) == data
    assert __import__("gzip").decompress(stream) == data


def test_empty_gzip_layer_is_one_empty_member() -> None:
    from ociassemble.image.compress import compress_stream

    out = io.BytesIO()
    compress_stream(iter([]), out, Compression.parse("gzip"), lambda c: None)
    assert __import__("gzip").decompress(out.getvalue()) == b""


def test_gzip_stream_is_the_same_on_every_run() -> None:
    """Repeated runs of a multi-block stream, its members on several threads, agree byte for byte."""
    import hashlib
    import random

    from ociassemble.image.compress import compress_stream

    rng = random.Random(11)
    words = [bytes(rng.choice(b"etaoin shrdlu") for _ in range(rng.randint(2, 12))) for _ in range(3000)]
    data = b"".join(rng.choice(words) for _ in range(2_400_000))[: 16 << 20]
    digests = set()
    for _ in range(6):
        out = io.BytesIO()
        compress_stream(iter([data[i:i + (1 << 20)] for i in range(0, len(data), 1 << 20)]), out,
                        Compression.parse("gzip"), lambda c: None)
        digests.add(hashlib.sha256(out.getvalue()).hexdigest())
    assert len(digests) == 1
