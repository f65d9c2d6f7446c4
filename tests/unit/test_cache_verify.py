"""``BlobCache.verify`` / ``prune`` and ``ociassemble cache``: every blob re-hashed, abandoned temp
files told from busy ones by their lock, layer-index records checked against their blobs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ociassemble import cli
from ociassemble.image.cache import BlobCache
from ociassemble.image.digest import Digest
from ociassemble.image.layer import LayerSource, build_layer


def _layer(cache: BlobCache, tmp_path: Path) -> str:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "a.txt").write_text("hello\n")
    return build_layer(cache, [LayerSource(src, "/app")], epoch=0).descriptor.digest


def test_a_sound_cache_verifies_clean(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "c")
    _layer(cache, tmp_path)
    cache.put_bytes(b"{}")
    report = cache.verify()
    assert report.clean and report.blobs == 2 and not report.removed
    assert "clean" in report.summary()


def test_a_corrupt_blob_is_reported_then_removed_with_fix(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "c")
    digest = _layer(cache, tmp_path)
    good = cache.put_bytes(b"keep me")
    path = cache.path(digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    (cache.root / "blobs" / "sha256" / "not-a-digest").write_bytes(b"x")

    report = cache.verify()
    assert not report.clean and report.corrupt == [digest] and report.stray == ["not-a-digest"]
    assert path.exists(), "verify without --fix changes nothing"
    assert "cache verify --fix" in report.summary() and digest in report.summary()

    fixed = cache.verify(fix=True)
    assert fixed.corrupt == [digest] and not path.exists() and cache.has(good)
    # blobs are checked first: the layer-index record of the removed blob goes in the same pass
    assert len(fixed.broken_index) == 1 and "is missing" in fixed.broken_index[0]
    assert cache.verify().clean and cache.get_layer(fixed.broken_index[0].split(":")[0]) is None


def test_temp_files_abandoned_by_a_dead_writer_go_busy_ones_stay(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "c")
    abandoned = cache.tmp_dir / "blob-abandoned"  # as a SIGKILLed writer leaves it: no lock held
    abandoned.write_bytes(b"partial")
    old_dir = cache.tmp_dir / "deps-old"
    old_dir.mkdir()
    (old_dir / "x").write_text("x")
    hour_ago = time.time() - 7200
    os.utime(old_dir, (hour_ago, hour_ago))
    recent = cache.tmp_dir / "user-requirements-1.txt"
    recent.write_text("flask\n")
    with cache.writer() as live:  # a build writing right now holds its temp file's lock
        live.write(b"in progress")
        report = cache.verify(fix=True)
        assert sorted(report.stale_tmp) == ["blob-abandoned", "deps-old"]
        assert not abandoned.exists() and not old_dir.exists()
        assert recent.exists() and live._tmp.exists()
        assert sorted(report.busy_tmp) == sorted([live._tmp.name, recent.name])
        digest = live.commit()
    assert cache.has(digest) and cache.verify().blobs == 1


def test_a_writer_whose_temp_file_was_removed_before_it_locked_it_makes_another(tmp_path: Path, monkeypatch) -> None:
    import ociassemble.image.tmplock as tmplock

    cache = BlobCache(tmp_path / "c")
    real_flock = tmplock.fcntl.flock
    removed: list[str] = []

    def flock(fd: int, op: int) -> None:
        if not removed:  # verify ran between mkstemp and flock: the file is gone
            name = os.readlink(f"/proc/self/fd/{fd}")
            os.unlink(name)
            removed.append(name)
        real_flock(fd, op)

    monkeypatch.setattr(tmplock.fcntl, "flock", flock)
    with cache.writer() as w:
        w.write(b"data")
        assert str(w._tmp) != removed[0] and w._tmp.exists()
        digest = w.commit()
    assert cache.has(digest)


def test_index_records_naming_missing_or_resized_blobs_are_broken(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "c")
    digest = _layer(cache, tmp_path)
    record = next((cache.root / "layers").glob("*.json"))
    doc = json.loads(record.read_text())
    (cache.root / "layers" / "resized.json").write_text(json.dumps({**doc, "size": doc["size"] + 1}))
    (cache.root / "layers" / "garbage.json").write_text("{not json")
    (cache.root / "layers" / "missing.json").write_text(json.dumps({**doc, "digest": str(Digest.of_bytes(b"gone"))}))
    report = cache.verify()
    problems = dict(p.split(": ", 1) for p in report.broken_index)
    assert set(problems) == {"resized", "garbage", "missing"} and cache.has(digest)
    assert "unreadable" in problems["garbage"] and "is missing" in problems["missing"]
    assert "the record says" in problems["resized"]
    cache.verify(fix=True)
    assert cache.verify().clean and record.exists()


def test_prune_keeps_indexed_layers_and_recent_blobs(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "c")
    layer = _layer(cache, tmp_path)
    old = str(cache.put_bytes(b"an old base layer"))
    new = cache.put_bytes(b"a fresh config")
    month_ago = time.time() - 40 * 86400
    for d in (layer, old):
        os.utime(cache.path(d), (month_ago, month_ago))
    dry = cache.prune(30, dry_run=True)
    assert dry.removed == [str(old)] and cache.has(old)
    done = cache.prune(30)
    assert done.removed == [str(old)] and not cache.has(old)
    assert cache.has(layer) and cache.has(new) and cache.verify().clean


def test_cli_cache_verify_exits_1_until_fixed(tmp_path: Path, capsys) -> None:
    cache = BlobCache(tmp_path / "c")
    digest = str(cache.put_bytes(b"blob"))
    cache.path(digest).write_bytes(b"changed")
    assert cli.main(["cache", "verify", "--cache-dir", str(cache.root)]) == 1
    assert digest in capsys.readouterr().out
    assert cli.main(["cache", "verify", "--fix", "--json", "--cache-dir", str(cache.root)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["corrupt"] == [digest] and doc["fixed"] and doc["removed"] == [f"blobs/sha256/{Digest(digest).hex}"]
    assert cli.main(["cache", "verify", "--cache-dir", str(cache.root)]) == 0
    assert "the cache is clean" in capsys.readouterr().out
    assert cli.main(["cache", "prune", "--cache-dir", str(cache.root)]) == 1
    assert "--older-than" in capsys.readouterr().err


def test_a_cache_that_does_not_exist_is_named_and_not_made(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "mistyped-cache"
    assert cli.main(["cache", "verify", "--cache-dir", str(missing)]) == 0
    assert capsys.readouterr().out.strip() == f"no cache at {missing}: nothing to verify (a build makes it)"
    assert cli.main(["cache", "prune", "--older-than", "1", "--cache-dir", str(missing), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"dryRun": False, "kept": 0, "bytes": 0, "removed": []}
    assert not missing.exists()
