"""``OnePassReader``: the layer's tar stream read once, from any offset already read, hashed once."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from ociassemble.image.blobref import UNKNOWN, RefRecord, SourceChangedError
from ociassemble.image.cache import BlobCache
from ociassemble.image.compress import Compression
from ociassemble.image.layer import LayerSource, build_layer, scan_sources, tar_chunks
from ociassemble.image.onepass import OnePassReader
from ociassemble.transport.clone import write_record


def _tree(tmp_path: Path) -> Path:
    d = tmp_path / "m"
    (d / "sub").mkdir(parents=True)
    (d / "a.bin").write_bytes(os.urandom(3 << 20))  # aligned (a PAX comment pads its header)
    (d / "b.txt").write_text("hi\n")
    (d / "empty").write_bytes(b"")
    (d / "sub" / "c").write_bytes(os.urandom(5000))
    return d


def test_stream_is_tar_chunks_and_a_resume_hashes_only_past_the_mark(tmp_path: Path) -> None:
    entries = scan_sources([LayerSource(_tree(tmp_path), "/m")])
    expected = b"".join(tar_chunks(entries, 0))
    r = OnePassReader(entries, 0)
    assert r.size == len(expected)
    buf = bytearray(700_000)
    out = bytearray()
    for _ in range(3):
        n = r.readinto(buf)
        out += buf[:n]
    assert r.reached == r.streamed == 2_100_000
    r.seek(300_000)  # a resume at the registry's offset: the gap is read again, not hashed again
    del out[300_000:]
    while n := r.readinto(buf):
        out += buf[:n]
    assert bytes(out) == expected
    assert r.digest == "sha256:" + hashlib.sha256(expected).hexdigest()
    record = r.record()
    assert record.size == len(expected) and record.digest == r.digest
    assert sorted(Path(p.path).name for p in record.files) == ["a.bin", "b.txt", "c"]
    assert {p.sha256 for p in record.files} == {UNKNOWN}  # one hash: the blob's, none per file
    with pytest.raises(ValueError):
        r.seek(r.size + 1)


def test_the_record_is_builds_less_the_files_digests(tmp_path: Path) -> None:
    d = _tree(tmp_path)
    built = build_layer(BlobCache(tmp_path / "c"), [LayerSource(d, "/m")], compression=Compression("none"), epoch=0)
    plain = BlobCache(tmp_path / "c").ref(built.descriptor.digest)
    assert plain is not None and all(p.sha256 != UNKNOWN for p in plain.files)
    record = _onepass_record(d)
    assert record.digest == built.descriptor.digest
    assert record == RefRecord(plain.digest, plain.size, plain.inline, tuple(
        p if isinstance(p, int) else replace(p, sha256=UNKNOWN) for p in plain.parts))


def _onepass_record(d: Path) -> RefRecord:
    with OnePassReader(scan_sources([LayerSource(d, "/m")]), 0) as r:
        while r.read(1 << 20):
            pass
        return r.record()


@pytest.mark.parametrize("receiver_verifies", [False, True], ids=["hashed", "fingerprints"])
def test_a_record_without_file_digests_reads_back_after_a_touch(tmp_path: Path, receiver_verifies: bool) -> None:
    d = _tree(tmp_path)
    record = _onepass_record(d)
    cache = BlobCache(tmp_path / "c")
    cache.put_ref(record)
    os.utime(d / "a.bin", ns=(1, 1))  # a touch: the stream's digest vouches for it now
    with cache.open(record.digest, receiver_verifies=receiver_verifies) as f:
        assert "sha256:" + hashlib.sha256(f.read()).hexdigest() == record.digest


def test_a_record_without_file_digests_names_a_changed_file(tmp_path: Path) -> None:
    """Same size, new bytes: the stream's digest misses, and the file whose fingerprint moved is named;
    a copy into a layout (``transport.clone``) refuses it before writing it."""
    d = _tree(tmp_path)
    record = _onepass_record(d)
    cache = BlobCache(tmp_path / "c")
    cache.put_ref(record)
    time.sleep(0.02)
    with open(d / "sub" / "c", "r+b") as f:
        f.write(b"changed")
    with pytest.raises(SourceChangedError, match=f"{d / 'sub' / 'c'} changed after the image was built"):
        with cache.open(record.digest) as f:
            f.read()
    out = tmp_path / "blob"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with pytest.raises(SourceChangedError, match=str(d / "sub" / "c")):
            write_record(record, fd)
    finally:
        os.close(fd)


def test_a_record_without_file_digests_copies_an_unchanged_tree(tmp_path: Path) -> None:
    d = _tree(tmp_path)
    record = _onepass_record(d)
    out = tmp_path / "blob"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        write_record(record, fd)
    finally:
        os.close(fd)
    assert "sha256:" + hashlib.sha256(out.read_bytes()).hexdigest() == record.digest


def test_a_file_written_while_read_is_named(tmp_path: Path) -> None:
    d = _tree(tmp_path)
    entries = scan_sources([LayerSource(d, "/m")])
    r = OnePassReader(entries, 0)
    buf = bytearray(1 << 20)
    r.readinto(buf)  # a.bin is open, its first MiB read
    time.sleep(0.02)  # past the coarse timestamp tick of its creation
    with open(d / "a.bin", "r+b") as f:
        f.write(b"X")
        os.utime(f.fileno(), ns=(0, os.stat(d / "a.bin").st_mtime_ns))  # mtime put back: ctime still moved
    with pytest.raises(SourceChangedError, match=str(d / "a.bin")):
        while r.readinto(buf):
            pass
