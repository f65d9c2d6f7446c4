"""Any Debian-based Python base: one shaped like Docker Hub's ``python:3.11-slim-bookworm``
(bookworm's essential packages and the libraries CPython links, from .debs; a CPython in
``/usr/local`` — this machine's own Debian python3.11, which is statically linked — and no
python3 package, nginx or runit) becomes a working scoring image: the recipe adds nginx-light
and runit from the base's release, gunicorn runs as www-data, the model's predictions come back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ociassemble.image.cache import BlobCache
from ociassemble.run.idmap import host_idmap
from tests.conftest import free_port, run_cli
from tests.e2e.conftest import http, wait_healthy
from tests.hostarch import HOST_DEB

pytestmark = pytest.mark.slow

#: the libraries python:3.11-slim-bookworm installs for its CPython (its Dockerfile's runtime deps)
SLIM_PACKAGES = ("usr-is-merged", "ca-certificates", "libssl3", "libffi8", "libsqlite3-0", "libbz2-1.0", "liblzma5",
                 "libreadline8", "zlib1g", "libexpat1", "libuuid1", "libncursesw6", "libstdc++6", "netbase", "tzdata")
HOST_PYTHON = Path("/usr/bin/python3.11")


@pytest.fixture(scope="module")
def slim_base(shared_cache: BlobCache, tmp_path_factory: pytest.TempPathFactory) -> str:
    if not HOST_PYTHON.is_file() or not Path("/usr/lib/python3.11/os.py").is_file():
        pytest.skip("needs Debian bookworm's python3.11 on this machine (scripts/setup installs python3)")
    from ociassemble.azureml.debsbase import make_base_from_debs

    debs = shared_cache.root / "bases" / f"test-slim-libraries-bookworm-{HOST_DEB}"
    if not (debs / "index.json").is_file():
        make_base_from_debs(shared_cache, debs, packages=SLIM_PACKAGES, log=lambda m: None)
    root = tmp_path_factory.mktemp("slim")
    local = root / "local"
    (local / "bin").mkdir(parents=True)
    (local / "lib").mkdir()
    subprocess.run(["cp", str(HOST_PYTHON), str(local / "bin")], check=True)
    (local / "bin/python3").symlink_to("python3.11")
    subprocess.run(f"tar -C /usr/lib --exclude='python3.11/dist-packages/*' --exclude='python3.11/site-packages/*' "
                   f"--exclude=__pycache__ --exclude=python3.11/test -cf - python3.11 | tar -C {local / 'lib'} -xf -",
                   shell=True, check=True)
    out = root / "base"
    proc = run_cli("build", "--plain", "--base", f"oci:{debs}", "--layer", f"{local}:/usr/local",
                   "--env", "PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
                   "-o", f"oci:{out}", "--cache-dir", str(shared_cache.root))
    assert proc.returncode == 0, proc.stderr
    return f"oci:{out}"


def test_a_slim_python_base_without_nginx_and_runit_serves(slim_base: str, trained_example: Path,
                                                           shared_cache: BlobCache, tmp_path: Path) -> None:
    image = tmp_path / "image.tar"
    proc = run_cli("build", str(trained_example), "--base", slim_base, "-o", f"oci-archive:{image}:latest",
                   "--cache-dir", str(shared_cache.root))
    assert proc.returncode == 0, proc.stderr
    assert f"the base has no nginx-light, runit: added from debian bookworm {HOST_DEB}" in proc.stderr
    port = free_port()
    run = subprocess.Popen([sys.executable, "-m", "ociassemble.cli", "run", f"oci-archive:{image}:latest",
                            "--publish", f"127.0.0.1:{port}:5001", "--cache-dir", str(shared_cache.root)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/", run, timeout=180)
        status, headers, body = http("POST", f"http://127.0.0.1:{port}/score",
                                     (trained_example / "sample-request.json").read_bytes(),
                                     {"Content-Type": "application/json"})
        assert status == 200, body
        import joblib

        rows = json.loads((trained_example / "sample-request.json").read_text())["data"]
        assert json.loads(body) == pytest.approx(joblib.load(trained_example / "model.pkl").predict(rows).tolist())
        assert "nginx" in headers.get("server", "")
        servers = [p for p in _descendants(run.pid) if b"wsgi:app" in _cmdline(p)]
        www_data = host_idmap().host_uid(33)  # www-data (from base-passwd), as the run's user namespace maps it
        assert servers and all(os.stat(f"/proc/{p}").st_uid == www_data for p in servers)
    finally:
        run.send_signal(signal.SIGINT)
        try:
            run.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            run.kill()
            run.communicate()


def _descendants(pid: int) -> list[str]:
    """The processes under ``pid`` (this run's image: not another test's)."""
    parents = {}
    for p in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        parents[p] = stat.rsplit(")", 1)[1].split()[1]
    out, todo = [], [str(pid)]
    while todo:
        current = todo.pop()
        children = [p for p, ppid in parents.items() if ppid == current]
        out += children
        todo += children
    return out


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
