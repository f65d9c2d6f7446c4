"""Where a registered model lands in the image: Azure ML's layout, the file or folder under its own name."""

from __future__ import annotations

from pathlib import Path

from ociassemble.azureml.project import ModelSpec
from ociassemble.azureml.recipe import model_dest
from ociassemble.image.layer import LayerSource, scan_sources


def test_file_and_folder_keep_their_names_under_name_and_version(tmp_path: Path) -> None:
    (tmp_path / "sklearn_mnist_model.pkl").write_bytes(b"m")
    (tmp_path / "outputs" / "model").mkdir(parents=True)
    (tmp_path / "outputs" / "model" / "model.pkl").write_bytes(b"m")
    (tmp_path / "outputs" / "model" / "MLmodel").write_text("flavors: {}\n")
    file_model = ModelSpec.parse("sklearn_mnist_model.pkl:mnist:3", tmp_path)
    folder_model = ModelSpec.parse("outputs/model", tmp_path)
    assert model_dest(file_model) == "/var/azureml-app/azureml-models/mnist/3/sklearn_mnist_model.pkl"
    assert model_dest(folder_model) == "/var/azureml-app/azureml-models/model/1/model"
    names = [e.name for m in (file_model, folder_model) for e in scan_sources([LayerSource(m.path, model_dest(m))])]
    assert "var/azureml-app/azureml-models/mnist/3/sklearn_mnist_model.pkl" in names
    assert "var/azureml-app/azureml-models/model/1/model/model.pkl" in names
    assert "var/azureml-app/azureml-models/model/1/model/MLmodel" in names
    assert "var/azureml-app/azureml-models/model/1/model.pkl" not in names
