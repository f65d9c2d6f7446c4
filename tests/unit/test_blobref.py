"""A blob held by reference never hands out bytes that do not hash to its digest."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from ociassemble.blobref import RefReader, SourceChangedError
from ociassemble.cache import BlobCache
from ociassemble.compress import Compression
from ociassemble.layer import LayerSource, build_layer

SIZE = 3 << 20


def _held(tmp_path: Path) -> tuple[BlobCache, str, Path]:
    src = tmp_path / "m"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(SIZE))
    cache = BlobCache(tmp_path / "c")
    layer = build_layer(cache, [LayerSource(src, "/m")], compression=Compression("none"), epoch=0)
    return cache, layer.descriptor.digest, src / "w.bin"


def test_reads_back_to_its_digest_and_seeks(tmp_path: Path) -> None:
    cache, digest, _ = _held(tmp_path)
    with cache.open(digest) as f:
        whole = f.read()
    assert "sha256:" + hashlib.sha256(whole).hexdigest() == digest
    with cache.open(digest) as f:
        f.seek(SIZE // 2 + 7)
        assert f.read() == whole[SIZE // 2 + 7:]
        f.seek(100)  # backwards: read again from the start
        assert f.read(50) == whole[100:150]


def test_a_touched_but_same_file_is_accepted(tmp_path: Path) -> None:
    cache, digest, weights = _held(tmp_path)
    os.utime(weights, ns=(1, 1))
    with cache.open(digest) as f:
        assert len(f.read()) > SIZE


def test_a_change_while_reading_stops_before_the_last_byte(tmp_path: Path) -> None:
    cache, digest, weights = _held(tmp_path)
    r = cache.open(digest)
    assert isinstance(r, RefReader)
    got = r.read(1 << 20)  # the file is open, its fingerprint checked
    with open(weights, "r+b") as w:  # then changed behind the reader's back
        w.seek(SIZE - 10)
        w.write(b"X" * 10)
    with pytest.raises(SourceChangedError, match="w.bin changed"):
        while data := r.read(1 << 20):
            got += data
    assert len(got) < r.size  # the bytes that would complete a wrong blob never came out
    r.close()


def test_empty_files_read_back(tmp_path: Path) -> None:
    """An empty file (first, between two others, last) adds headers only; the blob reads
    back whole (a zero-byte read of it was once taken for a file that shrank)."""
    src = tmp_path / "t"
    (src / "a").mkdir(parents=True)
    (src / "a" / "0-empty").write_bytes(b"")
    (src / "a" / "1-data").write_bytes(b"x" * 5000)
    (src / "a" / "2-empty").write_bytes(b"")
    (src / "z-empty").write_bytes(b"")
    cache = BlobCache(tmp_path / "c")
    layer = build_layer(cache, [LayerSource(src, "/t")], compression=Compression("none"), epoch=0)
    with cache.open(layer.descriptor.digest) as f:
        whole = f.read()
    assert "sha256:" + hashlib.sha256(whole).hexdigest() == layer.descriptor.digest
    assert len(whole) == layer.descriptor.size
