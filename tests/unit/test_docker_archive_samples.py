"""A docker-archive's layer is compressed as a build would compress its tree: the same samples
(the middle of the biggest files) found from the layer's tar headers alone, with bounded memory
and time for a hostile layer of endless entries."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from ociassemble.image.layer import SAMPLE_BYTES, SAMPLE_FILES
from ociassemble.transport import archive
from ociassemble.transport.archive import _tree_samples


def _tar(files: list[tuple[str, bytes]], dirs: int = 0) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(dirs):
            ti = tarfile.TarInfo(f"d{i}")
            ti.type = tarfile.DIRTYPE
            tf.addfile(ti)
        for name, data in files:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    buf.seek(0)
    return buf


def test_the_biggest_files_middles_are_sampled_as_a_build_samples_them() -> None:
    files = [(f"f{i}", os.urandom(1000 * (i + 1))) for i in range(SAMPLE_FILES + 3)]
    files.append(("big", bytes(range(256)) * 4096))  # 1 MiB: sampled from its middle, SAMPLE_BYTES long
    samples, total = _tree_samples(_tar(files, dirs=2))
    assert total == sum(len(d) for _, d in files)
    biggest = sorted(files, key=lambda t: -len(t[1]))[:SAMPLE_FILES]
    assert samples == [d[len(d) // 2:len(d) // 2 + SAMPLE_BYTES] for _, d in biggest]


@pytest.mark.parametrize("data", [b"not a tar at all" * 100, b""])
def test_a_layer_that_is_no_tar_gives_no_samples(data: bytes) -> None:
    assert _tree_samples(io.BytesIO(data)) == ([], 0)


def test_a_layer_of_too_many_entries_gives_no_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive, "SAMPLE_MAX_ENTRIES", 50)
    assert _tree_samples(_tar([("w", os.urandom(1 << 20))], dirs=49)) != ([], 0)  # 50 entries: sampled
    assert _tree_samples(_tar([("w", os.urandom(1 << 20))], dirs=50)) == ([], 0)  # 51: gzipped unsampled
