"""The server settings v1 deployments use, through Flask's test client and a fake ingestion endpoint on 127.0.0.1.

AML_CORS_ORIGINS, AZUREML_SOURCE_DIRECTORY, WORKER_PRELOAD, the print() hook and
App Insights (AML_APP_INSIGHTS_ENABLED / AML_APP_INSIGHTS_KEY): what the
differential suite cannot reach cheaply (bad values, a connection string in
the key, init() failing, the sender's retries).
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import io
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from aml_server.appinsights import AppInsightsTarget, TargetError, connect_app_insights
from aml_server.config import ConfigError, ServerConfig
from aml_server.errors import ScriptInitError
from aml_server.print_log import PRINT_LOGGER, install_print_logger
from aml_server.telemetry_channel import TelemetryChannel
from app_layer_paths import APP_ROOT_IN_LAYER
from fake_ingestion import FakeIngestion

IKEY = "12345678-1234-4234-8234-123456789abc"


@pytest.fixture
def ingestion() -> Iterator[FakeIngestion]:
    with FakeIngestion() as sink:
        yield sink


def _telemetry_config(sink: FakeIngestion, **overrides: object) -> dict[str, object]:
    settings: dict[str, object] = {
        "app_insights_enabled": True,
        "app_insights_key": f"InstrumentationKey={IKEY};IngestionEndpoint={sink.url}",
        "service_name": "unit-service",
        "hostname": "unit-host",
    }
    settings.update(overrides)
    return settings


def _close(app) -> None:
    client = app.extensions["aml_appinsights"]
    if client is not None:
        client.close()


# --- configuration ---


def test_settings_are_read_from_the_environment() -> None:
    config = ServerConfig.from_environ({
        "AZUREML_SOURCE_DIRECTORY": "src", "AML_APP_ROOT": "/app", "AML_CORS_ORIGINS": "https://a.example",
        "AML_APP_INSIGHTS_ENABLED": "True", "AML_APP_INSIGHTS_KEY": f" {IKEY} ",
        "APP_INSIGHTS_LOG_RESPONSE_ENABLED": "0", "WORKSPACE_NAME": "ws", "HOSTNAME": "h1",
    })
    assert config.source_dir_path == "/app/src"
    assert config.cors_origins == "https://a.example"
    assert (config.app_insights_enabled, config.app_insights_key) == (True, IKEY)
    assert config.app_insights_log_response is False
    assert (config.workspace_name, config.hostname) == ("ws", "h1")
    defaults = ServerConfig.from_environ({})
    assert (defaults.source_dir_path, defaults.app_insights_enabled, defaults.hostname) == ("", False, "Unknown")


@pytest.mark.parametrize("word", ["maybe", "2", "enabled"])
def test_an_on_off_setting_that_is_neither_is_a_config_error(word: str) -> None:
    with pytest.raises(ConfigError, match=f"AML_APP_INSIGHTS_ENABLED must be true or false, not '{word}'"):
        ServerConfig.from_environ({"AML_APP_INSIGHTS_ENABLED": word})


def test_a_bad_setting_stops_the_worker_in_one_line(tmp_path: Path) -> None:
    """As the reference: the worker exits with gunicorn's boot-error code; the log says which variable."""
    (tmp_path / "score.py").write_text("def init(): pass\ndef run(data): return data\n")
    env = {"PATH": "/usr/bin:/bin", "AML_APP_ROOT": str(tmp_path), "AML_APP_INSIGHTS_ENABLED": "sometimes",
           "PYTHONPATH": ":".join(sys.path), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-c", "import wsgi"], cwd=APP_ROOT_IN_LAYER, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert "Configuration error: AML_APP_INSIGHTS_ENABLED must be true or false, not 'sometimes'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("value", "preload"), [("true", True), ("TRUE", True), ("false", False), ("1", False),
                                                (None, False)])
