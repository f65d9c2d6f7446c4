"""A runtime we did not write runs our image: Debian's podman with runc loads the
docker-archive output and serves the example scoring image."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from ociassemble.image.cache import BlobCache
from tests.conftest import run_cli
from tests.e2e.conftest import http, podman_command, wait_healthy

pytestmark = pytest.mark.skipif(shutil.which("podman") is None, reason="podman not installed (.ci/run installs it)")


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_podman_loads_and_runs_the_docker_archive(trained_example: Path, debian_base: str, shared_cache: BlobCache,
                                                  tmp_path: Path) -> None:
    if not _port_free(5001):
        pytest.fail("127.0.0.1:5001 is taken: podman runs the image with --network host, so nothing may listen there")
    archive = tmp_path / "image.tar"
    built = run_cli("build", str(trained_example), "--base", debian_base, "--json", "--cache-dir", str(shared_cache.root),
                    "-o", f"docker-archive:{archive}:examples/diabetes:podman")
    assert built.returncode == 0, built.stderr
    import tempfile

    runroot = Path(tempfile.mkdtemp(prefix="oa-podman-"))  # podman limits its runroot path to 50 characters
    podman = podman_command(tmp_path / "storage", runroot)
    load = subprocess.run([*podman, "load", "-i", str(archive)], capture_output=True, text=True, timeout=300)
    assert load.returncode == 0, load.stderr
    inspected = json.loads(subprocess.run([*podman, "image", "inspect", "localhost/examples/diabetes:podman"],
                                          capture_output=True, text=True, check=True).stdout)[0]
    assert inspected["Config"]["Cmd"] == ["runsvdir", "/var/runit"]
    name = f"ociassemble-test-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen([*podman, "run", "--rm", "--name", name, "--network", "host",
                             "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
                             "localhost/examples/diabetes:podman"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_healthy("http://127.0.0.1:5001/", proc, timeout=120)
        status, _, body = http("POST", "http://127.0.0.1:5001/score", (trained_example / "sample-request.json").read_bytes())
        assert status == 200 and isinstance(json.loads(body), list) and len(json.loads(body)) == 1
    finally:
        subprocess.run([*podman, "stop", "-t", "10", name], capture_output=True, timeout=60)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        subprocess.run([*podman, "rmi", "-a", "-f"], capture_output=True, timeout=120)
        shutil.rmtree(tmp_path / "storage", ignore_errors=True)
        shutil.rmtree(runroot, ignore_errors=True)
