"""The example scoring image, built once per session from the real Debian base."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from ociassemble.image.cache import BlobCache
from tests.conftest import run_cli
from tests.ports import free_port


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def wait_healthy(url: str, proc, timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the image exited early with {proc.returncode}")
        try:
            status, _, body = http("GET", url, timeout=2)
            if status == 200 and body == b"Healthy":
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer Healthy within {timeout} s")


@contextlib.contextmanager
def serving(images: dict[str, Path], logs: Path, cache_root: Path, timeout: float) -> Iterator[dict[str, int]]:
    """Each ``oci-archive`` image of ``images`` started at once by ``ociassemble run``; yields each
    one's published port once all answer Healthy (a log per image under ``logs``, shown when one
    exits or never answers), and stops them all after (SIGINT, then SIGKILL after 60 s)."""
    runs: dict[str, tuple[subprocess.Popen[bytes], int, Path]] = {}
    try:
        for name, out in images.items():
            port = free_port()
            log = logs / f"{name}.log"
            with open(log, "wb") as f:
                runs[name] = (subprocess.Popen([sys.executable, "-m", "ociassemble.cli", "run", f"oci-archive:{out}:latest",
                                                "--publish", f"127.0.0.1:{port}:5001", "--cache-dir", str(cache_root)],
                                               stdout=f, stderr=subprocess.STDOUT), port, log)
        deadline = time.monotonic() + timeout
        pending = set(runs)
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                proc, port, log = runs[name]
                assert proc.poll() is None, f"{name} exited early:\n{log.read_text(errors='replace')[-3000:]}"
                try:
                    if http("GET", f"http://127.0.0.1:{port}/", timeout=2)[2] == b"Healthy":
                        pending.discard(name)
                except OSError:
                    pass
            time.sleep(0.5)
        assert not pending, "\n".join(f"{n} never healthy:\n{runs[n][2].read_text(errors='replace')[-3000:]}" for n in pending)
        yield {name: port for name, (_, port, _) in runs.items()}
    finally:
        for proc, _, _ in runs.values():
            proc.send_signal(signal.SIGINT)
        for proc, _, _ in runs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def podman_command(storage: Path, runroot: Path) -> list[str]:
    """podman with the flags that work here: its own storage (vfs), runc, cgroupfs.

    ``runroot`` must be short: podman limits its path to 50 characters (use a ``mkdtemp``)."""
    return ["podman", "--root", str(storage), "--runroot", str(runroot),
            "--storage-driver", "vfs", "--runtime", "/usr/sbin/runc", "--cgroup-manager", "cgroupfs"]


@pytest.fixture(scope="session")
def example_build(trained_example: Path, debian_base: str, shared_cache: BlobCache,
                  tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("example-image") / "image.tar"
    proc = run_cli("build", str(trained_example), "--base", debian_base, "-o", f"oci-archive:{out}:latest",
                   "--json", "--cache-dir", str(shared_cache.root))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    result["path"] = out
    return result
