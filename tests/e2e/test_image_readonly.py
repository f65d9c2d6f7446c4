"""The running scoring image: the scoring code runs as www-data, and the app root (its own folder,
the server, the models) is read-only to it, while /tmp is writable; ``AZUREML_RUN_AS=root`` is the
documented opt-out (docs/image-layout.md)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ociassemble.image.cache import BlobCache
from tests.conftest import run_cli
from tests.e2e.conftest import free_port, http, wait_healthy

#: init() tries to write in these places and keeps what happened; run({"probe": 1}) returns it.
PROBE_SCORE = '''
import json
import os

import joblib

model = None
probe = {}


def _try_write(path):
    try:
        with open(path, "w") as f:
            f.write("written by init()")
        return "written"
    except PermissionError:
        return "PermissionError"
    except OSError as exc:
        return f"{type(exc).__name__} errno {exc.errno}"


def init():
    global model
    here = os.path.dirname(os.path.abspath(__file__))
    probe["own_folder"] = _try_write(os.path.join(here, "written-by-init.txt"))
    probe["own_script"] = "PermissionError" if not os.access(__file__, os.W_OK) else "writable"
    probe["app_root"] = _try_write(os.path.join(os.environ["AML_APP_ROOT"], "written-by-init.txt"))
    probe["model_dir"] = _try_write(os.path.join(os.environ["AZUREML_MODEL_DIR"], "written-by-init.txt"))
    probe["tmp"] = _try_write("/tmp/written-by-init.txt")
    probe["uid"] = os.getuid()
    model = joblib.load(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.pkl"))


def run(raw_data):
    doc = json.loads(raw_data)
    if "probe" in doc:
        return probe
    return model.predict(doc["data"]).tolist()
'''


@pytest.fixture(scope="module")
def probe_image(trained_example: Path, debian_base: str, shared_cache: BlobCache,
                tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("readonly") / "probe-app"
    shutil.copytree(trained_example, project, ignore=shutil.ignore_patterns("image.tar", "__pycache__"))
    (project / "score.py").write_text(PROBE_SCORE)
    out = project.parent / "image.tar"
    proc = run_cli("build", str(project), "--base", debian_base, "-o", f"oci-archive:{out}:latest",
                   "--cache-dir", str(shared_cache.root))
    assert proc.returncode == 0, proc.stderr
    return out


def _probe(image: Path, shared_cache: BlobCache, *env: str) -> dict:
    port = free_port()
    extra = [arg for e in env for arg in ("-e", e)]
    proc = subprocess.Popen([sys.executable, "-m", "ociassemble.cli", "run", f"oci-archive:{image}:latest",
                             "--publish", f"127.0.0.1:{port}:5001", "--cache-dir", str(shared_cache.root), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/", proc)
        status, _, body = http("POST", f"http://127.0.0.1:{port}/score", b'{"probe": 1}',
                               {"Content-Type": "application/json"})
        assert status == 200, body
        return json.loads(body)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def test_the_app_root_is_read_only_to_the_scoring_code_and_tmp_is_not(probe_image: Path,
                                                                        shared_cache: BlobCache) -> None:
    probe = _probe(probe_image, shared_cache)
    assert probe["uid"] == 33, probe  # Debian's www-data
    assert probe["own_folder"] == "PermissionError", probe  # score.py cannot write beside itself
    assert probe["own_script"] == "PermissionError", probe  # nor change itself
    assert probe["app_root"] == "PermissionError", probe  # nor the server
    assert probe["model_dir"] == "PermissionError", probe  # nor the model
    assert probe["tmp"] == "written", probe  # scratch space works


def test_azureml_run_as_root_is_the_documented_opt_out(probe_image: Path, shared_cache: BlobCache) -> None:
    probe = _probe(probe_image, shared_cache, "AZUREML_RUN_AS=root")
    assert probe["uid"] == 0 and probe["own_folder"] == "written" and probe["tmp"] == "written", probe
