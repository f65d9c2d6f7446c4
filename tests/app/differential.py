"""The differential suite's two servers and its requests, shared by every place that runs the suite.

``tests/app/test_app_differential.py`` sends ``CALLS`` to our app under gunicorn and
to the oracle (azureml-inference-server-http) and compares them with
``assert_same_answer``; ``tests/e2e/test_scoring_contract_in_image.py`` sends the same
``CALLS`` through nginx in a running image.  The deliberate differences are listed
in the former's docstring and in the README.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import venv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pytest
from app_layer_paths import APP_ROOT_IN_LAYER, SCRIPTS_DIR

from tests.conftest import free_port

requests = pytest.importorskip("requests")

__all__ = ["APP_INSIGHTS_KEYS", "BOOT_TIMEOUT_S", "CALLS", "COMPARED_HEADERS", "CORS_ORIGINS", "Call", "EXTRA_ENV",
           "FAILING_SCRIPTS", "HasURL", "JSON", "OWN_TEST_SCRIPTS",
           "MODEL_FILES", "REQUEST_TIMEOUT_S", "SCORING_TIMEOUT_MS", "Server", "TEXT", "assert_same_answer", "free_port",
           "model_build_flags", "oracle_python", "start_server", "wait_until_up", "write_models"]

ORACLE_VERSION = "1.5.1"
ORACLE_VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ociassemble-test" / "oracle-venv"
ORACLE_PACKAGES = [f"azureml-inference-server-http=={ORACLE_VERSION}", "gunicorn==27.0.1", "numpy", "pandas"]
BOOT_TIMEOUT_S = 60  # both servers import pandas on 2 cores while ~30 processes start at once
REQUEST_TIMEOUT_S = 15
SCORING_TIMEOUT_MS = "500"  # for slow_run.py only

# Scripts whose worker must not boot; every other script must answer GET / with 200.
FAILING_SCRIPTS = {"init_raises", "import_error", "missing_run"}
# Scripts served by both servers but compared by their own tests (test_app_differential.py), not by CALLS:
# their answers depend on the process (pids), on telemetry, or on a nested source tree.
OWN_TEST_SCRIPTS = {"nested_source", "preload_pids", "appinsights_print"}
CORS_ORIGINS = "https://allowed.example, http://localhost:3000"
# App Insights: each side its own instrumentation key, so one fake endpoint tells their envelopes apart.
APP_INSIGHTS_KEYS = {True: "00000000-0000-4000-8000-000000000001", False: "00000000-0000-4000-8000-000000000002"}
# Values may name {ingestion} (the fake endpoint's URL) and {ikey} (the side's key).
EXTRA_ENV = {
    "slow_run": {"SCORING_TIMEOUT_MS": SCORING_TIMEOUT_MS},
    "cors_echo": {"AML_CORS_ORIGINS": CORS_ORIGINS},
    "preload_pids": {"WORKER_PRELOAD": "true", "WORKER_COUNT": "2"},
    "appinsights_print": {
        "AML_APP_INSIGHTS_ENABLED": "true",
        "AML_APP_INSIGHTS_KEY": "{ikey}",
        # The reference takes only an instrumentation key in AML_APP_INSIGHTS_KEY; its exporter
        # reads the endpoint from this variable (ours reads it the same way).
        "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey={ikey};IngestionEndpoint={ingestion}",
        "SERVICE_NAME": "diff-service",
        "WORKSPACE_NAME": "diff-workspace",
        "HOSTNAME": "diff-host",
    },
}
# Where the entry script goes under src/ (default score.py), and other files of the source tree.
ENTRY_UNDER_SOURCE = {"nested_source": "scoring/score.py"}
SOURCE_TREES = {
    "nested_source": {
        "nestedpkg/__init__.py": '"""A package at the source root, imported by src/scoring/score.py."""\n',
        "nestedpkg/text.py": "def shout(text):\n    return text.upper() + '!'\n",
    },
}

ORACLE_SHIMS = {
    "azureml/contrib/services/aml_request.py": (
        "from azureml_inference_server_http.api.aml_request import AMLRequest, rawhttp  # noqa: F401\n"
    ),
    "azureml/contrib/services/aml_response.py": (
        "from azureml_inference_server_http.api.aml_response import AMLResponse  # noqa: F401\n"
    ),
}

# Registered models as Azure ML lays them out (each file or folder under <name>/<version>/ with its
# own name), given to both servers, and built into the contract image with the same names:
# AZUREML_MODEL_DIR is the models folder, as with several models.
MODEL_FILES = {
    "greeting/1/greeting.txt": "hello from a file model\n",
    "lookup/2/lookup/table.json": '{"a": 1, "b": [2, 3]}',
    "lookup/2/lookup/MLmodel": "flavors: {}\n",
}


def write_models(models_dir: Path) -> None:
    """``MODEL_FILES`` under ``models_dir`` (an ``azureml-models`` folder)."""
    for relative, text in MODEL_FILES.items():
        (models_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        (models_dir / relative).write_text(text)


def model_build_flags(folder: Path) -> list[str]:
    """``ociassemble build`` flags registering ``MODEL_FILES``' models from copies written in ``folder``."""
    staged = folder / "staged-models"
    write_models(staged)
    return ["--model", f"{staged / 'greeting/1/greeting.txt'}:greeting:1", "--model", f"{staged / 'lookup/2/lookup'}:lookup:2"]


