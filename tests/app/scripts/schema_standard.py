"""inference_schema with StandardPythonParameterType input and output."""

from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema


def init():
    pass


@input_schema("data", StandardPythonParameterType([{"a": 1, "b": "x"}]))
@output_schema(StandardPythonParameterType({"count": 1, "first": {"a": 1, "b": "x"}}))
def run(data):
    if data and data[0].get("a") == -1:
        raise RuntimeError("negative a")
    return {"count": len(data), "first": data[0] if data else None}
