"""The differential suite once more, through nginx in a running image.

One image is built from the Debian base with every script of ``tests/app/scripts``
in its source folder (``scoring/``), numpy + pandas in its deps layer and the suite's two
models (``differential.MODEL_FILES``, registered as Azure ML lays them out); it is then
run once per script with ``AZUREML_ENTRY_SCRIPT=scoring/<script>.py`` (all runs at
once, each in its own namespaces, so every one listens on its own 5001), and
``tests/app/differential.py``'s ``CALLS`` go to the published port, through nginx,
runit's gunicorn and the app, exactly as a client of the image sends them.  Each
answer is compared with the oracle's (azureml-inference-server-http on loopback,
started as the app suite starts it) by the same ``assert_same_answer``: the only
differences allowed are the README's deliberate ones, each checked below on our
side.  Then the nginx tuning the site claims: a 20 MB body is scored, an over-limit
one gets nginx's 413 JSON, client connections are kept alive, proxy timeouts follow
``WORKER_TIMEOUT``.

Needs root and bwrap (the base: ``make-base``, from .debs); about a minute once the base is cached.
The same tests run on the arm64 build under qemu in ``test_scoring_contract_in_image_arm64``
(opt-in: ``OCIASSEMBLE_TEST_ARM64_CONTRACT=1``).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

import pytest

from ociassemble.emulation import SLOWDOWN
from ociassemble.image.assemble import Image
from ociassemble.image.cache import BlobCache
from ociassemble.imageio import load_image
from ociassemble.run.container import RunningImage
from tests.conftest import REPO, run_cli
from tests.hostarch import HOST_NAME

# differential.py (and the app_layer_paths.py it imports) sit in tests/app, which
# pytest puts on sys.path only when it collects that folder.
sys.path.insert(0, str(REPO / "tests" / "app"))
import differential as diff  # noqa: E402

requests = pytest.importorskip("requests")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="ociassemble run needs root"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed"),
]

SOURCE_FOLDER = "scoring"
# The versions the oracle venv and the test venv have, so pandas/numpy swagger examples agree.
REQUIREMENTS = "numpy==2.4.6\npandas==3.1.1\n"
# An e2e-only script for nginx's body limit: answers the length of the body it got.
BODY_LENGTH_SCRIPT = '''"""Answers the length of the body it got (nginx body-size checks)."""


def init():
    pass


def run(data):
    return {"length": len(data)}
'''
BODY_LIMIT = 100 * 1024 * 1024  # the site's client_max_body_size 100m
BIG_BODY = 20 * 1024 * 1024
WORKER_TIMEOUT = "7"  # given to the body_length run: nginx's proxy timeouts must follow it
BOOT_TIMEOUT_S = 150  # ~26 servers (15 images, 11 oracles) import pandas at once on 2 cores
TIMEOUT_CONF = "run/azureml-nginx/timeouts.conf"  # written by /var/runit/nginx/run


@dataclass
class ImageRun:
    """One run of the image for one entry script, published on a loopback port."""

    script: str
    port: int
    running: RunningImage
    log_path: Path
    healthy: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def file_in_image(self, path: str, process_name: str) -> str:
        """A file as ``process_name`` in the image sees it (through /proc/PID/root)."""
        for pid in self.running.pids():
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == process_name:
                    return Path(f"/proc/{pid}/root/{path}").read_text()
            except OSError:
                continue
        raise AssertionError(f"no {process_name} process in the image for {self.script}")


@dataclass
class Served:
    image: dict[str, ImageRun]
    oracle: dict[str, diff.Server]


def build_scoring_image(base: str, platform: str, cache: BlobCache, work: Path) -> Image:
    """The image with every differential script in ``scoring/`` (entry script: undecorated_echo.py),
    built for ``platform`` on ``base`` (the sibling module builds the arm64 one with this)."""
    project = work / "contract-project"
    source = project / SOURCE_FOLDER
    source.mkdir(parents=True)
    for script in diff.SCRIPTS_DIR.glob("*.py"):
        shutil.copy(script, source / script.name)
    (source / "body_length.py").write_text(BODY_LENGTH_SCRIPT)
    (project / "requirements.txt").write_text(REQUIREMENTS)
    out = work / "contract-image"
    proc = run_cli("build", str(project), "--entry-script", str(source / "undecorated_echo.py"),
                   "--source-dir", str(source), "--source-name", SOURCE_FOLDER, "-r", str(project / "requirements.txt"),
                   *diff.model_build_flags(work / "contract-models"), "--base", base, "--platform", platform,
                   "-o", f"oci:{out}", "--json", "--cache-dir", str(cache.root))
    assert proc.returncode == 0, proc.stderr
    return load_image(f"oci:{out}", cache)


@pytest.fixture(scope="module")
def scoring_image(debian_base: str, shared_cache: BlobCache, tmp_path_factory: pytest.TempPathFactory) -> Image:
    return build_scoring_image(debian_base, HOST_NAME, shared_cache, tmp_path_factory.mktemp("contract"))


def _start_image(image: Image, cache: BlobCache, script: str, env: dict[str, str], logs: Path,
                 files: list[IO[bytes]]) -> ImageRun:
    port = diff.free_port()
    log_path = logs / f"image-{script}.log"
    log = open(log_path, "wb")
    files.append(log)
    running = RunningImage(image, cache, publish={port: 5001}, stdout=log, stderr=log,
                           env={"AZUREML_ENTRY_SCRIPT": f"{SOURCE_FOLDER}/{script}.py", **env})
    running.start()
    return ImageRun(script, port, running, log_path)


def _healthy(url: str) -> bool:
    try:
        answer = requests.get(url + "/", timeout=2)
    except requests.RequestException:
        return False
    return answer.status_code == 200 and answer.text == "Healthy"


@pytest.fixture(scope="module")
def served(scoring_image: Image, shared_cache: BlobCache, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Every script in a run of the image, every compared script in the oracle too; all started at once."""
    python = diff.oracle_python()
    logs = tmp_path_factory.mktemp("contract-logs")
    files: list[IO[bytes]] = []
    runs: dict[str, ImageRun] = {}
    oracles: dict[str, diff.Server] = {}
    try:
        for script in sorted(diff.CALLS):
            oracles[script] = diff.start_server(script, False, logs, python)
        for script in sorted(set(diff.CALLS) | diff.FAILING_SCRIPTS):
            runs[script] = _start_image(scoring_image, shared_cache, script, diff.EXTRA_ENV.get(script, {}), logs, files)
        runs["body_length"] = _start_image(scoring_image, shared_cache, "body_length",
                                           {"WORKER_TIMEOUT": WORKER_TIMEOUT}, logs, files)
        # under qemu (an arm64 image on this x86 machine) every server boots several times slower
        emulated = any(run.running.emulated for run in runs.values())
        deadline = time.monotonic() + BOOT_TIMEOUT_S * (SLOWDOWN if emulated else 1)
        for oracle in oracles.values():
            diff.wait_until_up(oracle, deadline)
        pending = [run for name, run in runs.items() if name not in diff.FAILING_SCRIPTS]
        while pending and time.monotonic() < deadline:
            for run in pending:
                run.healthy = _healthy(run.url)
            pending = [run for run in pending if not run.healthy]
            time.sleep(0.3)
        yield Served(runs, oracles)
    finally:
        for run in runs.values():
            run.running.stop()
        for oracle in oracles.values():
            oracle.stop()
        for file in files:
            file.close()