# Headers of the contract whose values must be equal on both sides.
COMPARED_HEADERS = ("x-ms-run-function-failed", "x-ms-client-request-id", "content-type", "traceid", "x-multi", "allow",
                    "vary", "access-control-allow-origin", "access-control-allow-methods",
                    "access-control-allow-headers", "access-control-allow-credentials",
                    "access-control-expose-headers", "access-control-max-age")
UNORDERED_HEADERS = ("allow",)
EXEC_MS = re.compile(r"^\d+\.\d{3}$")


def oracle_python() -> Path:
    """The oracle venv's interpreter, creating the venv on first use (cached across runs)."""
    python = ORACLE_VENV / "bin" / "python"
    check = [str(python), "-c", "import azureml_inference_server_http, numpy, pandas, gunicorn"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    shutil.rmtree(ORACLE_VENV, ignore_errors=True)
    ORACLE_VENV.parent.mkdir(parents=True, exist_ok=True)
    venv.create(ORACLE_VENV, with_pip=True)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *ORACLE_PACKAGES], capture_output=True, text=True, timeout=900
    )
    if install.returncode != 0:
        pytest.skip(f"cannot install the oracle ({' '.join(ORACLE_PACKAGES)}): {install.stderr.strip()[-500:]}")
    return python


@dataclass
class Server:
    """One gunicorn serving one script; stopped by PID."""

    name: str
    port: int
    process: subprocess.Popen
    log_path: Path
    healthy: bool = False
    exit_code: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _app_root(base: Path, script: str, ours: bool) -> Path:
    root = base / ("ours" if ours else "oracle") / script
    if ours:
        shutil.copytree(APP_ROOT_IN_LAYER, root, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        root.mkdir(parents=True)
        for relative, text in ORACLE_SHIMS.items():
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_text(text)
    write_models(root / "azureml-models")
    source = root / "src"
    entry = source / ENTRY_UNDER_SOURCE.get(script, "score.py")
    entry.parent.mkdir(parents=True)
    shutil.copy(SCRIPTS_DIR / f"{script}.py", entry)
    for helper in SCRIPTS_DIR.glob("_*.py"):
        shutil.copy(helper, source / helper.name)
    for relative, text in SOURCE_TREES.get(script, {}).items():
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        (source / relative).write_text(text)
    return root


def start_server(script: str, ours: bool, base: Path, oracle_python: Path, ingestion: str = "") -> Server:
    """Serve ``script`` by our app (``ours``) or the oracle; ``ingestion``: the fake App Insights endpoint."""
    root = _app_root(base, script, ours)
    port = free_port()
    prefixes = ("AZUREML_", "AML_", "PYTHON", "APPLICATIONINSIGHTS_", "APPINSIGHTS_", "WORKER_", "SERVICE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    extra = {name: value.format(ingestion=ingestion, ikey=APP_INSIGHTS_KEYS[ours])
             for name, value in EXTRA_ENV.get(script, {}).items()}
    env.update(
        AML_APP_ROOT=str(root),
        AZUREML_ENTRY_SCRIPT="src/" + ENTRY_UNDER_SOURCE.get(script, "score.py"),
        # How Azure ML tells the servers where the source tree is: both append it to
        # sys.path (ours also puts the entry script's folder first).
        AZUREML_SOURCE_DIRECTORY="src",
        AZUREML_MODEL_DIR=str(root / "azureml-models"),
        WORKER_TIMEOUT="60",
        PYTHONUNBUFFERED="1",
        # The oracle's telemetry exporter must never report about itself to Microsoft's hosts,
        # and keeps its retry files in the test's folder.
        APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL="true",
        TMPDIR=str(base),
        **extra,
    )
    if ours:
        command = [sys.executable, "-m", "gunicorn", "-c", str(root / "gunicorn_conf.py"), "-b", f"127.0.0.1:{port}"]
        command.append("wsgi:app")
    else:
        # What azmlinfsrv runs (amlserver_linux.run), bound to loopback instead of 0.0.0.0.
        workers = env.get("WORKER_COUNT", "1")
        command = [str(oracle_python), "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", workers, "--timeout", "60"]
        command += ["--access-logfile", "-", "--no-control-socket"]
        if env.get("WORKER_PRELOAD", "false").lower() == "true":
            command.append("--preload")
        command.append("azureml_inference_server_http.server.entry:app")
    log_path = base / f"{'ours' if ours else 'oracle'}-{script}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Server(name=script, port=port, process=process, log_path=log_path)


def wait_until_up(server: Server, deadline: float) -> None:
    while time.monotonic() < deadline:
        code = server.process.poll()
        if code is not None:
            server.exit_code = code
            return
        try:
            if requests.get(server.url + "/", timeout=2).status_code == 200:
                server.healthy = True
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)



