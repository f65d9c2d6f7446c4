"""Two schema parameters, one optional (a default), and run() asking for request_headers."""

from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema


def init():
    pass


@input_schema("features", StandardPythonParameterType([1, 2, 3]))
@input_schema("scale", StandardPythonParameterType(2.0))
@output_schema(StandardPythonParameterType({"scaled": [2.0]}))
def run(features, scale=10.0, request_headers=None):
    return {"scaled": [f * scale for f in features], "x_custom": (request_headers or {}).get("X-Custom")}
