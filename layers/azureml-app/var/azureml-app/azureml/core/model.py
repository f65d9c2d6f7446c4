"""Import shim: ``from azureml.core.model import Model`` for v1 score.py files that find models by name.

Only ``Model.get_model_path`` exists: inside a scoring image, that is all a
score.py can do with the real class without a workspace.  When the user's
requirements include the real azureml-core, it takes precedence (see
azureml/contrib/services/aml_request.py on namespace portions).
"""

from __future__ import annotations

from aml_server.models import ModelNotFoundError, resolve_model_path

__all__ = ["Model", "ModelNotFoundError"]


class Model:
    """The part of azureml.core.model.Model that works offline."""

    @staticmethod
    def get_model_path(model_name: str, version: int | str | None = None, _workspace: object = None) -> str:
        """Path of a model copied into the image (highest version unless ``version`` is given).

        Example::

            model = joblib.load(Model.get_model_path("sklearn_mnist"))  # .../sklearn_mnist/1/sklearn_mnist_model.pkl

        Raises:
            ModelNotFoundError: the name (or version) is not in the image; the message lists the known ones.
        """
        return resolve_model_path(model_name, version)
