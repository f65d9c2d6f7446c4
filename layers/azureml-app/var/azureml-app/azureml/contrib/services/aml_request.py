"""Import shim: ``from azureml.contrib.services.aml_request import AMLRequest, rawhttp`` for v1 score.py files.

Why the ``azureml`` folders here have no ``__init__.py``: they are PEP 420
namespace portions.  Python prefers a regular package found anywhere on
sys.path over namespace portions, whatever the order, so a user who installs
the real azureml-core (a regular package, into /var/azureml-deps) gets it
unchanged even though the app root comes first on sys.path; the real
``azureml/__init__.py`` extends its ``__path__`` over every ``azureml`` folder
on sys.path (pkgutil.extend_path), so these shims still fill in whatever it
lacks (``azureml.contrib.services``).  With nothing installed, these serve.
"""

from flask import Request

from aml_server.user_script import RAWHTTP_MARKER

__all__ = ["AMLRequest", "rawhttp"]


def rawhttp(func):
    """Mark run() to receive the Flask request itself (and to return a response of its own).

    Example::

        @rawhttp
        def run(request):
            return AMLResponse(request.get_data(), 200)
    """
    setattr(func, RAWHTTP_MARKER, True)
    return func


class AMLRequest(Request):
    """The type run(request) receives under @rawhttp: Flask's request (named so score.py need not import flask)."""
