"""Which runs wait for the scoring server's health probe, on which port, and for how long (ociassemble.run.health)."""

from __future__ import annotations

import http.server
import threading
from typing import Iterator

import pytest

from ociassemble.run.health import health_port, probe, ready_timeout

SCORING = {"AML_APP_ROOT": "/var/azureml-app"}


def test_only_a_scoring_image_with_its_port_published_is_probed() -> None:
    assert health_port(SCORING, {8080: 5001}) == 8080
    assert health_port(SCORING, {9000: 9090, 8080: 5001}) == 8080  # nginx first
    assert health_port(SCORING, {9000: 9090}) == 9000
    assert health_port(SCORING, {8081: 5001, 8080: 5001}) == 8080
    assert health_port(SCORING, {8080: 8000}) is None
    assert health_port(SCORING, {}) is None
    assert health_port({"PATH": "/bin"}, {8080: 5001}) is None


@pytest.mark.parametrize(("worker_timeout", "expected"), [(None, 120.0), ("300", 300.0), ("60", 120.0),
                                                          ("abc", 120.0), ("0", 120.0), (" 900 ", 900.0)])
def test_ready_timeout_is_the_images_worker_timeout_when_longer(worker_timeout: str | None, expected: float) -> None:
    env = dict(SCORING) if worker_timeout is None else {**SCORING, "WORKER_TIMEOUT": worker_timeout}
    assert ready_timeout(env, 120.0) == expected


@pytest.fixture
def answers() -> Iterator[tuple[int, dict[str, object]]]:
    """A loopback server whose GET / answers ``state["status"]``, ``state["body"]``."""
    state: dict[str, object] = {"status": 502, "body": b'{"message": "starting"}'}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = state["body"]
            assert isinstance(body, bytes)
            self.send_response(int(state["status"]))  # type: ignore[arg-type]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], state
    finally:
        server.shutdown()
        server.server_close()


def test_probe_says_what_it_got(answers: tuple[int, dict[str, object]]) -> None:
    port, state = answers
    assert probe(port) == "it answers 502"
    state.update(status=200, body=b"Not yet")
    assert probe(port) == "it answers 200"
    state.update(status=200, body=b"Healthy")
    assert probe(port) == ""


def test_probe_of_a_closed_port_is_no_answer() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert probe(port) == "no answer"
