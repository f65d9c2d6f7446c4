"""``OnePassReader``: the layer's tar stream read once, from any offset already read, hashed once."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from ociassemble.image.blobref import SourceChangedError
from ociassemble.image.layer import LayerSource, scan_sources, tar_chunks
from ociassemble.image.onepass import OnePassReader


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
    assert r.hashed == r.streamed == 2_100_000
    r.seek(300_000)  # a resume at the registry's offset: the gap is read again, not hashed again
    del out[300_000:]
    while n := r.readinto(buf):
        out += buf[:n]
    assert bytes(out) == expected
    assert r.digest == "sha256:" + hashlib.sha256(expected).hexdigest()
    record = r.record()
    assert record.size == len(expected) and record.digest == r.digest
    assert {Path(p.path).name: p.sha256 for p in record.files} == {
        name: hashlib.sha256((tmp_path / "m" / rel).read_bytes()).hexdigest()
        for name, rel in (("a.bin", "a.bin"), ("b.txt", "b.txt"), ("c", "sub/c"))}
    with pytest.raises(ValueError):
        r.seek(r.size + 1)


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
