"""Import shim: ``from azureml.contrib.services.aml_response import AMLResponse`` (see aml_request.py on namespaces)."""

from aml_server.responses import AMLResponse

__all__ = ["AMLResponse"]
