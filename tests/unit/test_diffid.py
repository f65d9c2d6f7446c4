"""A layer's diff_id check (``image.diffid``) reads no more than it must: an uncompressed
layer's diff_id is its digest, so a model's layer pulled, pushed or read from a layout is
not hashed a second time for it."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
from pathlib import Path

import pytest

from ociassemble.errors import ArchiveError
from ociassemble.image.cache import BlobCache
from ociassemble.image.diffid import stage_layer, verify_cached_diff_id
from ociassemble.image.oci import Descriptor, MediaType

MIB = 1 << 20


def _rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_a_cached_plain_tars_diff_id_is_checked_without_reading_it(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache")
    data = os.urandom(MIB) * 32
    digest = str(cache.put_bytes(data))
    desc = Descriptor(MediaType.LAYER_TAR, digest, len(data))
    before = _rchar()
    verify_cached_diff_id(cache, desc, digest, "layout x")
    assert _rchar() - before < MIB  # not the 32 MiB a hash of it reads
    assert cache.verified_diff_id(digest) == digest
    with pytest.raises(ArchiveError, match=f"layer {digest} unpacks to diff_id {digest}, but the image config says"):
        verify_cached_diff_id(cache, desc, _sha(b"other"), "layout x")


def test_a_cached_gzip_layer_is_still_decompressed_once_to_check_it(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache")
    raw = os.urandom(MIB) * 4
    blob = gzip.compress(raw, 1)
    digest = str(cache.put_bytes(blob))
    desc = Descriptor(MediaType.LAYER_GZIP, digest, len(blob))
    with pytest.raises(ArchiveError, match=f"unpacks to diff_id {_sha(raw)}"):
        verify_cached_diff_id(cache, desc, _sha(b"lie"), "layout x")
    before = _rchar()
    verify_cached_diff_id(cache, desc, _sha(raw), "layout x")
    assert _rchar() - before >= len(blob)
    assert cache.verified_diff_id(digest) == _sha(raw)


@pytest.mark.parametrize("claimed", ["right", "wrong"])
def test_staging_a_plain_tar_checks_its_diff_id_against_its_digest(tmp_path: Path, claimed: str) -> None:
    cache = BlobCache(tmp_path / "cache")
    data = os.urandom(3 * MIB)
    desc = Descriptor(MediaType.LAYER_TAR, _sha(data), len(data))
    diff_id = desc.digest if claimed == "right" else _sha(b"lie")
    if claimed == "wrong":
        with pytest.raises(ArchiveError, match=f"unpacks to diff_id {desc.digest}, but the image config says {diff_id}"):
            stage_layer(cache, io.BytesIO(data), desc, diff_id, "layout x")
        assert not cache.has(desc.digest)
        return
    stage_layer(cache, io.BytesIO(data), desc, diff_id, "layout x").commit()
    assert cache.stored(desc.digest) and cache.verified_diff_id(desc.digest) == desc.digest
    # bytes that are not the digest's are refused as such, whatever the diff_id
    bad = Descriptor(MediaType.LAYER_TAR, _sha(b"x" + data[1:]), len(data))
    with pytest.raises(Exception, match="digest"):
        stage_layer(BlobCache(tmp_path / "c2"), io.BytesIO(data), bad, bad.digest, "layout x")
