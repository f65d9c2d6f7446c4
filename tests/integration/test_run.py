"""Running an image built by the engine: namespaces, port publishing, clean stop, fresh runs.

Uses the real Debian base (python3, nginx-light, runit): the suite's ``debian_base``
(``make-base``'s default, from .debs). Needs root and bwrap.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Callable

import pytest

from ociassemble.errors import RunError
from ociassemble.image.assemble import Image, ImageBuilder
from ociassemble.image.cache import BlobCache
from ociassemble.image.layer import LayerSource, build_layer
from ociassemble.inputs.base import load_base
from ociassemble.run.container import RunningImage, run_image
from ociassemble.run.idmap import host_idmap
from ociassemble.run.unpack import rootfs_path

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="runs as root (tests/e2e/test_run_rootless.py runs as another user)"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed"),
]

SERVER = ("python3", "-m", "http.server", "5001", "--bind", "127.0.0.1", "-d", "/srv")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return resp.read().decode()


@pytest.fixture(scope="module")
def run_cache(tmp_path_factory: pytest.TempPathFactory) -> BlobCache:
    # one folder for the session: the modules importing these fixtures (test_run_isolation)
    # reuse the base's unpacked rootfs
    return BlobCache(tmp_path_factory.getbasetemp() / "run-cache")


@pytest.fixture(scope="module")
def make_image(run_cache: BlobCache, debian_base: str, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Image]:
    """``make_image(cmd, **config)``: the Debian base plus one /srv layer, with that Cmd.

    Every image shares the same layers, so the rootfs is unpacked once for the module.
    """
    base = load_base(debian_base, run_cache)
    srv = tmp_path_factory.mktemp("srv")
    (srv / "hello.txt").write_text("hello from the image\n")
    layer = build_layer(run_cache, [LayerSource(srv, "/srv")], epoch=0)

    def make(cmd: tuple[str, ...], **config: object) -> Image:
        b = ImageBuilder(run_cache, base)
        b.add_layer(layer, "COPY srv /srv")
        b.config = replace(b.config, cmd=cmd, **config)  # type: ignore[arg-type]
        return b.build()

    return make


def _alive(pid: int) -> bool:
    """Exists and is not a zombie (an orphaned zombie waits for the host's init to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat.rpartition(b")")[2].split()[0] not in (b"Z", b"X")


def assert_gone(pids: list[int]) -> None:
    alive = [p for p in pids if _alive(p)]
    assert not alive, f"processes left after stop: {alive}"


def test_serves_a_published_port_and_leaves_no_process(run_cache: BlobCache, make_image: Callable[..., Image]) -> None:
    # a background child too: stopping must end every process of the image, not just the command
    img = make_image(("sh", "-c", "sleep 1000 & exec " + " ".join(SERVER)))
    port = free_port()
    with RunningImage(img, run_cache, publish={port: 5001}) as running:
        running.wait_until_ready(60)
        assert get(port, "/hello.txt") == "hello from the image\n"
        assert get(port, "/hello.txt") == "hello from the image\n"  # a second connection
        pids = running.pids()
        assert running.pid in pids and len(pids) >= 3  # bwrap's init, sleep, python
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 8, "python's http.server stops on SIGTERM; no SIGKILL grace should be needed"
    assert_gone(pids)
    assert not any((run_cache.root / "run").glob("[0-9]*"))
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)


def test_runs_start_clean_with_env_and_workdir(run_cache: BlobCache, make_image: Callable[..., Image]) -> None:
    script = ('echo run >> /var/lib/marker && cp /var/lib/marker /srv/marker.txt && '
              'echo "$GREETING $FROM_IMAGE $(pwd) $(hostname)" > /srv/env.txt && '
              'touch /var/lib/nginx/writable /var/log/nginx/writable && exec ' + " ".join(SERVER))
    img = make_image(("sh", "-c", script), env=("FROM_IMAGE=image", "GREETING=image-greeting", "PATH=/usr/bin:/bin"),
                     working_dir="/opt/work")
    for _ in range(2):
        port = free_port()
        with RunningImage(img, run_cache, publish={port: 5001}, env={"GREETING": "hi"}) as running:
            running.wait_until_ready(60)
            assert get(port, "/marker.txt") == "run\n"  # the previous run's write is gone
            assert get(port, "/env.txt") == f"hi image /opt/work {img.digest[7:19]}\n"
    rootfs = rootfs_path(run_cache, img, host_idmap())
    assert not (rootfs / "var" / "lib" / "marker").exists()
    assert not (rootfs / "srv" / "marker.txt").exists()
    assert not (rootfs / "opt" / "work").exists()