def test_worker_preload_sets_gunicorn_preload(value: str | None, preload: bool,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """As the reference's launcher: only the word "true" (any case) adds --preload."""
    if value is None:
        monkeypatch.delenv("WORKER_PRELOAD", raising=False)
    else:
        monkeypatch.setenv("WORKER_PRELOAD", value)
    sys.modules.pop("gunicorn_conf", None)
    try:
        assert importlib.import_module("gunicorn_conf").preload_app is preload
    finally:
        sys.modules.pop("gunicorn_conf", None)


# --- source directory and CORS ---


def test_nested_entry_script_imports_packages_at_the_source_root(make_app, tmp_path: Path) -> None:
    (tmp_path / "src" / "helpers").mkdir(parents=True)
    (tmp_path / "src" / "helpers" / "__init__.py").write_text("PREFIX = 'seen: '\n")
    source = "from helpers import PREFIX\ndef init(): pass\ndef run(data): return PREFIX + data\n"
    app = make_app(source, entry_script="src/scoring/score.py", source_dir="src")
    assert app.test_client().post("/score", data="x").get_json() == "seen: x"


def test_without_the_source_directory_a_nested_script_cannot_import_the_source_root(make_app, tmp_path: Path) -> None:
    """What Azure ML's AZUREML_SOURCE_DIRECTORY is for (the recipe sets it in every image)."""
    from aml_server.errors import ScriptLoadError

    (tmp_path / "src" / "helpers2").mkdir(parents=True)
    (tmp_path / "src" / "helpers2" / "__init__.py").write_text("")
    with pytest.raises(ScriptLoadError, match="No module named 'helpers2'"):
        make_app("import helpers2\ndef init(): pass\ndef run(data): return data\n", entry_script="src/scoring/score.py")


def test_cors_origins_are_split_and_stripped(make_app) -> None:
    app = make_app("def init(): pass\ndef run(data): return data\n", cors_origins=" https://a.example ,http://b.test")
    client = app.test_client()
    for origin in ("https://a.example", "http://b.test"):
        answer = client.post("/score", data="x", headers={"Origin": origin})
        assert answer.headers["Access-Control-Allow-Origin"] == origin
    assert "Access-Control-Allow-Origin" not in client.post("/score", data="x", headers={"Origin": "http://c"}).headers
    assert "Access-Control-Allow-Origin" not in client.get("/nope", headers={"Origin": "http://b.test"}).headers


# --- print() ---


def test_print_to_stdout_becomes_a_log_line_with_the_request_id(make_app, caplog: pytest.LogCaptureFixture,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    saved = builtins.print
    try:
        install_print_logger()
        install_print_logger()  # idempotent: one record per print, not two
        caplog.set_level(logging.INFO, logger=PRINT_LOGGER)
        app = make_app("def init():\n    print('loading', 3)\ndef run(data):\n    print(data, end='')\n"
                       "    print('to stderr', file=__import__('sys').stderr)\n    return 1\n")
        app.test_client().post("/score", data="hello", headers={"x-request-id": "rid-9"})
        print("outside", "a request", sep="-")
        with contextlib.redirect_stdout(io.StringIO()) as captured:  # a script capturing its own prints
            print("kept by the script")
    finally:
        builtins.print = saved
    lines = [record.getMessage() for record in caplog.records if record.name == PRINT_LOGGER]
    assert lines == ["loading 3", "hello (x-request-id=rid-9)", "outside-a request"]
    assert capsys.readouterr().err == "to stderr\n"
    assert captured.getvalue() == "kept by the script\n"


# --- App Insights ---


@pytest.mark.parametrize(("key", "env", "ikey", "url"), [
    (IKEY, "", IKEY, "https://dc.services.visualstudio.com/v2.1/track"),
    (f"InstrumentationKey={IKEY};IngestionEndpoint=https://westeurope-5.in.example/", "", IKEY,
     "https://westeurope-5.in.example/v2.1/track"),
    (IKEY, f"InstrumentationKey={IKEY};IngestionEndpoint=http://127.0.0.1:9/", IKEY, "http://127.0.0.1:9/v2.1/track"),
    (f"instrumentationkey={IKEY}", "", IKEY, "https://dc.services.visualstudio.com/v2.1/track"),
])
def test_key_or_connection_string_gives_the_target(key: str, env: str, ikey: str, url: str) -> None:
    target = AppInsightsTarget.parse(key, env)
    assert (target.instrumentation_key, target.track_url) == (ikey, url)


@pytest.mark.parametrize(("key", "message"), [
    ("not-a-uuid", "the instrumentation key is not a UUID"),
    ("IngestionEndpoint=https://x.example/", "has no instrumentation key"),
    (f"InstrumentationKey={IKEY};junk", "connection string part 'junk' is not NAME=VALUE"),
    (f"InstrumentationKey={IKEY};IngestionEndpoint=ftp://x", "IngestionEndpoint 'ftp://x' is not an http(s) URL"),
])
def test_bad_keys_are_named(key: str, message: str) -> None:
    with pytest.raises(TargetError, match=re.escape(message)):
        AppInsightsTarget.parse(key)


def test_a_bad_key_leaves_telemetry_off_and_says_why_in_one_line(caplog: pytest.LogCaptureFixture) -> None:
    """As the reference: serving goes on without telemetry."""
    caplog.set_level(logging.INFO, logger="aml_server.appinsights")
    assert connect_app_insights(ServerConfig(app_insights_enabled=True, app_insights_key="oops")) is None
    assert connect_app_insights(ServerConfig(app_insights_enabled=True)) is None
    assert connect_app_insights(ServerConfig(app_insights_enabled=False, app_insights_key=IKEY)) is None
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert messages[0].startswith("App Insights is off: the instrumentation key is not a UUID")
    assert "AML_APP_INSIGHTS_KEY is empty" in messages[1]


def test_items_reach_the_connection_strings_endpoint(make_app, ingestion: FakeIngestion) -> None:
    app = make_app("def init(): pass\ndef run(data):\n    if data == 'bad': raise KeyError('k')\n    return data\n",
                   **_telemetry_config(ingestion, app_insights_log_response=False))
    client = app.test_client()
    client.post("/score", data="fine", headers={"x-request-id": "u-1"})
    client.post("/score", data="bad", headers={"x-request-id": "u-2"})
    client.get("/")
    _close(app)  # sends what is queued
    envelopes = ingestion.envelopes(IKEY)
    names = sorted(e["name"].rsplit(".", 1)[1] for e in envelopes)
    assert names == ["Exception", "Request", "Request"]
    assert [post.path for post in ingestion.posts] == ["/v2.1/track"]
    request = next(e for e in envelopes if e["name"].endswith("Request"))
    assert "Response Value" not in request["data"]["baseData"]["properties"]  # APP_INSIGHTS_LOG_RESPONSE_ENABLED off
    assert request["tags"]["ai.cloud.role"] == "unit-service"
    exception = next(e for e in envelopes if e["name"].endswith("Exception"))
    assert exception["data"]["baseData"]["exceptions"][0]["typeName"] == "KeyError"


def test_a_failing_init_is_sent_before_the_worker_stops(make_app, ingestion: FakeIngestion) -> None:
    with pytest.raises(ScriptInitError):
        make_app("def init(): raise RuntimeError('no model here')\ndef run(data): return data\n",
                 **_telemetry_config(ingestion))
    (exception,) = ingestion.envelopes(IKEY)
    data = exception["data"]["baseData"]
    assert (data["exceptions"][0]["typeName"], data["exceptions"][0]["message"]) == ("RuntimeError", "no model here")
    assert data["properties"]["custom_dimensions"] == \
        "{'Container Id': 'unit-host', 'Request Id': 'Unknown', 'Client Request Id': ''}"


def test_the_channel_keeps_items_while_the_endpoint_is_down(ingestion: FakeIngestion,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """Connection refused: kept (one warning line), sent once the endpoint answers; never raises into the caller."""
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    caplog.set_level(logging.INFO, logger="aml_server.appinsights")
    channel = TelemetryChannel(f"http://127.0.0.1:{dead_port}/v2.1/track", interval_s=0.1)
    for number in range(3):
        channel.send({"iKey": IKEY, "name": "Microsoft.ApplicationInsights.Message", "n": number})
    assert ingestion.wait_for(lambda: any("could not be sent" in r.getMessage() for r in caplog.records), 10)
    channel.track_url = ingestion.url + "v2.1/track"
    assert ingestion.wait_for(lambda: len(ingestion.envelopes(IKEY)) == 3, 10)
    channel.close()
    assert [e["n"] for e in ingestion.envelopes(IKEY)] == [0, 1, 2]
    warnings = [r.getMessage() for r in caplog.records if "could not be sent" in r.getMessage()]
    assert len(warnings) == 1 and "(kept for the next try)" in warnings[0]
    assert any("reaches" in r.getMessage() for r in caplog.records)
