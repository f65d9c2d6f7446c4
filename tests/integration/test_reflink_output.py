"""An ``oci:`` output on a filesystem with reflinks shares the model's blocks instead of copying them.

Each test makes its own XFS (``reflink=1``) in a sparse image file, loop-mounts it under its
tmp_path and unmounts it by that path afterwards. Needs root (mount), like ``ociassemble run``'s
tests; as root, a missing ``mkfs.xfs`` (xfsprogs, installed by scripts/setup) or loop device
is a failure, not a skip.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
from held_fixtures import held_model_image

from ociassemble.image.assemble import Image
from ociassemble.image.blobref import SourceChangedError
from ociassemble.image.cache import BlobCache
from ociassemble.transport.clone import write_record
from ociassemble.transport.layout import write_layout

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a loop filesystem needs root")

MODEL = 64 << 20
IMAGE_SIZE = 512 << 20  # sparse; mkfs.xfs wants 300 MB at least


@pytest.fixture
def xfs(tmp_path: Path) -> Iterator[Path]:
    mkfs = shutil.which("mkfs.xfs")
    if mkfs is None:
        pytest.fail("mkfs.xfs is missing: run scripts/setup (it installs xfsprogs)", pytrace=False)
    img = tmp_path / "xfs.img"
    with open(img, "wb") as f:
        f.truncate(IMAGE_SIZE)
    subprocess.run([mkfs, "-q", "-m", "reflink=1", str(img)], check=True, capture_output=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], capture_output=True, text=True)
    if proc.returncode:
        pytest.fail(f"cannot loop-mount an XFS image: {proc.stderr.strip()}", pytrace=False)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)  # by its own path (loop device freed with it)


def _free(path: Path) -> int:
    os.sync()
    st = os.statvfs(path)
    return st.f_bfree * st.f_frsize


def _model(root: Path) -> Path:
    d = root / "model"
    d.mkdir()
    with open(d / "weights.bin", "wb") as f:
        for _ in range(MODEL >> 20):
            f.write(os.urandom(1 << 20))
        f.write(b"odd tail" * 100)  # not a multiple of the block size: the tail is written
    (d / "config.json").write_text('{"dim": 4}\n')
    return d


def _check_layout(out: Path, image: Image, model: Path, tmp_path: Path) -> None:
    for blob in (out / "blobs" / "sha256").iterdir():
        h = hashlib.sha256()
        with open(blob, "rb") as f:
            while data := f.read(1 << 20):
                h.update(data)
        assert h.hexdigest() == blob.name
    info = json.loads(subprocess.run(["skopeo", "inspect", f"oci:{out}:v1"], check=True, capture_output=True).stdout)
    assert info["Digest"] == image.digest
    subprocess.run(["skopeo", "copy", "--quiet", "--preserve-digests", f"oci:{out}:v1",
                    f"oci:{tmp_path / 'copy'}:v1"], check=True, capture_output=True)  # verifies every blob
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{out}:v1", str(bundle)], check=True, capture_output=True)
    weights = bundle / "rootfs" / "var" / "models" / "m" / "1" / "weights.bin"
    assert _sha(weights) == _sha(model / "weights.bin")


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(1 << 20):
            h.update(data)
    return h.hexdigest()


def test_oci_output_on_reflink_xfs_shares_the_model(xfs: Path, tmp_path: Path) -> None:
    model = _model(xfs)
    cache = BlobCache(tmp_path / "cache")  # on another filesystem: it only holds the references
    before = _free(xfs)
    image = held_model_image(cache, model)
    out = xfs / "out"
    write_layout(image, cache, out, "v1")
    used = before - _free(xfs)
    assert used < MODEL // 100, f"the layout took {used} bytes of the filesystem for a {MODEL}-byte model"
    layer = (out / "blobs" / "sha256" / image.manifest.layers[0].digest.split(":")[1])
    assert layer.stat().st_size > MODEL
    _check_layout(out, image, model, tmp_path)


def test_output_on_another_filesystem_copies_and_verifies(xfs: Path, tmp_path: Path) -> None:
    """No clone across filesystems (EXDEV): each file is copied, hashed, and the layout is the same."""
    model = _model(xfs)
    cache = BlobCache(tmp_path / "cache")
    image = held_model_image(cache, model)
    out = tmp_path / "out"
    write_layout(image, cache, out, "v1")
    _check_layout(out, image, model, tmp_path)


def test_a_model_changed_after_the_build_is_refused_not_cloned(xfs: Path, tmp_path: Path) -> None:
    model = _model(xfs)
    cache = BlobCache(tmp_path / "cache")
    image = held_model_image(cache, model)
    record = cache.ref(image.manifest.layers[0].digest)
    assert record is not None
    target = model / "weights.bin"
    os.utime(target)  # its fingerprint moved, its bytes did not: copied, hashed, accepted
    fd = os.open(xfs / "touched", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        report = write_record(record, fd)
    finally:
        os.close(fd)
    assert report.copied_files == 2 and report.cloned == 0
    assert "sha256:" + _sha(xfs / "touched") == record.digest
    with open(target, "r+b") as f:  # same size, other bytes
        f.seek(5 << 20)
        f.write(b"\xff" * 16)
    fd = os.open(xfs / "changed", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with pytest.raises(SourceChangedError, match="weights.bin changed after the image was built"):
            write_record(record, fd)
    finally:
        os.close(fd)
    with pytest.raises(SourceChangedError, match="weights.bin"):
        write_layout(image, cache, xfs / "out", "v1")
    assert not (xfs / "out").exists()
    assert not [p for p in xfs.iterdir() if p.name.startswith(".out")]  # no temp left behind
