"""Unit tests of the scoring app through Flask's test client (no gunicorn, no network)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from aml_server.config import ConfigError, ServerConfig
from aml_server.errors import ScriptInitError, ScriptLoadError

RUN_ERROR = {"message": "An unexpected error occurred in scoring script. Check the logs for more info."}
INTERNAL_ERROR = {"message": "An unexpected internal error occurred. Check the logs for more info."}


def test_health_and_request_ids(make_script_app) -> None:
    client = make_script_app("undecorated_echo").test_client()
    response = client.get("/")
    assert (response.status_code, response.data) == (200, b"Healthy")
    assert response.headers["x-request-id"] == response.headers["x-ms-request-id"]
    assert "x-ms-client-request-id" not in response.headers

    response = client.get("/", headers={"x-request-id": "abc", "x-ms-client-request-id": "cli", "TraceId": "t"})
    assert response.headers["x-request-id"] == "abc"
    assert response.headers["x-ms-client-request-id"] == response.headers["x-ms-request-id"] == "cli"
    assert response.headers["TraceId"] == "t"


def test_request_id_too_long_is_431(make_script_app) -> None:
    client = make_script_app("undecorated_echo").test_client()
    response = client.post("/score", data="x", headers={"x-request-id": "a" * 101})
    assert response.status_code == 431
    assert response.get_json() == {"message": "x-request-id must not exceed 100 characters"}
    assert "x-request-id" not in response.headers


def test_undecorated_gets_text_with_bom_and_non_ascii(make_script_app) -> None:
    client = make_script_app("undecorated_echo").test_client()
    body = "\ufeff{\"k\": \"\u00e9\"}".encode("utf-8")
    response = client.post("/score", data=body, content_type="application/json")
    assert response.status_code == 200
    assert response.get_json() == {"data": "\ufeff{\"k\": \"\u00e9\"}", "length": 11}
    assert b"\\u00e9" in response.data  # json.dumps escapes non-ASCII
    assert response.headers["x-ms-run-function-failed"] == "False"
    float(response.headers["x-ms-run-fn-exec-ms"])


def test_undecorated_rejects_non_utf8(make_script_app) -> None:
    response = make_script_app("undecorated_echo").test_client().post("/score", data=b"\xff", content_type="text/plain")
    assert response.status_code == 400
    assert response.get_json()["message"].startswith("Input cannot be decoded as UTF-8: ")


def test_get_query_parameters_become_the_input(make_script_app) -> None:
    response = make_script_app("undecorated_echo").test_client().get("/score?a=1&b=[1,2]&c=x&c=y")
    assert json.loads(response.get_json()["data"]) == {"a": 1, "b": [1, 2], "c": ["x", "y"]}


def test_methods(make_script_app) -> None:
    client = make_script_app("undecorated_echo").test_client()
    options = client.options("/score")
    assert (options.status_code, options.data) == (200, b"")
    for method in (client.put, client.delete):
        response = method("/score")
        assert response.status_code == 405
        assert response.get_json() == {"message": "The method is not allowed for the requested URL."}
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and "message" in missing.get_json()


@pytest.mark.parametrize(
    ("returned", "status", "body", "failed"),
    [
        ("none", 200, {}, "False"),
        ("text", 200, "h\u00e9llo \u2603", "False"),
        ("numpy", 500, INTERNAL_ERROR, "False"),
        ("raise", 500, RUN_ERROR, "True"),
    ],
)
def test_run_return_values(make_script_app, returned: str, status: int, body: object, failed: str) -> None:
    response = make_script_app("undecorated_returns").test_client().post("/score", json={"return": returned})
    assert response.status_code == status
    assert response.get_json() == body
    assert response.headers["x-ms-run-function-failed"] == failed


def test_run_traceback_goes_to_log_not_client(make_script_app, caplog: pytest.LogCaptureFixture) -> None:
    client = make_script_app("undecorated_returns").test_client()
    with caplog.at_level(logging.ERROR):
        response = client.post("/score", json={"return": "raise"})
    assert b"boom" not in response.data
    assert "boom from run()" in caplog.text


def test_flask_response_passes_through_and_5xx_marks_run_failed(make_script_app) -> None:
    client = make_script_app("undecorated_returns").test_client()
    plain = client.post("/score", json={"return": "flask_response"})
    assert (plain.status_code, plain.data, plain.mimetype) == (202, b"plain text", "text/plain")
    busy = client.post("/score", json={"return": "flask_503"})
    assert busy.status_code == 503 and busy.headers["x-ms-run-function-failed"] == "True"


def test_schema_script_errors(make_script_app) -> None:
    client = make_script_app("schema_standard").test_client()
    assert client.post("/score", data="{}", content_type="text/plain").get_json() == {
        "message": "Expects Content-Type to be application/json"
    }
    cases = {
        b"": "POST body is empty. Expecting a JSON dictionary.",
        b"[1]": "POST body should be a JSON dictionary.",
        b'{"x": 1}': "A value is not provided for the 'data' parameter.",
    }
    for body, message in cases.items():
        response = client.post("/score", data=body, content_type="application/json")
        assert (response.status_code, response.get_json()) == (400, {"message": message})
    bad = client.post("/score", data=b"{nope", content_type="application/json")
    assert bad.status_code == 400 and bad.get_json()["message"].startswith("POST body could not be decoded as JSON: ")


def test_schema_numpy_and_pandas_conversion(make_script_app) -> None:
    numpy_answer = make_script_app("schema_numpy").test_client().post("/score", json={"data": [[1, 2, 3]]})
    assert numpy_answer.get_json() == {"type": "ndarray", "shape": [1, 3], "sums": [6.0]}


def test_schema_pandas_conversion(make_script_app) -> None:
    rows = [{"age": 3, "income": 1.0, "city": "x"}, {"age": 9, "income": 2.0, "city": "y"}]
    answer = make_script_app("schema_pandas").test_client().post("/score", json={"data": rows})
    # inference_schema rebuilds the frame from its sample and sorts the columns.
    assert answer.get_json() == {"rows": 2, "columns": ["age", "city", "income"], "max_age": 9}


def test_swagger_documents(make_script_app) -> None:
    client = make_script_app("schema_standard").test_client()
    v2 = client.get("/swagger.json").get_json()
    assert v2["swagger"] == "2.0"
    assert v2["definitions"]["ServiceInput"]["properties"]["data"]["type"] == "array"
    assert v2["definitions"]["ServiceInput"]["example"] == {"data": [{"a": 1, "b": "x"}]}
    v3 = client.get("/swagger.json?version=3").get_json()
    assert v3["openapi"] == "3.0.3" and v3["components"]["schemas"]["ServiceOutput"]["type"] == "object"
    assert client.get("/swagger.json?version=3.1").get_json()["openapi"] == "3.1.0"
    unknown = client.get("/swagger.json?version=9")
    assert unknown.status_code == 404
    assert unknown.get_json() == {"message": "Swagger version [9] is not valid. Supported versions: [2, 3, 3.1]."}


def test_swagger_for_undecorated_and_path_prefix(make_script_app) -> None:
    client = make_script_app("undecorated_echo", service_path_prefix="/api/v1/", service_name="svc").test_client()
    document = client.get("/swagger.json").get_json()
    assert document["definitions"]["ServiceInput"] == {"type": "object", "example": {}}
    assert set(document["paths"]) == {"/api/v1/", "/api/v1/score", "/api/v1/swagger.json"}
    assert document["info"]["title"] == "svc"


def test_user_swagger_file_wins(make_app, tmp_path: Path) -> None:
    (tmp_path / "swagger.json").write_text('{"swagger": "2.0", "info": {"title": "mine"}}')
    client = make_app("def init(): pass\ndef run(data): return data\n").test_client()
    assert client.get("/swagger.json").get_json() == {"swagger": "2.0", "info": {"title": "mine"}}


def test_rawhttp_gets_the_request_and_headers_split(make_script_app) -> None:
    client = make_script_app("rawhttp_echo").test_client()
    echoed = client.post("/score", data=b"\x00\xffraw")
    assert echoed.data == b"\x00\xffraw" and echoed.mimetype == "application/octet-stream"
    multi = client.post("/score?mode=multi")
    assert multi.status_code == 201 and multi.headers.getlist("X-Multi") == ["a", "b"]
    assert client.options("/score").data == b"options seen by run()"
    failed = client.post("/score?mode=fail")
    assert failed.status_code == 503 and failed.headers["x-ms-run-function-failed"] == "True"


def test_request_headers_parameter(make_script_app) -> None:
    response = make_script_app("request_headers_text").test_client().post("/score", data="p", headers={"X-Custom": "v"})
    assert response.get_json() == {"data": "p", "custom": "v", "has_host": True}


def test_sibling_module_imports(make_script_app) -> None:
    response = make_script_app("sibling_import").test_client().post("/score", data="ab")
    assert response.get_json() == {"doubled": "abab", "factor": 2}


def test_scoring_timeout(make_script_app) -> None:
    client = make_script_app("slow_run", scoring_timeout_ms=200).test_client()
    response = client.post("/score", data="2")
    assert response.status_code == 500
    assert response.get_json() == {"message": "Scoring timeout after 200 ms"}
    assert response.headers["x-ms-run-function-failed"] == "True"
    assert client.post("/score", data="0").get_json() == "done"


@pytest.mark.parametrize(
    ("script", "error", "text"),
    [
        ("init_raises", ScriptInitError, "FileNotFoundError: model.pkl is not in AZUREML_MODEL_DIR"),
        ("import_error", ScriptLoadError, "No module named 'module_that_does_not_exist'"),
        ("missing_run", ScriptLoadError, "does not have a run() function defined."),
    ],
)
def test_startup_failures_raise(make_script_app, script: str, error: type, text: str) -> None:
    with pytest.raises(error) as caught:
        make_script_app(script)
    assert text in str(caught.value)


def test_missing_entry_script_names_the_path(make_app, tmp_path: Path) -> None:
    from create_app import create_app

    with pytest.raises(ScriptLoadError, match="does not exist"):
        create_app(ServerConfig(app_root=str(tmp_path), entry_script="nope/score.py"))


@pytest.mark.parametrize(
    "source",
    [
        "def init(): pass\ndef run(*args): return 1\n",
        "def init(): pass\ndef run(): return 1\n",
        "def init(): pass\ndef run(request_headers): return 1\n",
    ],
)
def test_unusable_run_signatures(make_app, source: str) -> None:
    with pytest.raises(ScriptLoadError):
        make_app(source)


def test_apps_do_not_share_script_kind(make_script_app, make_app) -> None:
    """A rawhttp script loaded first must not turn a later plain script into a raw one (no global flag)."""
    make_script_app("rawhttp_echo")
    plain = make_app("def init(): pass\ndef run(data): return {'got': data}\n", entry_script="other/score.py")
    assert plain.test_client().post("/score", data="x").get_json() == {"got": "x"}


def test_config_from_environ() -> None:
    environ = {"AML_APP_ROOT": "/a", "AZUREML_ENTRY_SCRIPT": "s/x.py", "SCORING_TIMEOUT_MS": "5"}
    config = ServerConfig.from_environ(environ)
    assert (config.entry_script_path, config.scoring_timeout_ms) == ("/a/s/x.py", 5)
    assert ServerConfig.from_environ({}).entry_script_path == "/var/azureml-app/score.py"
    with pytest.raises(ConfigError):
        ServerConfig.from_environ({"SCORING_TIMEOUT_MS": "soon"})
