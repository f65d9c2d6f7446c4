"""End to end: the example scoring image, built from the default base (``make-base``: from .debs), run with
``ociassemble run`` (no daemon) and scored over HTTP on the published port 5001."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ociassemble.image.cache import BlobCache
from ociassemble.run.idmap import host_idmap
from tests.conftest import run_cli
from tests.e2e.conftest import free_port, http, wait_healthy


def _expected_prediction(example: Path) -> list[float]:
    import joblib

    model = joblib.load(example / "model.pkl")
    rows = json.loads((example / "sample-request.json").read_text())["data"]
    return model.predict(rows).tolist()


def _processes_named(names: set[str]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                comm = Path(f"/proc/{entry}/comm").read_text().strip()
            except OSError:
                continue
            if comm in names:
                found.setdefault(comm, []).append(int(entry))
    return found


def test_run_serves_health_score_and_swagger(example_build: dict, trained_example: Path, shared_cache: BlobCache) -> None:
    port = free_port()
    before = _processes_named({"runsvdir", "nginx", "gunicorn"})
    proc = subprocess.Popen([sys.executable, "-m", "ociassemble.cli", "run", f"oci-archive:{example_build['path']}:latest",
                             "--publish", f"127.0.0.1:{port}:5001", "--cache-dir", str(shared_cache.root)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/", proc)
        status, headers, body = http("POST", f"http://127.0.0.1:{port}/score",
                                     (trained_example / "sample-request.json").read_bytes(),
                                     {"Content-Type": "application/json"})
        assert status == 200, body
        assert json.loads(body) == pytest.approx(_expected_prediction(trained_example))
        assert "nginx" in headers.get("server", "")  # answered through nginx on 5001 …
        assert "x-ms-run-fn-exec-ms" in headers and "x-request-id" in headers  # … by the gunicorn app
        status, _, body = http("GET", f"http://127.0.0.1:{port}/swagger.json")
        assert status == 200 and json.loads(body)["swagger"] == "2.0"
        status, _, body = http("PUT", f"http://127.0.0.1:{port}/score", b"{}")
        assert status == 405
        running = _processes_named({"runsvdir", "runsv", "nginx", "gunicorn", "python3"})
        assert running.get("runsvdir") and len(running.get("runsv", [])) >= 2 and running.get("nginx")
        # the scoring code runs unprivileged (Debian's www-data, uid 33 in the image: in the run's
        # user namespace, an unprivileged host id), not as root
        servers = [p for p in running.get("gunicorn", []) + running.get("python3", [])
                   if b"gunicorn" in Path(f"/proc/{p}/cmdline").read_bytes()]
        www_data = host_idmap().host_uid(33)
        assert servers and all(os.stat(f"/proc/{p}").st_uid == www_data for p in servers)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode in (0, 130, 143), out.decode(errors="replace")[-2000:]
    after = _processes_named({"runsvdir", "nginx", "gunicorn"})
    leftover = {k: set(v) - set(before.get(k, [])) for k, v in after.items()}
    assert not any(leftover.values()), f"processes left after stop: {leftover}"


def test_same_inputs_in_another_folder_give_the_same_digest(example_build: dict, trained_example: Path,
                                                          debian_base: str, shared_cache: BlobCache,
                                                          tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere" / "job@2"  # another folder name: the image must not depend on it
    shutil.copytree(trained_example, copy)
    for p in copy.rglob("*"):
        os.utime(p, (1_600_000_000, 1_600_000_000))
    out = tmp_path / "again.tar"
    proc = run_cli("build", str(copy), "--base", debian_base, "-o", f"oci-archive:{out}:latest", "--json",
                   "--cache-dir", str(tmp_path / "fresh-cache"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["digest"] == example_build["digest"]


def test_editing_score_py_rebuilds_only_the_top_layer(example_build: dict, trained_example: Path, debian_base: str,
                                                     shared_cache: BlobCache, tmp_path: Path) -> None:
    copy = tmp_path / "sklearn-diabetes"
    shutil.copytree(trained_example, copy)
    first = run_cli("build", str(copy), "--base", debian_base, "-o", f"oci:{tmp_path / 'a'}", "--json",
                    "--cache-dir", str(shared_cache.root))
    assert first.returncode == 0, first.stderr
    with open(copy / "score.py", "a") as f:
        f.write("\n# edited\n")
    second = run_cli("build", str(copy), "--base", debian_base, "-o", f"oci:{tmp_path / 'b'}", "--json",
                     "--cache-dir", str(shared_cache.root))
    assert second.returncode == 0, second.stderr
    a, b = json.loads(first.stdout)["layers"], json.loads(second.stdout)["layers"]
    assert [l["digest"] for l in a[:-1]] == [l["digest"] for l in b[:-1]]
    assert a[-1]["digest"] != b[-1]["digest"] and a[-1]["what"] == "source"
    assert all(l["reused"] for l in b[:-1]) and not b[-1]["reused"]
