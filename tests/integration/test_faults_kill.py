"""Faults: ``ociassemble build`` and ``push`` killed at random points (SIGKILL, SIGINT, SIGTERM) and
run again, and a full disk under the cache or the output.

After every kill the cache holds only complete, verified blobs under their digest (a SIGKILL may
leave temp files, only in ``tmp/``), and the output path is absent or a complete image; the rerun
gives the digest of an uninterrupted run, and ``ociassemble cache verify --fix`` leaves a cache
that verifies clean with nothing in ``tmp/``. The kill points are seeded (``FAULT_SEED``) and
spread over the measured length of an uninterrupted run, so they land in every phase: start-up,
scanning, hashing and compressing, committing blobs, writing the output, uploading.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ociassemble import cli
from ociassemble.image.cache import BlobCache
from ociassemble.registry import pull_image
from ociassemble.transport.archive import read_oci_archive
from ociassemble.transport.layout import read_layout

#: Change it to explore other kill points; a failure names the seed, iteration and delay.
FAULT_SEED = int(os.environ.get("OCIASSEMBLE_FAULT_SEED", "8"))
ITERATIONS = 6
SIGNALS = (signal.SIGKILL, signal.SIGINT, signal.SIGTERM)
#: What a killed run may exit with: done before the signal (0), interrupted cleanly (130), or
#: killed by the signal itself (SIGKILL always; SIGINT/SIGTERM only during the interpreter's
#: start-up, before the entry's first line, when nothing has been written yet).
ALLOWED_EXIT = {signal.SIGKILL: {0, -9}, signal.SIGINT: {0, 130, -2}, signal.SIGTERM: {0, 130, -15}}


def _cli(*args: str) -> list[str]:
    """The console script's entry (``ociassemble.__main__``): a signal during its imports is already ours."""
    return [sys.executable, "-m", "ociassemble", *args]


def _cli_in_process(*args: str) -> tuple[int, str]:
    """``ociassemble ARGS`` in this process (no interpreter start-up): exit code and stdout."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = cli.main(list(args))
    return code, buf.getvalue()


def _run(cmd: list[str], timeout: float = 300) -> tuple[int, str, str, float]:
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start


def _assert_exit(code: int, err: str, sig: signal.Signals, cache: Path, where: str) -> None:
    if code in ALLOWED_EXIT[sig]:
        if code == 130:
            assert "interrupted; nothing was left half-written" in err and "Traceback" not in err, f"{where}: {err}"
        return
    # Ctrl-C while the interpreter itself starts (site, encodings) exits 1 before any of our code ran
    assert sig == signal.SIGINT and code == 1 and "KeyboardInterrupt" in err and not cache.exists(), \
        f"{where}: exit {code}: {err}"


def _run_and_kill(cmd: list[str], delay: float, sig: signal.Signals) -> tuple[int, str]:
    """Start ``cmd``, send ``sig`` to it (by its PID) after ``delay`` s unless it finished first."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, err


def _as_left_by(sig: signal.Signals, err: str) -> signal.Signals:
    """A cleanup cut short by the CLI's own deadline leaves what a SIGKILL leaves (documented:
    the next run removes it, which the rerun below checks)."""
    return signal.SIGKILL if "leaving now" in err else sig


def _assert_cache_sound(root: Path, sig: signal.Signals, where: str) -> None:
    """Only complete, verified blobs under their digest; temp files only from a SIGKILL, only in tmp/."""
    report = BlobCache(root).verify()
    assert not report.corrupt and not report.stray and not report.broken_index, f"{where}: {report.summary()}"
    if sig != signal.SIGKILL:
        assert not report.stale_tmp and not list((root / "tmp").iterdir()), f"{where}: temp files left: {report}"
    layers = root / "layers"
    odd = [p.name for p in layers.iterdir() if p.suffix != ".json"] if layers.is_dir() else []
    assert not odd, f"{where}: temp files outside tmp/: {odd}"


