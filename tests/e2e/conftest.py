"""The example scoring image, built once per session from the real Debian base."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ociassemble.image.cache import BlobCache
from tests.conftest import run_cli


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
