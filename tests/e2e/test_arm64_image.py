"""End to end on another architecture: the example scoring image built for linux/arm64 on
this x86-64 machine (the arm64 default base, pex resolving aarch64 wheels), run with
``ociassemble run`` through qemu user emulation, and scored over HTTP like the amd64 one."""

from __future__ import annotations

import json
import platform
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ociassemble.emulation import SLOWDOWN
from ociassemble.image.cache import BlobCache
from tests.conftest import run_cli
from tests.e2e.conftest import free_port, http, wait_healthy

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="emulates arm64 on an x86-64 machine")


def test_the_arm64_scoring_image_scores_under_qemu(trained_example: Path, arm64_base: str, shared_cache: BlobCache,
                                                   tmp_path: Path) -> None:
    out = tmp_path / "image.tar"
    built = run_cli("build", str(trained_example), "--platform", "linux/arm64", "--base", arm64_base,
                    "-o", f"oci-archive:{out}:latest", "--json", "--cache-dir", str(shared_cache.root))
    assert built.returncode == 0, built.stderr
    assert [p["platform"] for p in json.loads(built.stdout)["platforms"]] == ["linux/arm64/v8"]
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ociassemble.cli", "run", f"oci-archive:{out}:latest",
                             "--publish", f"127.0.0.1:{port}:5001", "--cache-dir", str(shared_cache.root)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        # gunicorn importing scikit-learn under qemu: about 20 s here, 3 s natively
        wait_healthy(f"http://127.0.0.1:{port}/", proc, timeout=120 * SLOWDOWN)
        status, headers, body = http("POST", f"http://127.0.0.1:{port}/score",
                                     (trained_example / "sample-request.json").read_bytes(),
                                     {"Content-Type": "application/json"})
        assert status == 200, body
        import joblib

        model = joblib.load(trained_example / "model.pkl")  # predicted here, on x86-64
        rows = json.loads((trained_example / "sample-request.json").read_text())["data"]
        assert json.loads(body) == pytest.approx(model.predict(rows).tolist())
        assert "nginx" in headers.get("server", "") and "x-ms-run-fn-exec-ms" in headers
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            log = proc.communicate(timeout=60)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode in (0, 130, 143), log[-2000:]
    assert "(linux/arm64/v8, emulated by qemu)" in log