class HasURL(Protocol):
    """Where a Call goes: a Server here, or a running image's published port."""

    @property
    def url(self) -> str: ...


@dataclass(frozen=True)
class Call:
    """One request sent to both servers."""

    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def send(self, server: "HasURL") -> requests.Response:
        return requests.request(
            self.method,
            server.url + self.path,
            data=self.body,
            headers=self.headers,
            timeout=REQUEST_TIMEOUT_S,
            allow_redirects=False,
        )


JSON = {"Content-Type": "application/json"}
TEXT = {"Content-Type": "text/plain"}

CALLS: dict[str, list[Call]] = {
    "undecorated_echo": [
        Call("GET", "/"),
        Call("HEAD", "/"),
        Call("POST", "/score", b'{"a": 1}', TEXT),
        Call("POST", "/score", '{"msg": "h\u00e9llo \u2603"}'.encode(), JSON),
        Call("POST", "/score", b"\xef\xbb\xbfwith a byte-order mark", TEXT),
        Call("POST", "/score", b"", TEXT),
        Call("POST", "/score", b"\xff\xfe\x00bad", TEXT),
        Call("GET", "/score?a=1&b=[1,2]&c=x&c=y&d=null"),
        Call("GET", "/score"),
        Call("OPTIONS", "/score"),
        Call("HEAD", "/score"),
        Call("PUT", "/score", b"x", TEXT),
        Call("DELETE", "/score"),
        Call("PATCH", "/score", b"x", TEXT),
        Call("POST", "/"),
        Call("GET", "/no/such/path"),
        Call("POST", "/score/", b"x", TEXT),
        Call("GET", "/swagger.json"),
        Call("GET", "/swagger.json?version=2"),
        Call("GET", "/swagger.json?version=2.0"),
        Call("GET", "/swagger.json?version=3"),
        Call("GET", "/swagger.json?version=3.1"),
        Call("GET", "/swagger.json?version=7"),
        Call("GET", "/swagger.json?version="),
        Call("POST", "/score", b"ids", {**TEXT, "x-request-id": "my-id-1"}),
        Call("POST", "/score", b"ids", {**TEXT, "x-ms-client-request-id": "client-1"}),
        Call("POST", "/score", b"ids", {**TEXT, "x-ms-request-id": "legacy-1"}),
        Call("POST", "/score", b"ids", {**TEXT, "x-ms-request-id": "legacy-2", "x-ms-client-request-id": "client-2"}),
        Call("GET", "/", headers={"TraceId": "trace-7"}),
        Call("POST", "/score", b"x", {**TEXT, "x-request-id": "r" * 100}),
        Call("POST", "/score", b"x", {**TEXT, "x-request-id": "r" * 101}),
        Call("GET", "/", headers={"x-request-id": "r" * 101}),
        Call("POST", "/score", b"x", {**TEXT, "x-ms-client-request-id": "c" * 101}),
        Call("POST", "/score", b"x", {**TEXT, "x-ms-request-id": "c" * 101}),
    ],
    "undecorated_returns": [
        Call("POST", "/score", b'{"return": "none"}', JSON),
        Call("POST", "/score", b'{"return": "text"}', JSON),
        Call("POST", "/score", b'{"return": "list"}', JSON),
        Call("POST", "/score", b'{"return": "numpy"}', JSON),
        Call("POST", "/score", b'{"return": "raise"}', JSON),
        Call("POST", "/score", b'{"return": "flask_response"}', JSON),
        Call("POST", "/score", b'{"return": "flask_503"}', JSON),
        Call("POST", "/score", b"not json", JSON),
    ],
    "schema_standard": [
        Call("POST", "/score", b'{"data": [{"a": 1, "b": "y"}, {"a": 2, "b": "z"}]}', JSON),
        Call("POST", "/score", b'{"data": [{"a": 1, "b": "y"}]}', {"Content-Type": "application/json; charset=utf-8"}),
        Call("POST", "/score", b'{"data": [{"a": 1}]}', TEXT),
        Call("POST", "/score", b'{"data": [{"a": 1}]}'),
        Call("POST", "/score", b"{not json", JSON),
        Call("POST", "/score", b"", JSON),
        Call("POST", "/score", b"   ", JSON),
        Call("POST", "/score", b"[1, 2]", JSON),
        Call("POST", "/score", b'{"other": 1}', JSON),
        Call("POST", "/score", b'{"data": [{"a": -1, "b": "x"}]}', JSON),
        Call("POST", "/score", b'{"data": "not a list"}', JSON),
        Call("GET", '/score?data=[{"a":5,"b":"q"}]'),
        Call("GET", "/score"),
        Call("OPTIONS", "/score"),
        Call("PUT", "/score", b"{}", JSON),
        Call("GET", "/swagger.json"),
        Call("GET", "/swagger.json?version=3"),
        Call("GET", "/swagger.json?version=3.1"),
    ],
    "schema_numpy": [
        Call("POST", "/score", b'{"data": [[1, 2, 3], [4, 5, 6]]}', JSON),
        Call("POST", "/score", b'{"data": [[1, 2]]}', JSON),
        Call("GET", "/swagger.json"),
        Call("GET", "/swagger.json?version=3"),
    ],
    "schema_pandas": [
        Call("POST", "/score", b'{"data": [{"age": 50, "income": 1.5, "city": "Rome"}]}', JSON),
        Call(
            "POST",
            "/score",
            b'{"data": [{"age": 20, "income": 2.0, "city": "A"}, {"age": 70, "income": 3.0, "city": "B"}]}',
            JSON,
        ),
        Call("GET", "/swagger.json"),
        Call("GET", "/swagger.json?version=3"),
        Call("GET", "/swagger.json?version=3.1"),
    ],
    "schema_multi_params": [
        Call("POST", "/score", b'{"features": [1, 2], "scale": 3}', {**JSON, "X-Custom": "hdr"}),
        Call("POST", "/score", b'{"features": [1, 2]}', JSON),
        Call("POST", "/score", b'{"scale": 3}', JSON),
        Call("GET", "/score?features=[4,5]&scale=0.5"),
        Call("GET", "/swagger.json"),
    ],
    "rawhttp_echo": [
        Call("POST", "/score", b"\x00\x01raw bytes\xff", {"Content-Type": "application/octet-stream"}),
        Call("POST", "/score?mode=multi"),
        Call("POST", "/score?mode=fail"),
        Call("POST", "/score?mode=none"),
        Call("GET", "/score?mode=dict&x=1"),
        Call("POST", "/score?mode=raise"),
        Call("OPTIONS", "/score"),
        Call("HEAD", "/score?mode=dict"),
        Call("PUT", "/score"),
        Call("GET", "/swagger.json"),
    ],
    "request_headers_text": [
        Call("POST", "/score", b"payload", {**TEXT, "X-Custom": "abc"}),
        Call("GET", "/score?q=1", headers={"X-Custom": "get"}),
    ],
    "sibling_import": [Call("POST", "/score", b"ab", TEXT)],
    # AML_CORS_ORIGINS (CORS_ORIGINS): an allowed origin, another origin, preflights, no Origin at all.
    "cors_echo": [
        Call("POST", "/score", b"hi", {**TEXT, "Origin": "https://allowed.example"}),
        Call("POST", "/score", b"hi", {**TEXT, "Origin": "http://localhost:3000"}),
        Call("POST", "/score", b"hi", {**TEXT, "Origin": "https://other.example"}),
        Call("POST", "/score", b"hi", TEXT),
        Call("GET", "/score?x=1", headers={"Origin": "https://allowed.example"}),
        Call("GET", "/", headers={"Origin": "https://allowed.example"}),
        Call("GET", "/"),
        Call("GET", "/swagger.json", headers={"Origin": "https://allowed.example"}),
        Call("OPTIONS", "/score", headers={"Origin": "https://allowed.example", "Access-Control-Request-Method": "POST",
                                           "Access-Control-Request-Headers": "content-type, x-custom"}),
        Call("OPTIONS", "/score", headers={"Origin": "https://allowed.example", "Access-Control-Request-Method": "PUT"}),
        Call("OPTIONS", "/score", headers={"Origin": "https://other.example", "Access-Control-Request-Method": "POST"}),
        Call("OPTIONS", "/score", headers={"Origin": "https://allowed.example"}),
        Call("OPTIONS", "/score"),
        Call("OPTIONS", "/", headers={"Origin": "https://allowed.example", "Access-Control-Request-Method": "GET"}),
        Call("OPTIONS", "/swagger.json", headers={"Origin": "http://localhost:3000",
                                                  "Access-Control-Request-Method": "GET"}),
        Call("PUT", "/score", b"x", {**TEXT, "Origin": "https://allowed.example"}),
        Call("GET", "/no/such/path", headers={"Origin": "https://allowed.example"}),
        Call("POST", "/score", b"x", {**TEXT, "Origin": "https://allowed.example", "x-request-id": "r" * 101}),
    ],
    "model_files": [Call("POST", "/score", b'{"key": "b"}', JSON), Call("POST", "/score", b'{"key": "zz"}', JSON)],
    # Its one AMLResponse is difference 4; the routes around it still agree.
    "rawhttp_content_type": [Call("GET", "/"), Call("GET", "/swagger.json"), Call("PUT", "/score")],
    "slow_run": [
        Call("POST", "/score", b"0", TEXT),
        Call("POST", "/score", b"3", TEXT),
        Call("GET", "/"),
    ],
}