def _run(served: Served, script: str) -> ImageRun:
    run = served.image[script]
    assert run.healthy, f"the image did not serve {script}:\n{run.log()[-3000:]}"
    return run


@pytest.mark.parametrize("script", sorted(diff.CALLS))
def test_same_answers_through_nginx(served: Served, script: str) -> None:
    run = _run(served, script)
    oracle = served.oracle[script]
    assert oracle.healthy, f"oracle did not boot {script}:\n{oracle.log()[-3000:]}"
    for call in diff.CALLS[script]:
        ours = call.send(run)
        assert ours.headers.get("server") == "nginx", f"{call}: not answered through nginx"
        diff.assert_same_answer(call, ours, call.send(oracle))


def test_scoring_timeout_through_nginx(served: Served) -> None:
    answer = requests.post(_run(served, "slow_run").url + "/score", data=b"3", headers=diff.TEXT,
                           timeout=diff.REQUEST_TIMEOUT_S)
    assert answer.status_code == 500
    assert answer.json() == {"message": f"Scoring timeout after {diff.SCORING_TIMEOUT_MS} ms"}
    assert answer.headers["x-ms-run-function-failed"] == "True"


@pytest.mark.parametrize("script", sorted(diff.FAILING_SCRIPTS))
def test_startup_failure_in_image(served: Served, script: str) -> None:
    """nginx answers 502 JSON; the log says why in one line; runit backs off instead of spinning."""
    run = served.image[script]
    answer = requests.get(run.url + "/", timeout=diff.REQUEST_TIMEOUT_S)
    assert answer.status_code == 502
    assert "not available" in answer.json()["message"]
    log = run.log()
    headline = {
        "init_raises": "User's init function failed: FileNotFoundError: model.pkl is not in AZUREML_MODEL_DIR",
        "import_error": "User's score script could not be loaded: Entry script",
        "missing_run": "User's score script could not be loaded: User script at",
    }[script]
    assert headline in log and "Traceback (most recent call last)" in log, log[-3000:]
    assert "restarting in" in log, log[-3000:]  # the back-off of var/runit/gunicorn/finish
    assert log.count("Worker failed to boot") <= 8, log[-3000:]


# --- the README's deliberate differences, on our side, through nginx ---


