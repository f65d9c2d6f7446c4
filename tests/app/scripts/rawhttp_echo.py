"""@rawhttp: run(request) sees every method, returns AMLResponses with chosen status and headers."""

from azureml.contrib.services.aml_request import AMLRequest, rawhttp
from azureml.contrib.services.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request: AMLRequest):
    mode = request.args.get("mode", "")
    if request.method == "OPTIONS":
        return AMLResponse("options seen by run()", 200, {"Allow": "GET, POST, OPTIONS"})
    if mode == "multi":
        return AMLResponse("multi", 201, {"X-Multi": "a, b", "X-Single": "only"})
    if mode == "fail":
        return AMLResponse({"error": "model unavailable"}, 503, json_str=True)
    if mode == "none":
        return AMLResponse(None, 200)
    if mode == "dict":
        return {"method": request.method, "args": request.args.to_dict()}
    if mode == "raise":
        raise KeyError("missing")
    return AMLResponse(request.get_data(), 200, {"Content-Type": "application/octet-stream"})
