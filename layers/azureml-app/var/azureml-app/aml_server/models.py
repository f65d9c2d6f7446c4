"""resolve_model_path: find a registered model in the image as Azure ML SDK v1 finds it.

Layout, as Azure ML lays registered models out: ``<AML_APP_ROOT>/azureml-models/<name>/<version>/``
holding exactly one entry, the file or folder the model was registered from, under its own
name (``model.pkl``, or a folder ``model/`` with ``model/model.pkl`` and ``model/MLmodel``).
As v1's ``Model._get_model_path_local`` does, the result is that one entry (no version: the
highest numeric one), and a name that is no registered model is tried as a path relative
to the working folder before giving up.  v1 only looks under ``AML_APP_ROOT``, never at
``AZUREML_MODEL_DIR``; so does this.
"""

from __future__ import annotations

import os
from typing import Mapping

__all__ = ["ModelNotFoundError", "resolve_model_path", "models_root", "MODELS_FOLDER"]

MODELS_FOLDER = "azureml-models"


class ModelNotFoundError(LookupError):
    """No model of that name (or version) is in the image; the message lists the known ones."""


def models_root(environ: Mapping[str, str] | None = None) -> str:
    """The folder holding ``<name>/<version>/`` (v1: ``$AML_APP_ROOT/azureml-models``)."""
    env = os.environ if environ is None else environ
    return os.path.join(env.get("AML_APP_ROOT", ""), MODELS_FOLDER)


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _numeric(versions: list[str]) -> list[int]:
    return [int(v) for v in versions if v.isdigit()]


def resolve_model_path(name: str, version: int | str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The path of model ``name`` (``version``, default the highest) in the image.

    Example::

        path = resolve_model_path("sklearn_mnist")  # .../azureml-models/sklearn_mnist/1/sklearn_mnist_model.pkl

    ``version`` may be an int (as v1 requires) or a string of digits.

    Raises:
        ModelNotFoundError: no such model or version, or a version folder that does not hold
            exactly one file or folder (v1 refuses that too).
    """
    if name is None:
        raise ModelNotFoundError("model_name is None")
    root = models_root(environ)
    model_folder = os.path.join(root, name)
    versions = _numeric(_listdir(model_folder))
    if versions:
        chosen = max(versions) if version is None else int(str(version)) if str(version).isdigit() else None
        version_folder = os.path.join(model_folder, str(chosen))
        if chosen in versions:
            entries = _listdir(version_folder)
            if len(entries) != 1:
                raise ModelNotFoundError(f"Dir {version_folder} can contain only 1 file or folder. Found {entries}")
            return os.path.join(version_folder, entries[0])
    if os.path.exists(name):  # v1: a model not in the models folder may be a path from the working folder
        return name
    if versions:
        raise ModelNotFoundError(
            f"Model {name!r} has no version {version} in {model_folder}; known versions: "
            f"{', '.join(map(str, sorted(versions)))}"
        )
    known = [m for m in _listdir(root) if _numeric(_listdir(os.path.join(root, m)))]
    raise ModelNotFoundError(
        f"Model {name!r} not found in {root} or in the working folder {os.getcwd()}; known models: "
        f"{', '.join(known) or 'none'}. Build the image with it (--model PATH:{name}), which copies it to "
        f"azureml-models/{name}/<version>/."
    )