def _image_digest(spec_kind: str, path: Path, scratch: Path) -> str:
    reader = read_layout if spec_kind == "oci" else read_oci_archive
    return reader(path, None, BlobCache(scratch)).digest


def _assert_no_partial_output(out: Path, kind: str, digest: str, sig: signal.Signals, scratch: Path, where: str) -> None:
    """The output path is absent or a complete image; after Ctrl-C/SIGTERM no temp sibling either."""
    if out.exists():
        assert _image_digest(kind, out, scratch) == digest, f"{where}: {out} is not the complete image"
    siblings = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp-")]
    if sig != signal.SIGKILL:
        assert not siblings, f"{where}: {siblings} left beside the output"


def _assert_rerun_and_verify(cache_root: Path, rerun: list[str], digest: str, where: str) -> None:
    code, out, err, _ = _run(rerun)
    assert code == 0, f"{where}: the rerun failed: {err}"
    assert out.strip().splitlines()[-1] == digest, f"{where}: the rerun gave another digest: {out}"
    code, out = _cli_in_process("cache", "verify", "--fix", "--cache-dir", str(cache_root))
    assert code == 0, f"{where}: {out}"
    code, out = _cli_in_process("cache", "verify", "--json", "--cache-dir", str(cache_root))
    report = json.loads(out)
    assert code == 0 and report["clean"], f"{where}: {report}"
    assert not list((cache_root / "tmp").iterdir()), f"{where}: verify --fix left temp files"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few MB in a few hundred files: half random (stored), half zeros (compressed)."""
    root = tmp_path_factory.mktemp("fault-tree") / "tree"
    rng = random.Random(FAULT_SEED)
    for i in range(240):
        d = root / f"d{i % 16:02}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:03}.bin").write_bytes(rng.randbytes(16_000) + bytes(16_000))
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_text("#!/bin/sh\necho hi\n")
    (root / "bin" / "tool").chmod(0o755)
    (root / "bin" / "link").symlink_to("tool")
    return root


def test_build_killed_at_random_points_then_rerun_gives_the_same_image(tree: Path, tmp_path: Path) -> None:
    def build(cache: Path, out: str) -> list[str]:
        return _cli("build", "--plain", "--layer", f"{tree}:/app", "--layer", f"{tree / 'bin'}:/usr/local/bin",
                    "--compression", "gzip", "-o", out, "-q", "--cache-dir", str(cache))

    code, out, err, took = _run(build(tmp_path / "ref-cache", f"oci-archive:{tmp_path / 'ref.tar'}"))
    assert code == 0, err
    digest = out.strip()
    rng = random.Random(FAULT_SEED)
    for i in range(ITERATIONS):
        sig = SIGNALS[i % len(SIGNALS)]
        kind = ("oci-archive", "oci")[i % 2]
        delay = rng.uniform(0.05, min(2.0, took))
        where = f"seed {FAULT_SEED} iteration {i} ({sig.name} after {delay:.2f} s, {kind})"
        cache = tmp_path / f"cache-{i}"
        target = tmp_path / f"out-{i}" / ("image.tar" if kind == "oci-archive" else "layout")
        target.parent.mkdir()
        cmd = build(cache, f"{kind}:{target}")

        code, err = _run_and_kill(cmd, delay, sig)
        _assert_exit(code, err, sig, cache, where)
        left = _as_left_by(sig, err)
        if cache.exists():
            _assert_cache_sound(cache, left, where)
        _assert_no_partial_output(target, kind, digest, left, tmp_path / f"scratch-{i}", where)

        _assert_rerun_and_verify(cache, cmd, digest, where)
        assert _image_digest(kind, target, tmp_path / f"scratch2-{i}") == digest, where
        # whatever a SIGKILL left beside the output, the rerun's write cleared it
        siblings = [p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.tmp-")]
        assert not siblings, f"{where}: {siblings} left beside the output after the rerun"


def test_push_killed_at_random_points_then_rerun_pushes_the_same_image(tree: Path, tmp_path: Path,
                                                                       plain_registry) -> None:
    def push(cache: Path, ref: str) -> list[str]:
        return _cli("push", ref, "--plain", "--layer", f"{tree}:/app", "--compression", "gzip", "-q",
                    "--cache-dir", str(cache))

    code, out, err, took = _run(push(tmp_path / "ref-cache", f"{plain_registry.host}/faults/ref:1"))
    assert code == 0, err
    digest = out.strip()
    rng = random.Random(FAULT_SEED + 1)
    for i in range(ITERATIONS - 1):
        sig = SIGNALS[i % len(SIGNALS)]
        delay = rng.uniform(0.05, min(2.0, took))
        where = f"seed {FAULT_SEED + 1} iteration {i} ({sig.name} after {delay:.2f} s)"
        cache = tmp_path / f"cache-{i}"
        ref = f"{plain_registry.host}/faults/app{i}:1"  # a new repository each time: the blobs go up again
        cmd = push(cache, ref)

        code, err = _run_and_kill(cmd, delay, sig)
        _assert_exit(code, err, sig, cache, where)
        if cache.exists():
            _assert_cache_sound(cache, _as_left_by(sig, err), where)

        _assert_rerun_and_verify(cache, cmd, digest, where)
        assert pull_image(ref, BlobCache(tmp_path / f"pulled-{i}")).digest == digest, where


@pytest.mark.slow
def test_recipe_build_killed_then_rerun_gives_the_same_image(trained_example: Path, debian_base: str,
                                                             shared_cache: BlobCache, tmp_path: Path) -> None:
    """The scoring image: base blobs ingested, the pex deps layer (~250 MB), model, source."""
    cache = tmp_path / "cache"
    cache.mkdir()
    for sub in ("deps", "baseinfo"):  # resolved deps from the shared cache (hard links: only read here)
        if (shared_cache.root / sub).is_dir():
            subprocess.run(["cp", "-al", str(shared_cache.root / sub), str(cache / sub)], check=True)

    def build(out: Path) -> list[str]:
        return _cli("build", str(trained_example), "--base", debian_base, "-o", f"oci-archive:{out}", "--json",
                    "--cache-dir", str(cache))

    code, out, err, took = _run(build(tmp_path / "ref.tar"))
    assert code == 0, err
    reference = json.loads(out)
    digest = reference["digest"]
    rng = random.Random(FAULT_SEED + 2)
    for i, sig in enumerate(SIGNALS):
        for sub in ("blobs", "layers", "tmp"):  # a cold build again, the resolved deps kept
            shutil.rmtree(cache / sub)
        delay = rng.uniform(0.05, took)
        where = f"seed {FAULT_SEED + 2} recipe iteration {i} ({sig.name} after {delay:.2f} s)"
        target = tmp_path / f"out-{i}" / "image.tar"
        target.parent.mkdir()
        cmd = build(target)
        code, err = _run_and_kill(cmd, delay, sig)
        _assert_exit(code, err, sig, cache, where)
        left = _as_left_by(sig, err)
        _assert_cache_sound(cache, left, where)
        _assert_no_partial_output(target, "oci-archive", digest, left, tmp_path / f"scratch-{i}", where)
        code, out, err, _ = _run(cmd)
        assert code == 0, f"{where}: {err}"
        rerun = json.loads(out)
        assert rerun["digest"] == digest, f"{where}: {json.dumps(reference['layers'])} != {json.dumps(rerun['layers'])}"
        # a SIGKILL during the deps step may leave the requirements file the recipe writes for pex: not
        # locked, so the CLI keeps it for an hour; no other build shares this cache, so age 0 is safe
        report = BlobCache(cache).verify(fix=True, tmp_max_age=0)
        assert not report.corrupt and not report.broken_index, f"{where}: {report.summary()}"
        assert BlobCache(cache).verify().clean and not list((cache / "tmp").iterdir()), where


# -- a full disk ------------------------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 2 MiB tmpfs mounted for this test (root only), unmounted after it."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 MB that does not compress: more than the 2 MiB tmpfs holds."""
    root = tmp_path_factory.mktemp("big-tree") / "tree"
    root.mkdir()
    rng = random.Random(FAULT_SEED)
    for i in range(4):
        (root / f"part{i}.bin").write_bytes(rng.randbytes(1_000_000))
    return root


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_cache_too_small_for_the_tree_still_holds_an_uncompressed_layer(small_tmpfs: Path, big_tree: Path,
                                                                          tmp_path: Path) -> None:
    """An uncompressed layer is held by reference: the cache never holds a copy of the files."""
    cache = small_tmpfs / "cache"
    out = tmp_path / "image.tar"
    code, _, err, _ = _run(_cli("build", "--plain", "--layer", f"{big_tree}:/data", "--compression", "none",
                                "-o", f"oci-archive:{out}", "-q", "--cache-dir", str(cache)))
    assert code == 0, err
    assert out.stat().st_size > 4_000_000
    assert sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) < 100_000
    assert BlobCache(cache).verify().clean