def test_difference_1_form_encoded_body_reaches_run(served: Served) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    answer = requests.post(_run(served, "undecorated_echo").url + "/score", data=b'{"a": 1}', headers=form,
                           timeout=diff.REQUEST_TIMEOUT_S)
    assert answer.json() == {"data": '{"a": 1}', "length": 8}


def test_difference_2_undecodable_json_body_is_a_client_error(served: Served) -> None:
    answer = requests.post(_run(served, "schema_standard").url + "/score", data=b'{"data": "\xff\xfe"}',
                           headers=diff.JSON, timeout=diff.REQUEST_TIMEOUT_S)
    assert answer.status_code == 400
    assert answer.json()["message"].startswith("POST body could not be decoded as JSON: ")


def test_difference_3_user_timeout_error_is_a_run_failure(served: Served) -> None:
    answer = requests.post(_run(served, "undecorated_returns").url + "/score", data=b'{"return": "timeout_error"}',
                           headers=diff.JSON, timeout=diff.REQUEST_TIMEOUT_S)
    assert answer.status_code == 500 and answer.headers["x-ms-run-function-failed"] == "True"
    assert answer.json() == {"message": "An unexpected error occurred in scoring script. Check the logs for more info."}


def test_difference_4_lowercase_content_type_replaces_the_default(served: Served) -> None:
    answer = requests.post(_run(served, "rawhttp_content_type").url + "/score", timeout=diff.REQUEST_TIMEOUT_S)
    assert answer.content == b"\x89PNG fake"
    assert answer.headers["content-type"] == "image/png"


def test_difference_5_empty_request_id_gets_a_new_one(served: Served) -> None:
    answer = requests.get(_run(served, "undecorated_echo").url + "/", headers={"x-request-id": ""},
                          timeout=diff.REQUEST_TIMEOUT_S)
    assert answer.status_code == 200
    assert re.fullmatch(r"[0-9a-f-]{36}", answer.headers["x-request-id"])


# --- nginx tuning, as the site (layers/runit-nginx/etc/nginx/sites-available/app) claims ---


def test_a_20_mb_body_is_scored(served: Served) -> None:
    answer = requests.post(_run(served, "body_length").url + "/score", data=b"x" * BIG_BODY, headers=diff.TEXT,
                           timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"length": BIG_BODY}


def test_a_body_over_the_limit_gets_413_json(served: Served) -> None:
    """nginx refuses on the Content-Length alone, before any of the body is sent."""
    connection = http.client.HTTPConnection("127.0.0.1", _run(served, "body_length").port, timeout=30)
    try:
        connection.putrequest("POST", "/score")
        connection.putheader("Content-Type", "text/plain")
        connection.putheader("Content-Length", str(BODY_LIMIT + 1))
        connection.endheaders()
        answer = connection.getresponse()
        assert answer.status == 413
        assert answer.getheader("content-type") == "application/json"
        assert json.loads(answer.read()) == {"message": "Request body exceeds the 100 MB limit of this service."}
    finally:
        connection.close()


def test_client_connections_are_kept_alive(served: Served) -> None:
    run = _run(served, "undecorated_echo")
    connection = http.client.HTTPConnection("127.0.0.1", run.port, timeout=diff.REQUEST_TIMEOUT_S)
    try:
        sockets = []
        for n in range(3):
            connection.request("POST", "/score", body=f"keep-alive {n}", headers=diff.TEXT)
            answer = connection.getresponse()
            assert answer.status == 200 and json.loads(answer.read())["data"] == f"keep-alive {n}"
            assert (answer.getheader("connection") or "keep-alive").lower() == "keep-alive"
            sockets.append(connection.sock)
        assert sockets[0] is not None and all(s is sockets[0] for s in sockets)  # one TCP connection for all three
    finally:
        connection.close()


def test_proxy_timeouts_follow_worker_timeout(served: Served) -> None:
    given = _run(served, "body_length").file_in_image(TIMEOUT_CONF, "nginx")
    default = _run(served, "undecorated_echo").file_in_image(TIMEOUT_CONF, "nginx")
    for directive in ("proxy_send_timeout", "proxy_read_timeout", "send_timeout"):
        assert f"\n{directive} {WORKER_TIMEOUT}s;" in given
        assert f"\n{directive} 300s;" in default


def test_one_log_line_per_request_without_the_body(served: Served) -> None:
    run = _run(served, "request_headers_text")
    requests.post(run.url + "/score?secret=q", data=b"secret-body", headers={**diff.TEXT, "x-request-id": "log-line-1"},
                  timeout=diff.REQUEST_TIMEOUT_S)
    deadline = time.monotonic() + 5
    while "x-request-id=log-line-1" not in run.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = [line for line in run.log().splitlines() if "x-request-id=log-line-1" in line]
    assert len(lines) == 1 and lines[0].startswith("POST /score 200 "), lines
    assert "secret" not in run.log()
