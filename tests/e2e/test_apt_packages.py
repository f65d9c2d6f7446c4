"""A LightGBM model, whose manylinux wheel loads the system's libgomp.so.1: with
``apt = ["libgomp1"]`` the image gets it from the base's own release and serves predictions;
``inspect`` and the SBOM name the package and its version; dpkg's status lists it. The same
package from an Azure ML v1 ``extraDockerfileSteps`` file gives the same layer (a second build
from the first's cache: no second image is run)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ociassemble.image.cache import BlobCache
from tests.conftest import free_port, run_cli
from tests.e2e.conftest import http

pytestmark = pytest.mark.slow
#: tarfile's extraction filter where this Python has it (3.11.4+; Debian bookworm's 3.11.2 has none)
_TAR_FILTER = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}
lightgbm = pytest.importorskip("lightgbm")
np = pytest.importorskip("numpy")

ROWS = [[0.1, 0.2, 0.3, 0.4], [0.9, 0.8, 0.7, 0.6], [0.5, 0.1, 0.9, 0.3]]
SCORE = '''\
import json
import os

import lightgbm
import numpy


def init():
    global model
    model = lightgbm.Booster(model_file=os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.txt"))


def run(raw):
    rows = numpy.array(json.loads(raw)["data"], dtype=float)
    return model.predict(rows).tolist()
'''


@pytest.fixture(scope="module")
def lightgbm_image(debian_base: str, shared_cache: BlobCache, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[tuple[int, Path, list[float]]]:
    root = tmp_path_factory.mktemp("lightgbm")
    rng = np.random.default_rng(0)
    x = rng.random((200, 4))
    booster = lightgbm.train({"objective": "regression", "verbose": -1, "num_threads": 1},
                             lightgbm.Dataset(x, x @ [1.0, 2.0, 3.0, 4.0]), num_boost_round=10)
    booster.save_model(str(root / "model.txt"))
    expected = booster.predict(np.array(ROWS)).tolist()
    (root / "score.py").write_text(SCORE)
    (root / "requirements.txt").write_text(f"lightgbm=={lightgbm.__version__}\nnumpy=={np.__version__}\n")
    (root / "ociassemble.toml").write_text('entry_script = "score.py"\nmodels = ["model.txt:lgbm:1"]\n'
                                           'requirements = "requirements.txt"\napt = ["libgomp1"]\n'
                                           'env = { WORKER_COUNT = "1" }\n')
    out = root / "image.tar"
    proc = run_cli("build", str(root), "--base", debian_base, "-o", f"oci-archive:{out}:latest", "--sbom",
                   "--cache-dir", str(shared_cache.root))
    assert proc.returncode == 0, proc.stderr
    assert "layer debian-packages" in proc.stderr and "libgomp1" in proc.stderr
    port = free_port()
    log = root / "run.log"
    with open(log, "wb") as f:
        run = subprocess.Popen([sys.executable, "-m", "ociassemble.cli", "run", f"oci-archive:{out}:latest",
                                "--publish", f"127.0.0.1:{port}:5001", "--cache-dir", str(shared_cache.root)],
                               stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert run.poll() is None, log.read_text(errors="replace")[-3000:]
            try:
                if http("GET", f"http://127.0.0.1:{port}/", timeout=2)[2] == b"Healthy":
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            raise AssertionError(log.read_text(errors="replace")[-3000:])
        yield port, out, expected
    finally:
        run.send_signal(signal.SIGINT)
        try:
            run.wait(timeout=60)
        except subprocess.TimeoutExpired:
            run.kill()
            run.wait()


def test_lightgbm_serves_its_predictions(lightgbm_image: tuple[int, Path, list[float]]) -> None:
    port, _, expected = lightgbm_image
    status, _, body = http("POST", f"http://127.0.0.1:{port}/score", json.dumps({"data": ROWS}).encode(),
                           {"Content-Type": "application/json"})
    assert status == 200, body
    assert json.loads(body) == pytest.approx(expected)


def test_inspect_sbom_and_dpkg_name_the_package(lightgbm_image: tuple[int, Path, list[float]],
                                                shared_cache: BlobCache, tmp_path: Path) -> None:
    _, out, _ = lightgbm_image
    proc = run_cli("inspect", f"oci-archive:{out}:latest", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "libgomp1=" in proc.stdout
    sbom = json.loads(Path(f"{out}.sbom.spdx.json").read_text())
    names = {(p["name"], p.get("versionInfo")) for p in sbom["packages"]}
    gomp = [v for n, v in names if n == "libgomp1"]
    assert gomp and gomp[0]
    # dpkg itself reads the status the layers leave: base packages and libgomp1
    rootfs = tmp_path / "rootfs"
    with tarfile.open(out) as outer:
        outer.extractall(tmp_path / "layout", **_TAR_FILTER)
    index = json.loads((tmp_path / "layout/index.json").read_text())
    manifest = json.loads((tmp_path / "layout/blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())
    for layer in manifest["layers"]:
        with tarfile.open(tmp_path / "layout/blobs/sha256" / layer["digest"][7:]) as tf:
            for m in tf:
                if m.name.lstrip("./").startswith("var/lib/dpkg/") and m.isreg():
                    tf.extract(m, rootfs, **_TAR_FILTER)
    listed = subprocess.run(["dpkg-query", "--admindir", str(rootfs / "var/lib/dpkg"), "-W", "-f",
                             "${Package} ${Version}\n"], capture_output=True, text=True, check=True).stdout
    assert f"libgomp1 {gomp[0]}" in listed and "python3 " in listed and "nginx-light " in listed


def _layers(archive: Path, where: Path) -> list[tuple[str, str]]:
    """(history line, digest) of each layer of the oci-archive's one image."""
    with tarfile.open(archive) as outer:
        outer.extractall(where, **_TAR_FILTER)
    blob = lambda d: json.loads((where / "blobs/sha256" / d[7:]).read_text())  # noqa: E731
    manifest = blob(json.loads((where / "index.json").read_text())["manifests"][0]["digest"])
    history = [h.get("created_by", "") for h in blob(manifest["config"]["digest"])["history"] if not h.get("empty_layer")]
    return list(zip(history, [layer["digest"] for layer in manifest["layers"]]))


