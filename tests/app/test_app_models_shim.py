"""azureml.core.model.Model.get_model_path (the image's shim) against models folders laid out as
Azure ML lays them out: ``azureml-models/<name>/<version>/<the registered file or folder>``.

The expected paths are what azureml-core 1.x's ``Model._get_model_path_local`` returns for
each shape (the highest numeric version; the version folder's one entry; a name that is no
registered model tried as a path from the working folder).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aml_server.models import ModelNotFoundError, resolve_model_path


@pytest.fixture
def app_root(tmp_path: Path) -> Path:
    models = tmp_path / "azureml-models"
    # a file registered twice: Model.register(model_path="sklearn_mnist_model.pkl", model_name="mnist")
    for version in ("1", "10"):
        (models / "mnist" / version).mkdir(parents=True)
        (models / "mnist" / version / "sklearn_mnist_model.pkl").write_bytes(version.encode())
    # a folder: Model.register(model_path="outputs/model") / an MLflow model from runs:/<id>/model
    (models / "bert" / "2" / "model" / "tokenizer").mkdir(parents=True)
    (models / "bert" / "2" / "model" / "model.pkl").write_bytes(b"w")
    (models / "bert" / "2" / "model" / "MLmodel").write_text("flavors: {}\n")
    return tmp_path


def test_file_model_highest_version_keeps_its_name(app_root: Path) -> None:
    env = {"AML_APP_ROOT": str(app_root)}
    models = app_root / "azureml-models"
    assert resolve_model_path("mnist", environ=env) == str(models / "mnist/10/sklearn_mnist_model.pkl")
    assert resolve_model_path("mnist", 1, environ=env) == str(models / "mnist/1/sklearn_mnist_model.pkl")
    assert resolve_model_path("mnist", "1", environ=env) == str(models / "mnist/1/sklearn_mnist_model.pkl")


def test_folder_model_is_the_folder_under_its_own_name(app_root: Path) -> None:
    env = {"AML_APP_ROOT": str(app_root)}
    assert resolve_model_path("bert", environ=env) == str(app_root / "azureml-models/bert/2/model")


def test_model_dir_env_is_not_where_v1_looks(app_root: Path) -> None:
    """v1 reads $AML_APP_ROOT/azureml-models only: AZUREML_MODEL_DIR pointing into a folder model
    (whose subfolders look like version folders) must not change the answer."""
    env = {"AML_APP_ROOT": str(app_root), "AZUREML_MODEL_DIR": str(app_root / "azureml-models/bert/2")}
    assert resolve_model_path("bert", environ=env) == str(app_root / "azureml-models/bert/2/model")


def test_a_version_folder_with_several_entries_is_refused_as_v1_does(app_root: Path) -> None:
    (app_root / "azureml-models" / "bert" / "2" / "stray.txt").write_text("x")
    with pytest.raises(ModelNotFoundError, match=r"can contain only 1 file or folder"):
        resolve_model_path("bert", environ={"AML_APP_ROOT": str(app_root)})


def test_unknown_name_and_version_list_what_exists(app_root: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"AML_APP_ROOT": str(app_root)}
    with pytest.raises(ModelNotFoundError, match="known models: bert, mnist"):
        resolve_model_path("resnet", environ=env)
    with pytest.raises(ModelNotFoundError, match="known versions: 1, 10"):
        resolve_model_path("mnist", 3, environ=env)


def test_a_name_that_is_a_path_from_the_working_folder(app_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(app_root)
    (app_root / "local.pkl").write_bytes(b"l")
    assert resolve_model_path("local.pkl", environ={"AML_APP_ROOT": str(app_root)}) == "local.pkl"


def test_v1_import_path(app_root: Path, monkeypatch: pytest.MonkeyPatch, isolated_imports: None) -> None:
    monkeypatch.setenv("AML_APP_ROOT", str(app_root))
    monkeypatch.delenv("AZUREML_MODEL_DIR", raising=False)
    from azureml.core.model import Model

    assert Model.get_model_path("mnist", version=1).endswith("mnist/1/sklearn_mnist_model.pkl")
    assert Model.get_model_path(model_name="mnist").endswith("mnist/10/sklearn_mnist_model.pkl")


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
