"""azureml.core.model.Model.get_model_path (the image's shim) against a models folder built by the test."""

from __future__ import annotations

from pathlib import Path

import pytest

from aml_server.models import ModelNotFoundError, resolve_model_path


@pytest.fixture
def app_root(tmp_path: Path) -> Path:
    models = tmp_path / "azureml-models"
    (models / "mnist" / "1").mkdir(parents=True)
    (models / "mnist" / "1" / "model.pkl").write_bytes(b"1")
    (models / "mnist" / "10").mkdir()
    (models / "mnist" / "10" / "model.pkl").write_bytes(b"10")
    (models / "bert" / "2" / "tokenizer").mkdir(parents=True)
    (models / "bert" / "2" / "weights.bin").write_bytes(b"w")
    return tmp_path


def test_highest_version_and_single_file(app_root: Path) -> None:
    env = {"AML_APP_ROOT": str(app_root)}
    assert resolve_model_path("mnist", environ=env) == str(app_root / "azureml-models/mnist/10/model.pkl")
    assert resolve_model_path("mnist", 1, environ=env) == str(app_root / "azureml-models/mnist/1/model.pkl")
    # Several entries: the version folder itself.
    assert resolve_model_path("bert", environ=env) == str(app_root / "azureml-models/bert/2")


def test_single_model_dir_env(app_root: Path) -> None:
    env = {"AML_APP_ROOT": "/nonexistent", "AZUREML_MODEL_DIR": str(app_root / "azureml-models/bert/2")}
    assert resolve_model_path("bert", environ=env) == str(app_root / "azureml-models/bert/2")


def test_unknown_name_and_version_list_what_exists(app_root: Path) -> None:
    env = {"AML_APP_ROOT": str(app_root)}
    with pytest.raises(ModelNotFoundError, match="known models: bert, mnist"):
        resolve_model_path("resnet", environ=env)
    with pytest.raises(ModelNotFoundError, match="known versions: 1, 10"):
        resolve_model_path("mnist", 3, environ=env)


def test_v1_import_path(app_root: Path, monkeypatch: pytest.MonkeyPatch, isolated_imports: None) -> None:
    monkeypatch.setenv("AML_APP_ROOT", str(app_root))
    monkeypatch.delenv("AZUREML_MODEL_DIR", raising=False)
    from azureml.core.model import Model

    assert Model.get_model_path("mnist", version=1).endswith("mnist/1/model.pkl")
    assert Model.get_model_path(model_name="mnist").endswith("mnist/10/model.pkl")


def test_v1_score_script_finds_its_model(make_app, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "azureml-models" / "m" / "3").mkdir(parents=True)
    (tmp_path / "azureml-models" / "m" / "3" / "w.txt").write_text("weights-3")
    monkeypatch.setenv("AML_APP_ROOT", str(tmp_path))
    source = """
        from azureml.core.model import Model
        WEIGHTS = {}

        def init():
            with open(Model.get_model_path("m")) as f:
                WEIGHTS["w"] = f.read()

        def run(data):
            return WEIGHTS["w"]
    """
    assert make_app(source).test_client().post("/score", data="").get_json() == "weights-3"
