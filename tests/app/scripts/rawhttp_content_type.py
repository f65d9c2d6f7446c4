"""@rawhttp returning a lowercase "content-type" header (the reference then sends two Content-Types)."""

from azureml.contrib.services.aml_request import rawhttp
from azureml.contrib.services.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request):
    return AMLResponse(b"\x89PNG fake", 200, {"content-type": "image/png"})
