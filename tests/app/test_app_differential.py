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
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Iterator

import pytest
from app_layer_paths import SCRIPTS_DIR
from differential import (
    BOOT_TIMEOUT_S,
    CALLS,
    FAILING_SCRIPTS,
    JSON,
    REQUEST_TIMEOUT_S,
    SCORING_TIMEOUT_MS,
    TEXT,
    Server,
    assert_same_answer,
    oracle_python,
    start_server,
    wait_until_up,
)

requests = pytest.importorskip("requests")


@dataclass
class Pair:
    ours: Server
    oracle: Server


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Pair]]:
    """Every script served by both servers, all started at once to keep the suite short."""
    python = oracle_python()
    base = tmp_path_factory.mktemp("differential")
    scripts = sorted(p.stem for p in SCRIPTS_DIR.glob("*.py") if not p.name.startswith("_"))
    pairs: dict[str, Pair] = {}
    try:
        for script in scripts:
            pairs[script] = Pair(start_server(script, True, base, python), start_server(script, False, base, python))
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        for script, pair in pairs.items():
            for ours in (True, False):
                server = pair.ours if ours else pair.oracle
                wait_until_up(server, deadline)
                for _ in range(2):  # another process took the port first: the script is not at fault
                    if server.healthy or "Address already in use" not in server.log():
                        break
                    server.stop()
                    server = start_server(script, ours, base / f"retry-{server.port}", python)
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
    assert set(servers) == set(CALLS) | FAILING_SCRIPTS


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
