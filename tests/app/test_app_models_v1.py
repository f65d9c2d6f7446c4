"""Model.get_model_path: the image's shim against the real one, azureml-core's (SDK v1), on the same folders.

azureml-core is installed once into its own venv in the test cache (it is big, ~300 MB, and
its pins are not the app's); each layout below is made in a temp app root and every query is
asked of both: the same path, or both refuse.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import venv
from pathlib import Path

import pytest
from aml_server.models import ModelNotFoundError, resolve_model_path

from tests.conftest import test_cache_root

pytestmark = pytest.mark.slow

AZUREML_CORE = "azureml-core==1.61.0"
V1_VENV = test_cache_root() / "azureml-core-venv"

# Asks azureml-core's Model.get_model_path each query, offline as in a scoring container.
V1_PROBE = """
import json, sys
from azureml.core.model import Model
answers = []
for name, version in json.loads(sys.argv[1]):
    try:
        answers.append(Model.get_model_path(name, version=version))
    except Exception as exc:
        answers.append({"error": type(exc).__name__})
print(json.dumps(answers))
"""

LAYOUTS: dict[str, dict[str, str]] = {
    # Model.register(model_path="sklearn_mnist_model.pkl", model_name="mnist"), versions 1, 2 and 10
    "file model, several versions": {f"mnist/{v}/sklearn_mnist_model.pkl": v for v in ("1", "2", "10")},
    # Model.register(model_path="outputs/model") and an MLflow model from runs:/<id>/model
    "folder model": {"model/1/model/model.pkl": "m", "model/1/model/MLmodel": "flavors: {}", "model/1/model/sub/x": ""},
    "several models": {"a/3/a.onnx": "a", "b/1/weights/w.bin": "b", "b/2/weights/w.bin": "b2"},
    "a version folder with two entries": {"odd/1/one.pkl": "1", "odd/1/two.pkl": "2", "ok/1/ok.pkl": "ok"},
}
QUERIES = [("mnist", None), ("mnist", 2), ("mnist", 1), ("mnist", 7), ("model", None), ("a", None), ("b", None),
           ("b", 1), ("odd", None), ("ok", None), ("nope", None)]


def _v1_python() -> Path:
    python = V1_VENV / "bin" / "python"
    check = [str(python), "-c", "import azureml.core.model"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    shutil.rmtree(V1_VENV, ignore_errors=True)
    venv.create(V1_VENV, with_pip=True)
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", AZUREML_CORE], capture_output=True, text=True,
                             timeout=900)
    if install.returncode != 0:
        pytest.skip(f"cannot install {AZUREML_CORE}: {install.stderr.strip()[-500:]}")
    return python


def _ours(name: str, version: int | None, root: Path) -> object:
    try:
        return resolve_model_path(name, version, environ={"AML_APP_ROOT": str(root)})
    except ModelNotFoundError:
        return "refused"


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_same_paths_as_azureml_core(layout: str, tmp_path: Path) -> None:
    python = _v1_python()
    root = tmp_path / "app"
    for relative, text in LAYOUTS[layout].items():
        (root / "azureml-models" / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / "azureml-models" / relative).write_text(text)
    cwd = tmp_path / "elsewhere"  # v1 also tries the name as a path from the working folder: nothing there
    cwd.mkdir()
    v1 = subprocess.run([str(python), "-c", V1_PROBE, json.dumps(QUERIES)], cwd=cwd, capture_output=True, text=True,
                        env={"AML_APP_ROOT": str(root), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, timeout=300)
    assert v1.returncode == 0, v1.stderr[-2000:]
    theirs = json.loads(v1.stdout.strip().splitlines()[-1])
    for (name, version), answer in zip(QUERIES, theirs):
        expected = "refused" if isinstance(answer, dict) else answer
        assert _ours(name, version, root) == expected, (layout, name, version, answer)
    assert any(isinstance(a, str) for a in theirs)  # the layout was found at all