def test_extra_dockerfile_steps_give_the_same_packages_layer(lightgbm_image: tuple[int, Path, list[float]],
                                                             debian_base: str, shared_cache: BlobCache,
                                                             tmp_path: Path) -> None:
    """As Azure's docs tell v1 users: libgomp1 from an inferenceconfig.json's extraDockerfileSteps."""
    _, out, _ = lightgbm_image
    root = tmp_path / "v1"
    root.mkdir()
    for name in ("score.py", "model.txt", "requirements.txt"):
        (root / name).write_bytes((out.parent / name).read_bytes())
    (root / "ociassemble.toml").write_text('models = ["model.txt:lgbm:1"]\nrequirements = "requirements.txt"\n'
                                           'env = { WORKER_COUNT = "1" }\n')
    (root / "steps.dockerfile").write_text("RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 "
                                           "&& rm -rf /var/lib/apt/lists/*\n")
    (root / "inferenceconfig.json").write_text(json.dumps({"entryScript": "score.py", "runtime": "python",
                                                           "extraDockerfileSteps": "steps.dockerfile"}))
    v1_out = tmp_path / "v1.tar"
    proc = run_cli("build", str(root), "--base", debian_base, "-o", f"oci-archive:{v1_out}:latest",
                   "--cache-dir", str(shared_cache.root), cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert "extraDockerfileSteps (steps.dockerfile) installs libgomp1" in proc.stderr
    first = [x for x in _layers(out, tmp_path / "a") if "libgomp1" in x[0]]
    second = [x for x in _layers(v1_out, tmp_path / "b") if "libgomp1" in x[0]]
    assert len(first) == 1 and second == first
