"""inference_schema with PandasParameterType (records orient): the body's rows arrive as a DataFrame."""

import pandas as pd
from inference_schema.parameter_types.pandas_parameter_type import PandasParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema

SAMPLE = pd.DataFrame({"age": [31, 42], "income": [5.5, 7.25], "city": ["Oslo", "Lima"]})


def init():
    pass


@input_schema("data", PandasParameterType(SAMPLE, orient="records"))
@output_schema(StandardPythonParameterType({"rows": 2, "columns": ["age", "income", "city"]}))
def run(data):
    return {"rows": int(len(data)), "columns": [str(c) for c in data.columns], "max_age": int(data["age"].max())}
