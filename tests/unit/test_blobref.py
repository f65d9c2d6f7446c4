"""A blob held by reference never hands out bytes that do not hash to its digest."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from ociassemble.image.blobref import FilePart, RefReader, RefRecord, SourceChangedError, stamp_of
from ociassemble.image.cache import BlobCache
from ociassemble.image.compress import Compression
from ociassemble.image.layer import LayerSource, build_layer

SIZE = 3 << 20


def _held(tmp_path: Path) -> tuple[BlobCache, str, Path]:
    src = tmp_path / "m"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(SIZE))
    cache = BlobCache(tmp_path / "c")
    layer = build_layer(cache, [LayerSource(src, "/m")], compression=Compression("none"), epoch=0)
    return cache, layer.descriptor.digest, src / "w.bin"


#: Both ways of reading a held blob: hashed (every reader but a push), and checked by the
#: files' fingerprints alone (a push: the registry checks the digest).
BOTH = pytest.mark.parametrize("receiver_verifies", [False, True], ids=["hashed", "fingerprints"])


@BOTH
def test_reads_back_to_its_digest_and_seeks(tmp_path: Path, receiver_verifies: bool) -> None:
    cache, digest, _ = _held(tmp_path)
    with cache.open(digest) as f:
        whole = f.read()
    assert "sha256:" + hashlib.sha256(whole).hexdigest() == digest
    with cache.open(digest, receiver_verifies=receiver_verifies) as f:
        f.seek(SIZE // 2 + 7)
        assert f.read() == whole[SIZE // 2 + 7:]
        f.seek(100)  # backwards: read again from the start
        assert f.read(50) == whole[100:150]


@BOTH
def test_a_touched_but_same_file_is_accepted(tmp_path: Path, receiver_verifies: bool) -> None:
    cache, digest, weights = _held(tmp_path)
    os.utime(weights, ns=(1, 1))
    with cache.open(digest, receiver_verifies=receiver_verifies) as f:
        assert len(f.read()) > SIZE


@BOTH
def test_a_change_while_reading_stops_before_the_last_byte(tmp_path: Path, receiver_verifies: bool) -> None:
    """Hashed, the digest misses at the end; unhashed, the file's fingerprint moved by the
    time its last byte was read: either way those bytes never come out."""
    cache, digest, weights = _held(tmp_path)
    r = cache.open(digest, receiver_verifies=receiver_verifies)
    assert isinstance(r, RefReader)
    got = r.read(1 << 20)  # the file is open, its fingerprint checked
    time.sleep(0.02)  # past a coarse timestamp tick (kernels before 6.13), as any real edit is
    with open(weights, "r+b") as w:  # then changed behind the reader's back
        w.seek(SIZE - 10)
        w.write(b"X" * 10)
    with pytest.raises(SourceChangedError, match="w.bin changed"):
        while data := r.read(1 << 20):
            got += data
    assert len(got) < r.size  # the bytes that would complete a wrong blob never came out
    r.close()


@BOTH
def test_empty_files_read_back(tmp_path: Path, receiver_verifies: bool) -> None:
    """An empty file (first, between two others, last) adds headers only; the blob reads
    back whole (a zero-byte read of it was once taken for a file that shrank), and from
    any offset: in a header, in a file, at the end."""
    src = tmp_path / "t"
    (src / "a").mkdir(parents=True)
    (src / "a" / "0-empty").write_bytes(b"")
    (src / "a" / "1-data").write_bytes(b"x" * 5000)
    (src / "a" / "2-empty").write_bytes(b"")
    (src / "z-empty").write_bytes(b"")
    cache = BlobCache(tmp_path / "c")
    layer = build_layer(cache, [LayerSource(src, "/t")], compression=Compression("none"), epoch=0)
    with cache.open(layer.descriptor.digest, receiver_verifies=receiver_verifies) as f:
        whole = f.read()
    assert "sha256:" + hashlib.sha256(whole).hexdigest() == layer.descriptor.digest
    assert len(whole) == layer.descriptor.size
    at = whole.index(b"x" * 5000)
    for offset in (0, 511, 512, at - 1, at, at + 4999, at + 5000, len(whole) - 1, len(whole)):
        with cache.open(layer.descriptor.digest, receiver_verifies=receiver_verifies) as f:
            assert f.seek(offset) == offset
            assert f.read() == whole[offset:], offset


def test_unhashed_reading_trusts_the_fingerprint_and_leaves_the_digest_to_the_receiver(tmp_path: Path) -> None:
    """The boundary of the fingerprint check: a file whose content changed while its
    fingerprint still matches the record (a write in the build's timestamp tick, bytes
    changed under the filesystem) reads through unhashed: the receiver's digest check
    (a registry's DIGEST_INVALID) is what catches it, and ``mismatch_error`` names it."""
    from ociassemble.image.blobref import FilePart, RefRecord, mismatch_error, stamp_of

    cache, digest, weights = _held(tmp_path)
    with open(weights, "r+b") as w:
        w.write(b"Y" * 10)
    rec = cache.ref(digest)
    assert rec is not None
    st = os.stat(weights)
    blind = RefRecord(rec.digest, rec.size, rec.inline, tuple(
        FilePart(p.path, p.size, stamp_of(st), p.sha256) if isinstance(p, FilePart) else p for p in rec.parts))
    cache.put_ref(blind)
    with cache.open(digest, receiver_verifies=True) as f:
        assert "sha256:" + hashlib.sha256(f.read()).hexdigest() != digest
    with pytest.raises(SourceChangedError, match="w.bin changed"):
        with cache.open(digest) as f:
            f.read()
    assert str(weights) in str(mismatch_error(blind))


def _ranged(tmp_path: Path) -> tuple[RefRecord, bytes, Path]:
    """A record of one run of bytes inside a bigger file (an OCI archive's member)."""
    whole = os.urandom(SIZE)
    path = tmp_path / "archive.tar"
    path.write_bytes(whole)
    start, size = 5 * 512, SIZE // 3
    run = whole[start:start + size]
    st = os.stat(path)
    part = FilePart(str(path), size, stamp_of(st), hashlib.sha256(run).hexdigest(), offset=start, file_size=SIZE)
    return RefRecord.build("sha256:" + hashlib.sha256(run).hexdigest(), [part]), run, path


@BOTH
def test_a_run_of_a_files_bytes_reads_back_and_seeks(tmp_path: Path, receiver_verifies: bool) -> None:
    record, run, path = _ranged(tmp_path)
    with RefReader(record, hashed=not receiver_verifies) as r:
        assert r.read() == run
    with RefReader(record, hashed=not receiver_verifies) as r:
        r.seek(len(run) - 1000)
        assert r.read() == run[-1000:]
    os.utime(path, ns=(1, 1))  # touched: hashed again over its run only, and accepted
    with RefReader(record, hashed=True) as r:
        assert r.read() == run
    assert RefRecord.from_bytes(record.to_bytes()) == record


def test_a_run_changed_or_outside_its_file_is_refused(tmp_path: Path) -> None:
    record, run, path = _ranged(tmp_path)
    part = record.files[0]
    with open(path, "r+b") as f:  # a byte of the run, same size
        f.seek(part.offset + 10)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 1]))
    with pytest.raises(SourceChangedError, match="changed after ociassemble read the image in it"), \
            RefReader(record) as r:
        r.read()
    raw = [part.path, part.size, list(part.stamp), part.sha256, [SIZE - 10, SIZE]]  # runs past the file's end
    with pytest.raises(ValueError, match="not inside the file"):
        FilePart.from_json(raw)