def assert_same_answer(call: Call, ours: requests.Response, oracle: requests.Response) -> None:
    where = f"{call.method} {call.path} {call.headers}"
    assert ours.status_code == oracle.status_code, where
    if oracle.headers.get("content-type", "").startswith("application/json") and oracle.content:
        assert ours.json() == oracle.json(), where
    else:
        assert ours.content == oracle.content, where
    for name in COMPARED_HEADERS:
        mine, theirs = ours.headers.get(name), oracle.headers.get(name)
        if name in UNORDERED_HEADERS and mine and theirs:
            # Werkzeug lists the methods of a set: their order changes with each process's hash seed.
            mine, theirs = sorted(mine.split(", ")), sorted(theirs.split(", "))
        assert mine == theirs, f"{where}: header {name}"
    for name in ("x-request-id", "x-ms-request-id", "x-ms-run-fn-exec-ms"):
        assert (name in ours.headers) == (name in oracle.headers), f"{where}: presence of {name}"
    if "x-request-id" in call.headers and "x-request-id" in oracle.headers:
        assert ours.headers["x-request-id"] == oracle.headers["x-request-id"], where
    if "x-ms-request-id" in call.headers and "x-ms-request-id" in oracle.headers:
        assert ours.headers["x-ms-request-id"] == oracle.headers["x-ms-request-id"], where
    if "x-ms-run-fn-exec-ms" in ours.headers:
        assert EXEC_MS.match(ours.headers["x-ms-run-fn-exec-ms"]), where
    # A generated x-ms-request-id equals the generated x-request-id on both sides.
    for response in (ours, oracle):
        client_ids = {"x-ms-request-id", "x-ms-client-request-id"} & set(call.headers)
        if "x-ms-request-id" in response.headers and not client_ids:
            assert response.headers["x-ms-request-id"] == response.headers["x-request-id"], where