@pytest.mark.parametrize("compression", ["gzip"])
def test_full_disk_under_the_cache_is_one_line_and_leaves_nothing_half_written(small_tmpfs: Path, big_tree: Path,
                                                                               tmp_path: Path, compression: str) -> None:
    cache = small_tmpfs / "cache"
    out = tmp_path / "image.tar"
    code, _, err, _ = _run(_cli("build", "--plain", "--layer", f"{big_tree}:/data", "--compression", compression,
                                "-o", f"oci-archive:{out}", "-q", "--cache-dir", str(cache)))
    assert code == 1
    line = _one_error_line(err)
    assert line.startswith(f"ociassemble: error: no space left on the device holding {cache}"), line
    assert not out.exists() and not list(tmp_path.glob(".image.tar.tmp-*"))
    assert not list((cache / "tmp").iterdir()), "the partial blob was not removed"
    assert BlobCache(cache).verify().clean


@pytest.mark.parametrize("kind", ["oci-archive", "oci", "docker-archive"])
def test_full_disk_under_the_output_is_one_line_and_leaves_no_partial_output(small_tmpfs: Path, big_tree: Path,
                                                                              tmp_path: Path, kind: str) -> None:
    cache = tmp_path / "cache"
    target = small_tmpfs / "out" / ("layout" if kind == "oci" else "image.tar")
    code, _, err, _ = _run(_cli("build", "--plain", "--layer", f"{big_tree}:/data", "-o", f"{kind}:{target}", "-q",
                                "--cache-dir", str(cache)))
    assert code == 1
    line = _one_error_line(err)
    assert line.startswith(f"ociassemble: error: no space left on the device holding {target.parent}"), line
    assert "--output" in line
    assert not target.exists() and not list(target.parent.iterdir()), "a partial output was left"
    assert BlobCache(cache).verify().clean


def test_full_disk_keeps_the_file_a_command_would_have_replaced(small_tmpfs: Path) -> None:
    """``init --force`` over a config on a full disk: the old config stays whole (it was emptied
    and left so when the file was written in place) and the line names the file."""
    config = small_tmpfs / "ociassemble.toml"
    config.write_text("base = 'oci:./base'\n")
    filler = small_tmpfs / "filler"
    with open(filler, "wb", buffering=0) as f:  # every free block taken
        try:
            while f.write(b"\0" * 4096):
                pass
        except OSError:
            pass
    code, _, err, _ = _run(_cli("init", str(small_tmpfs), "--force"))
    assert code == 1
    line = _one_error_line(err)
    assert line.startswith(f"ociassemble: error: no space left on device writing {config}: free space"), line
    assert config.read_text() == "base = 'oci:./base'\n"
    assert sorted(p.name for p in small_tmpfs.iterdir()) == ["filler", "ociassemble.toml"]
