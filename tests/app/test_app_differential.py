"""Differential suite: our scoring app against azureml-inference-server-http 1.5.1, over real HTTP.

Each script in tests/app/scripts is served twice, on 127.0.0.1 and a free port:
by OUR app (the layer's app root copied to a temp dir, real gunicorn with the
layer's gunicorn_conf.py, this interpreter) and by the ORACLE (the reference
package in its own venv, served by gunicorn as its ``azmlinfsrv`` CLI does,
but bound to loopback).  Both get the same requests; status codes, bodies
(JSON compared as values) and the contract headers must agree.  Generated
request ids and ``x-ms-run-fn-exec-ms`` differ by nature: only their presence
and shape are compared.

The oracle gets two-line shims for ``azureml.contrib.services.aml_request`` /
``aml_response`` re-exporting its own ``azureml_inference_server_http.api``
classes: the package alone does not provide those import paths (Azure ML's
image adds them), and our image provides them by contract.

Deliberate differences, each asserted by a test below rather than skipped:

1. Form-encoded POST to an undecorated script (curl's ``-d`` default): the
   oracle passes ``""`` to run() (Flask consumes the body as form data); ours
   passes the body, as the contract says ("the request body decoded as UTF-8").
2. Bytes that are no UTF-8/16/32 sent as JSON to a schema script: the oracle
   answers 500 "internal error" (an uncaught UnicodeDecodeError); ours answers
   400 "POST body could not be decoded as JSON: ...": it is the client's fault.
3. run() raising its own ``TimeoutError``: the oracle reports "Scoring timeout
   after 3600000 ms" (its deadline also raises TimeoutError); ours reports the
   usual run() failure.  Both: 500 with ``x-ms-run-function-failed: True``.
4. An AMLResponse given a lowercase ``content-type`` header: the oracle sends
   two Content-Type lines (the default text/html and the given one); ours
   replaces the default.
5. An empty ``x-request-id`` header: the oracle then sends no ``x-request-id``;
   ours generates one, as for a missing header.

Server settings are compared too: AML_CORS_ORIGINS (``cors_echo`` in CALLS),
AZUREML_SOURCE_DIRECTORY with a nested entry script, WORKER_PRELOAD, and App
Insights telemetry (both servers send to one fake ingestion endpoint on
127.0.0.1; the differences of our envelopes are listed in
``aml_server/appinsights.py`` and asserted below).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Iterator

import pytest
from app_layer_paths import SCRIPTS_DIR
from differential import (
    APP_INSIGHTS_KEYS,
    BOOT_TIMEOUT_S,
    CALLS,
    FAILING_SCRIPTS,
    JSON,
    OWN_TEST_SCRIPTS,
    REQUEST_TIMEOUT_S,
    SCORING_TIMEOUT_MS,
    TEXT,
    Call,
    Server,
    assert_same_answer,
    oracle_python,
    start_server,
    wait_until_up,
)
from fake_ingestion import FakeIngestion

requests = pytest.importorskip("requests")


@dataclass
class Pair:
    ours: Server
    oracle: Server


@pytest.fixture(scope="session")
def ingestion() -> Iterator[FakeIngestion]:
    """The fake App Insights endpoint both servers of ``appinsights_print`` send to."""
    with FakeIngestion() as sink:
        yield sink


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory, ingestion: FakeIngestion) -> Iterator[dict[str, Pair]]:
    """Every script served by both servers, all started at once to keep the suite short."""
    python = oracle_python()
    base = tmp_path_factory.mktemp("differential")
    scripts = sorted(p.stem for p in SCRIPTS_DIR.glob("*.py") if not p.name.startswith("_"))
    pairs: dict[str, Pair] = {}
    try:
        for script in scripts:
            pairs[script] = Pair(start_server(script, True, base, python, ingestion.url),
                                 start_server(script, False, base, python, ingestion.url))
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        for script, pair in pairs.items():
            for ours in (True, False):
                server = pair.ours if ours else pair.oracle
                wait_until_up(server, deadline)
                for _ in range(2):  # another process took the port first: the script is not at fault
                    if server.healthy or "Address already in use" not in server.log():
                        break
                    server.stop()
                    server = start_server(script, ours, base / f"retry-{server.port}", python, ingestion.url)
                    wait_until_up(server, deadline)
                pairs[script] = pair = Pair(server, pair.oracle) if ours else Pair(pair.ours, server)
        yield pairs
    finally:
        for pair in pairs.values():
            pair.ours.stop()
            pair.oracle.stop()


def _pair(servers: dict[str, Pair], script: str) -> Pair:
    pair = servers[script]
    assert pair.oracle.healthy, f"oracle did not boot {script}:\n{pair.oracle.log()[-3000:]}"
    assert pair.ours.healthy, f"our app did not boot {script}:\n{pair.ours.log()[-3000:]}"
    return pair


@pytest.mark.parametrize("script", sorted(CALLS))
def test_same_answers(servers: dict[str, Pair], script: str) -> None:
    pair = _pair(servers, script)
    for call in CALLS[script]:
        assert_same_answer(call, call.send(pair.ours), call.send(pair.oracle))


def test_every_script_is_exercised(servers: dict[str, Pair]) -> None:
    assert set(servers) == set(CALLS) | FAILING_SCRIPTS | OWN_TEST_SCRIPTS
    assert not set(CALLS) & OWN_TEST_SCRIPTS


def test_scoring_timeout_message(servers: dict[str, Pair]) -> None:
    pair = _pair(servers, "slow_run")
    for server in (pair.ours, pair.oracle):
        response = requests.post(server.url + "/score", data=b"3", headers=TEXT, timeout=REQUEST_TIMEOUT_S)
        assert response.status_code == 500
        assert response.json() == {"message": f"Scoring timeout after {SCORING_TIMEOUT_MS} ms"}
        assert response.headers["x-ms-run-function-failed"] == "True"


@pytest.mark.parametrize("script", sorted(FAILING_SCRIPTS))
def test_startup_failure(servers: dict[str, Pair], script: str) -> None:
    """Neither server ever answers healthy; gunicorn stops with its boot-error code; our log says why in one line."""
    pair = servers[script]
    for server in (pair.ours, pair.oracle):
        assert not server.healthy
        assert server.exit_code == 3, server.log()[-2000:]
    headline = {
        "init_raises": "User's init function failed: FileNotFoundError: model.pkl is not in AZUREML_MODEL_DIR",
        "import_error": "User's score script could not be loaded: Entry script",
        "missing_run": "User's score script could not be loaded: User script at",
    }[script]
    assert headline in pair.ours.log()
    assert "Traceback (most recent call last)" in pair.ours.log()
    if script == "init_raises":
        assert "User's init function failed" in pair.oracle.log()


# --- deliberate differences (see the module docstring) ---


def test_difference_1_form_encoded_body_reaches_run(servers: dict[str, Pair]) -> None:
    pair = _pair(servers, "undecorated_echo")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    ours = requests.post(pair.ours.url + "/score", data=b'{"a": 1}', headers=form, timeout=REQUEST_TIMEOUT_S)
    oracle = requests.post(pair.oracle.url + "/score", data=b'{"a": 1}', headers=form, timeout=REQUEST_TIMEOUT_S)
    assert oracle.json() == {"data": "", "length": 0}
    assert ours.json() == {"data": '{"a": 1}', "length": 8}


def test_difference_2_undecodable_json_body_is_a_client_error(servers: dict[str, Pair]) -> None:
    pair = _pair(servers, "schema_standard")
    body = b'{"data": "\xff\xfe"}'
    ours = requests.post(pair.ours.url + "/score", data=body, headers=JSON, timeout=REQUEST_TIMEOUT_S)
    oracle = requests.post(pair.oracle.url + "/score", data=body, headers=JSON, timeout=REQUEST_TIMEOUT_S)
    assert oracle.status_code == 500
    assert oracle.json() == {"message": "An unexpected internal error occurred. Check the logs for more info."}
    assert ours.status_code == 400
    assert ours.json()["message"].startswith("POST body could not be decoded as JSON: ")


def test_difference_3_user_timeout_error_is_a_run_failure(servers: dict[str, Pair]) -> None:
    pair = _pair(servers, "undecorated_returns")
    body = b'{"return": "timeout_error"}'
    ours = requests.post(pair.ours.url + "/score", data=body, headers=JSON, timeout=REQUEST_TIMEOUT_S)
    oracle = requests.post(pair.oracle.url + "/score", data=body, headers=JSON, timeout=REQUEST_TIMEOUT_S)
    for response in (ours, oracle):
        assert response.status_code == 500
        assert response.headers["x-ms-run-function-failed"] == "True"
    assert oracle.json() == {"message": "Scoring timeout after 3600000 ms"}
    assert ours.json() == {"message": "An unexpected error occurred in scoring script. Check the logs for more info."}


def test_difference_4_lowercase_content_type_replaces_the_default(servers: dict[str, Pair]) -> None:
    pair = _pair(servers, "rawhttp_content_type")
    ours = requests.post(pair.ours.url + "/score", timeout=REQUEST_TIMEOUT_S)
    oracle = requests.post(pair.oracle.url + "/score", timeout=REQUEST_TIMEOUT_S)
    assert ours.content == oracle.content == b"\x89PNG fake"
    assert oracle.headers["content-type"] == "text/html; charset=utf-8, image/png"  # two lines, joined by requests
    assert ours.headers["content-type"] == "image/png"


def test_difference_5_empty_request_id_gets_a_new_one(servers: dict[str, Pair]) -> None:
    pair = _pair(servers, "undecorated_echo")
    headers = {"x-request-id": ""}
    ours = requests.get(pair.ours.url + "/", headers=headers, timeout=REQUEST_TIMEOUT_S)
    oracle = requests.get(pair.oracle.url + "/", headers=headers, timeout=REQUEST_TIMEOUT_S)
    assert oracle.status_code == ours.status_code == 200
    assert "x-request-id" not in oracle.headers
    assert re.fullmatch(r"[0-9a-f-]{36}", ours.headers["x-request-id"])


# --- server settings ---


def test_nested_entry_script_imports_from_the_source_root(servers: dict[str, Pair]) -> None:
    """src/scoring/score.py imports src/nestedpkg: AZUREML_SOURCE_DIRECTORY=src is on sys.path on both sides."""
    pair = _pair(servers, "nested_source")
    calls = [Call("POST", "/score", b"abc", TEXT), Call("GET", "/score?x=1"), Call("GET", "/swagger.json")]
    for call in calls:
        assert_same_answer(call, call.send(pair.ours), call.send(pair.oracle))
    assert calls[0].send(pair.ours).json() == {"shouted": "ABC!", "init": "READY!"}


def test_cors_headers_are_really_sent(servers: dict[str, Pair]) -> None:
    """CALLS["cors_echo"] compares every CORS header; this checks they are there at all (not two absences)."""
    pair = _pair(servers, "cors_echo")
    allowed = {**TEXT, "Origin": "https://allowed.example"}
    preflight = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"}
    for server in (pair.ours, pair.oracle):
        answer = requests.post(server.url + "/score", data=b"x", headers=allowed, timeout=REQUEST_TIMEOUT_S)
        assert answer.headers["access-control-allow-origin"] == "https://allowed.example"
        assert "Origin" in answer.headers["vary"]
        other = requests.post(server.url + "/score", data=b"x", headers={**TEXT, "Origin": "https://other.example"},
                              timeout=REQUEST_TIMEOUT_S)
        assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
        answer = requests.options(server.url + "/score", headers=preflight, timeout=REQUEST_TIMEOUT_S)
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert answer.headers["access-control-allow-methods"] == "GET, POST"
        assert answer.headers["access-control-allow-headers"] == "content-type"
    plain = requests.post(_pair(servers, "undecorated_echo").ours.url + "/score", data=b"x", headers=allowed,
                          timeout=REQUEST_TIMEOUT_S)
    assert "access-control-allow-origin" not in plain.headers  # no AML_CORS_ORIGINS: no CORS


def test_worker_preload_runs_init_once_in_the_arbiter(servers: dict[str, Pair]) -> None:
    """WORKER_PRELOAD=true, two workers: init() ran in gunicorn's arbiter, requests are answered by workers."""
    pair = _pair(servers, "preload_pids")
    for server in (pair.ours, pair.oracle):
        answers = [requests.post(server.url + "/score", data=b"x", headers=TEXT, timeout=REQUEST_TIMEOUT_S).json()
                   for _ in range(6)]
        assert {a["init_pid"] for a in answers} == {server.process.pid}, server.log()[-2000:]
        assert server.process.pid not in {a["pid"] for a in answers}