def test_port_in_use_is_a_run_error(run_cache: BlobCache, make_image: Callable[..., Image]) -> None:
    img = make_image(SERVER)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        running = RunningImage(img, run_cache, publish={port: 5001})
        with pytest.raises(RunError, match=f"127.0.0.1:{port} is already in use"):
            running.start()
    assert running.pid is None and running.returncode is None


def test_command_that_exits_early_is_reported(run_cache: BlobCache, make_image: Callable[..., Image]) -> None:
    img = make_image(("sh", "-c", "echo failing on purpose >&2; exit 3"))
    running = RunningImage(img, run_cache, publish={free_port(): 5001}, stderr=subprocess.DEVNULL)
    with running, pytest.raises(RunError, match="exited with status 3 before port 5001 answered"):
        running.wait_until_ready(30)


def test_stop_kills_a_command_that_ignores_sigterm(run_cache: BlobCache, make_image: Callable[..., Image]) -> None:
    code = ("import signal, http.server; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "http.server.test(HandlerClass=http.server.SimpleHTTPRequestHandler, port=5001, bind='127.0.0.1')")
    img = make_image(("python3", "-c", code))
    port = free_port()
    running = RunningImage(img, run_cache, publish={port: 5001}, stop_timeout=1.0, stdout=subprocess.DEVNULL)
    with running:
        running.wait_until_ready(60)
        pids = running.pids()
        t0 = time.monotonic()
    assert 0.9 < time.monotonic() - t0 < 8
    assert running.returncode is not None
    assert_gone(pids)


def test_run_image_stops_on_sigterm(run_cache: BlobCache, make_image: Callable[..., Image]) -> None:
    img = make_image(SERVER)
    port = free_port()
    seen: dict[str, object] = {}

    def on_ready(running: RunningImage) -> None:
        seen["body"] = get(port, "/hello.txt")
        seen["pids"] = running.pids()
        os.kill(os.getpid(), signal.SIGTERM)  # as `kill <ociassemble run's pid>` would

    previous = signal.getsignal(signal.SIGTERM)
    status = run_image(img, run_cache, publish={port: 5001}, on_ready=on_ready, ready_timeout=60)
    assert status == 128 + signal.SIGTERM
    assert seen["body"] == "hello from the image\n"
    assert_gone(seen["pids"])  # type: ignore[arg-type]
    assert signal.getsignal(signal.SIGTERM) == previous


def test_no_command_is_a_run_error(run_cache: BlobCache, make_image: Callable[..., Image]) -> None:
    img = make_image(None, entrypoint=None)
    with pytest.raises(RunError, match="no Entrypoint or Cmd"):
        RunningImage(img, run_cache).start()


def test_copy_fallback_without_overlayfs(run_cache: BlobCache, make_image: Callable[..., Image],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import ociassemble.run.rootfs as run_module

    monkeypatch.setattr(run_module, "_overlay_ok", False)
    img = make_image(("sh", "-c", "echo run >> /var/lib/marker && cp /var/lib/marker /srv/m.txt && exec " + " ".join(SERVER)))
    for _ in range(2):
        port = free_port()
        with RunningImage(img, run_cache, publish={port: 5001}) as running:
            running.wait_until_ready(60)
            assert get(port, "/m.txt") == "run\n"
    assert not (rootfs_path(run_cache, img, host_idmap()) / "var" / "lib" / "marker").exists()
    assert not any((run_cache.root / "run").glob("[0-9]*"))


def test_host_requirements_are_run_errors(run_cache: BlobCache, make_image: Callable[..., Image],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    img = make_image(SERVER)
    with monkeypatch.context() as m:
        m.setattr(shutil, "which", lambda name: None)
        with pytest.raises(RunError, match="needs bubblewrap"):
            RunningImage(img, run_cache).start()
    with pytest.raises(RunError, match="ports are 1 to 65535"):
        RunningImage(img, run_cache, publish={0: 5001})


# --- readiness of a scoring image: GET / answers Healthy ---

#: Answers GET / with 502 until STARTUP_DELAY seconds have passed, then 200 "Healthy": nginx in front of a
#: gunicorn still running init() looks like this.
SLOW_SCORING_SERVER = ("python3", "-c", (
    "import http.server, os, time\n"
    "t0 = time.monotonic(); delay = float(os.environ['STARTUP_DELAY'])\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        ready = time.monotonic() - t0 > delay\n"
    "        body = b'Healthy' if ready else b'{\"message\": \"starting\"}'\n"
    "        self.send_response(200 if ready else 502)\n"
    "        self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers()\n"
    "        self.wfile.write(body)\n"
    "    def log_message(self, *args):\n"
    "        pass\n"
    "http.server.HTTPServer(('127.0.0.1', 5001), H).serve_forever()\n"
))


def _run_until_ready(img: Image, run_cache: BlobCache, ready_timeout: float) -> tuple[list[str], list[tuple[float, str]], float]:
    """run_image on ``img``; its log lines, what each on_ready call saw (time, GET /), and when it started."""
    port = free_port()
    lines: list[str] = []
    seen: list[tuple[float, str]] = []

    def on_ready(running: RunningImage) -> None:
        try:
            body = get(port, "/")
        except urllib.error.HTTPError as exc:
            body = f"HTTP {exc.code}"
        seen.append((time.monotonic(), body))
        os.kill(os.getpid(), signal.SIGTERM)

    t0 = time.monotonic()
    status = run_image(img, run_cache, publish={port: 5001}, on_ready=on_ready, ready_timeout=ready_timeout,
                       log=lines.append)
    assert status == 128 + signal.SIGTERM
    return lines, seen, t0


def test_a_scoring_image_is_ready_when_it_answers_healthy(run_cache: BlobCache, make_image: Callable[..., Image]) -> None:
    """Not when its port accepts connections: run reports ready once, when GET / says Healthy, with progress before."""
    img = make_image(SLOW_SCORING_SERVER, env=("AML_APP_ROOT=/var/azureml-app", "STARTUP_DELAY=3", "PATH=/usr/bin:/bin"))
    lines, seen, t0 = _run_until_ready(img, run_cache, 60)
    assert len(seen) == 1 and seen[0][1] == "Healthy"
    assert seen[0][0] - t0 >= 3
    progress = [line for line in lines if line.startswith("waiting for the scoring server")]
    assert progress and "(it answers 502;" in progress[0], lines
    assert not any("still starting" in line for line in lines)


def test_a_scoring_image_not_healthy_in_time_is_still_starting(run_cache: BlobCache,
                                                               make_image: Callable[..., Image]) -> None:
    """Past the timeout run says it is still starting, keeps it running, and reports ready once it answers."""
    img = make_image(SLOW_SCORING_SERVER, env=("AML_APP_ROOT=/var/azureml-app", "STARTUP_DELAY=4", "PATH=/usr/bin:/bin"))
    lines, seen, t0 = _run_until_ready(img, run_cache, 1.5)
    still = [line for line in lines if "still starting" in line]
    assert len(still) == 1 and "within 1.5 s (it answers 502)" in still[0], lines
    assert "it keeps running" in still[0]
    assert len(seen) == 1 and seen[0][1] == "Healthy" and seen[0][0] - t0 >= 4


def test_other_images_are_ready_when_their_ports_answer(run_cache: BlobCache,
                                                        make_image: Callable[..., Image]) -> None:
    """Without AML_APP_ROOT in its Env, the same never-Healthy server is ready as soon as it listens."""
    img = make_image(SLOW_SCORING_SERVER, env=("STARTUP_DELAY=1000", "PATH=/usr/bin:/bin"))
    lines, seen, _ = _run_until_ready(img, run_cache, 60)
    assert seen == [(seen[0][0], "HTTP 502")]
    assert not any("scoring server" in line for line in lines)


def test_the_ready_line_says_how_to_reach_an_unpublished_port(run_cache: BlobCache, make_image: Callable[..., Image],
                                                               tmp_path: Path) -> None:
    """Run without --publish: the image listens where nothing reaches it, and the ready line says
    which flag would (it said only 'Ctrl-C stops it')."""
    import sys

    from ociassemble.transport.layout import write_layout

    img = make_image(("sleep", "1000"), exposed_ports=("5001/tcp",))
    write_layout(img, run_cache, tmp_path / "layout", "v1")
    proc = subprocess.Popen([sys.executable, "-m", "ociassemble.cli", "run", f"oci:{tmp_path / 'layout'}:v1",
                             "--cache-dir", str(run_cache.root)], stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "; its port 5001/tcp reaches nothing here: add --publish 8080:5001; Ctrl-C stops it" in line, line
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
