"""resolve_model_path: find a registered model's files under the image's models folder.

Layout: ``<AML_APP_ROOT>/azureml-models/<name>/<version>/...``.  As in Azure
ML SDK v1, a version folder holding exactly one entry resolves to that entry
(``Model.get_model_path("mnist")`` gives ``.../mnist/1/model.pkl``), and no
version means the highest one.
"""

from __future__ import annotations

import os
from typing import Mapping

__all__ = ["ModelNotFoundError", "resolve_model_path", "models_roots", "MODELS_FOLDER"]

MODELS_FOLDER = "azureml-models"


class ModelNotFoundError(LookupError):
    """No model of that name (or version) is in the image; the message lists the known ones."""


def models_roots(environ: Mapping[str, str] | None = None) -> list[str]:
    """Folders that may hold ``<name>/<version>`` model folders, most specific first.

    AZUREML_MODEL_DIR is the models folder itself when there are several models,
    or ``<models>/<name>/<version>`` when there is one; the app root's
    ``azureml-models`` is the fixed place the image copies them to.
    """
    env = os.environ if environ is None else environ
    roots: list[str] = []
    model_dir = env.get("AZUREML_MODEL_DIR", "")
    if model_dir:
        model_dir = os.path.normpath(model_dir)
        roots += [model_dir, os.path.dirname(os.path.dirname(model_dir))]
    roots.append(os.path.join(env.get("AML_APP_ROOT", "/var/azureml-app"), MODELS_FOLDER))
    unique: list[str] = []
    for root in roots:
        if root and root not in unique:
            unique.append(root)
    return unique


def _version_key(version: str) -> tuple[int, int, str]:
    # Numeric versions sort numerically ("10" after "9"); any other name sorts before them.
    return (1, int(version), "") if version.isdigit() else (0, 0, version)


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _has_version_folders(path: str) -> bool:
    return any(os.path.isdir(os.path.join(path, entry)) for entry in _listdir(path))


def resolve_model_path(name: str, version: int | str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The path of model ``name`` (``version``, default the highest) in the image.

    Example::

        path = resolve_model_path("sklearn_mnist")  # /var/azureml-app/azureml-models/sklearn_mnist/1/model.pkl

    Raises:
        ModelNotFoundError: no such model, or no such version of it.
    """
    roots = models_roots(environ)
    for root in roots:
        model_folder = os.path.join(root, name)
        versions = [v for v in _listdir(model_folder) if os.path.isdir(os.path.join(model_folder, v))]
        if not versions:
            continue
        if version is None:
            chosen = max(versions, key=_version_key)
        elif str(version) in versions:
            chosen = str(version)
        else:
            raise ModelNotFoundError(
                f"Model {name!r} has no version {version} in {model_folder}; known versions: {', '.join(versions)}"
            )
        version_folder = os.path.join(model_folder, chosen)
        entries = _listdir(version_folder)
        return os.path.join(version_folder, entries[0]) if len(entries) == 1 else version_folder

    known = sorted({m for root in roots for m in _listdir(root) if _has_version_folders(os.path.join(root, m))})
    raise ModelNotFoundError(
        f"Model {name!r} not found in {' or '.join(roots)}; known models: {', '.join(known) or 'none'}. "
        "Register it with the deployment (it is copied to azureml-models/<name>/<version>/)."
    )