def _items(envelopes: list[dict], name: str) -> list[dict]:
    return [e for e in envelopes if e["name"] == f"Microsoft.ApplicationInsights.{name}"]


def _messages(envelopes: list[dict]) -> list[str]:
    return sorted(e["data"]["baseData"]["message"] for e in _items(envelopes, "Message"))


def test_app_insights_items(servers: dict[str, Pair], ingestion: FakeIngestion) -> None:
    """Both servers send a Request per answer (not for GET /), an Exception for run() raising, a Message per print()."""
    pair = _pair(servers, "appinsights_print")
    for server in (pair.ours, pair.oracle):
        ok = requests.post(server.url + "/score", data=b"hello", timeout=REQUEST_TIMEOUT_S,
                           headers={**TEXT, "x-request-id": "ai-ok", "x-ms-client-request-id": "ai-client"})
        assert ok.status_code == 200
        failed = requests.post(server.url + "/score", data=b"raise", timeout=REQUEST_TIMEOUT_S,
                               headers={**TEXT, "x-request-id": "ai-fail"})
        assert failed.status_code == 500
        assert requests.get(server.url + "/", timeout=REQUEST_TIMEOUT_S).text == "Healthy"
        assert requests.get(server.url + "/swagger.json", timeout=REQUEST_TIMEOUT_S,
                            headers={"x-request-id": "ai-swagger"}).status_code == 200
    expected_messages = ["init says hello", "run got hello", "run got raise"]

    def complete(ikey: str) -> bool:
        envelopes = ingestion.envelopes(ikey)
        return (len(_items(envelopes, "Request")) >= 3 and len(_items(envelopes, "Exception")) >= 1
                and _messages(envelopes) == expected_messages)

    for ours in (True, False):
        assert ingestion.wait_for(lambda: complete(APP_INSIGHTS_KEYS[ours]), 30), (
            f"{'ours' if ours else 'oracle'} sent {ingestion.envelopes(APP_INSIGHTS_KEYS[ours])}")
    time.sleep(1)  # anything sent late (a duplicate) would show below
    ours, oracle = (ingestion.envelopes(APP_INSIGHTS_KEYS[side]) for side in (True, False))
    assert all(post.path.endswith("/v2.1/track") for post in ingestion.posts)

    # The same items, with the same envelope fields and tags.
    for name in ("Request", "Exception", "Message"):
        assert len(_items(ours, name)) == len(_items(oracle, name)), name
    assert _messages(ours) == _messages(oracle) == expected_messages
    assert not _items(ours, "Metric")  # difference 4: no _OTELRESOURCE_ metric
    for envelope in ours:
        twin = next(e for e in oracle if e["name"] == envelope["name"])
        assert set(envelope) == set(twin)
        assert {k: v for k, v in envelope.items() if k not in ("time", "tags", "data", "iKey")} == \
               {k: v for k, v in twin.items() if k not in ("time", "tags", "data", "iKey")}
        assert set(envelope["tags"]) - {"ai.device.locale"} == set(twin["tags"]) - {"ai.device.locale"}
        assert envelope["tags"]["ai.cloud.role"] == twin["tags"]["ai.cloud.role"] == "diff-service"
        assert envelope["data"]["baseType"] == twin["data"]["baseType"]
        assert set(envelope["data"]["baseData"]) == set(twin["data"]["baseData"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", envelope["time"])

    # Requests: the reference's custom properties, the same values but for times and the port.
    def requests_by_id(envelopes: list[dict]) -> dict[str, dict]:
        return {e["data"]["baseData"]["properties"]["Request Id"]: e for e in _items(envelopes, "Request")}

    ours_requests, oracle_requests = requests_by_id(ours), requests_by_id(oracle)
    assert set(ours_requests) == set(oracle_requests) == {"ai-ok", "ai-fail", "ai-swagger"}
    timing = {"start_time", "duration", "url"}
    for request_id, envelope in ours_requests.items():
        mine, theirs = envelope["data"]["baseData"], oracle_requests[request_id]["data"]["baseData"]
        assert {k: v for k, v in mine["properties"].items() if k not in timing} == \
               {k: v for k, v in theirs["properties"].items() if k not in timing}
        assert mine["properties"]["url"].rsplit("/", 1)[1] == theirs["properties"]["url"].rsplit("/", 1)[1]
        assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", mine["properties"]["duration"])
        assert mine["name"] == theirs["name"] == envelope["tags"]["ai.operation.name"]
        # Difference 1: our own responseCode and success are the answer's; the reference's are "0" and true.
        status = mine["properties"]["resultCode"]
        assert (mine["responseCode"], mine["success"]) == (status, status == "200")
        assert (theirs["responseCode"], theirs["success"]) == ("0", True)
    failed_request = ours_requests["ai-fail"]["data"]["baseData"]["properties"]
    assert failed_request["resultCode"] == "500" and failed_request["success"] == "False"
    assert ours_requests["ai-ok"]["data"]["baseData"]["properties"]["Client Request Id"] == "ai-client"
    assert ours_requests["ai-ok"]["data"]["baseData"]["properties"]["Response Value"] == '{"ok": true}'

    # The exception: the same custom dimensions and severity; difference 2: the user's exception is named.
    (mine,), (theirs,) = (_items(side, "Exception") for side in (ours, oracle))
    mine_data, theirs_data = mine["data"]["baseData"], theirs["data"]["baseData"]
    assert mine_data["properties"]["custom_dimensions"] == theirs_data["properties"]["custom_dimensions"] == \
        "{'Container Id': 'diff-host', 'Request Id': 'ai-fail', 'Client Request Id': ''}"
    assert mine_data["severityLevel"] == theirs_data["severityLevel"] == "3"
    assert theirs_data["exceptions"][0]["typeName"] == "UserScriptException"
    assert (mine_data["exceptions"][0]["typeName"], mine_data["exceptions"][0]["message"]) == \
           ("ValueError", "boom from run")
    for data in (mine_data, theirs_data):
        assert 'raise ValueError("boom from run")' in data["exceptions"][0]["stack"]
    # Difference 3: items sent while answering a request carry its operation id.
    assert mine["tags"]["ai.operation.id"] == ours_requests["ai-fail"]["tags"]["ai.operation.id"]
    assert theirs["tags"]["ai.operation.id"] == "0" * 32

    # print() lines: Messages of severity 1, and log lines; ours end with the request id.
    for side in (ours, oracle):
        assert {e["data"]["baseData"]["severityLevel"] for e in _items(side, "Message")} == {"1"}
    run_message = next(e for e in _items(ours, "Message") if e["data"]["baseData"]["message"] == "run got hello")
    assert run_message["data"]["baseData"]["properties"]["Request Id"] == "ai-ok"
    assert "aml_server.print - run got hello (x-request-id=ai-ok)" in pair.ours.log()
    assert "aml_server.print - init says hello\n" in pair.ours.log()
    assert "azmlinfsrv.print - run got hello" in pair.oracle.log()
