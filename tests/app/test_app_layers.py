"""The in-image service files: runit scripts (run for real), the nginx site (run for real in front of gunicorn).

Only 127.0.0.1 is bound or contacted.  nginx tests are skipped where the
nginx binary is missing (Debian: apt-get install nginx-light).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from app_layer_paths import APP_REQUIREMENTS, APP_ROOT_IN_LAYER, RUNIT_LAYER, SCRIPTS_DIR

from ociassemble.resources import layer_symlinks

requests = pytest.importorskip("requests")

SERVICE_SCRIPTS = ["var/runit/gunicorn/run", "var/runit/gunicorn/finish", "var/runit/nginx/run"]
SITE = RUNIT_LAYER / "etc/nginx/sites-available/app"
TIMEOUT_CONF = "/run/azureml-nginx/timeouts.conf"  # written at start by var/runit/nginx/run
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("relative", SERVICE_SCRIPTS)
def test_service_scripts_are_executable_sh(relative: str) -> None:
    path = RUNIT_LAYER / relative
    assert path.read_text().startswith("#!/bin/sh\n")
    assert path.stat().st_mode & stat.S_IXUSR
    subprocess.run(["sh", "-n", str(path)], check=True)
    if relative.endswith("/run"):
        assert "exec 2>&1" in path.read_text()


def test_site_is_enabled_and_default_site_whited_out() -> None:
    enabled = RUNIT_LAYER / "etc/nginx/sites-enabled"
    assert ("etc/nginx/sites-enabled/app", "/etc/nginx/sites-available/app") in layer_symlinks("runit-nginx")
    whiteout = enabled / ".wh.default"
    assert whiteout.is_file() and not whiteout.is_symlink() and whiteout.stat().st_size == 0
    text = SITE.read_text()
    for directive in ("listen 5001", "server 127.0.0.1:9090", "client_max_body_size 100m", f"include {TIMEOUT_CONF};"):
        assert directive in text
    # The included file is written by the nginx run script from WORKER_TIMEOUT
    # (checked in the running image by tests/e2e/test_scoring_contract_in_image.py).
    run_script = (RUNIT_LAYER / "var/runit/nginx/run").read_text()
    assert f"TIMEOUT_CONF={TIMEOUT_CONF}" in run_script and "${WORKER_TIMEOUT:-300}" in run_script


def test_nginx_logs_go_to_the_container_output() -> None:
    links = dict(layer_symlinks("runit-nginx"))
    assert links["var/log/nginx/access.log"] == "/dev/stdout"
    assert links["var/log/nginx/error.log"] == "/dev/stderr"


def test_app_requirements_are_exact_pins() -> None:
    pins = {}
    for line in APP_REQUIREMENTS.read_text().splitlines():
        line = line.split("#")[0].split(";")[0].strip()  # a pin may hold for some Pythons only
        if line:
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line}"
            pins[name.lower()] = version
    assert {"flask", "gunicorn", "inference-schema"} <= set(pins)


def _finish(state_dir: Path, bin_dir: Path, started_ago: int, code: str = "3") -> str:
    (state_dir / "azureml-gunicorn.started").write_text(f"{int(time.time()) - started_ago}\n")
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "AZUREML_RUNIT_STATE_DIR": str(state_dir)}
    done = subprocess.run(
        ["sh", str(RUNIT_LAYER / "var/runit/gunicorn/finish"), code, "0"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout
    return done.stdout


def test_finish_backs_off_then_resets(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    slept = tmp_path / "slept"
    fake_sleep = bin_dir / "sleep"
    fake_sleep.write_text(f'#!/bin/sh\necho "$1" >> {slept}\n')
    fake_sleep.chmod(0o755)

    outputs = [_finish(tmp_path, bin_dir, started_ago=1) for _ in range(8)]
    assert slept.read_text().split() == ["1", "2", "4", "8", "16", "30", "30"]
    assert "restarting in 30 s" in outputs[-1] and "code 3" in outputs[-1]

    _finish(tmp_path, bin_dir, started_ago=600)  # served for 10 minutes: not a boot failure
    assert (tmp_path / "azureml-gunicorn.backoff").read_text().strip() == "1"
    assert slept.read_text().split()[-1] == "30"  # and no sleep this time


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _copy_app_root(tmp_path: Path, script: str) -> Path:
    root = tmp_path / "app"
    shutil.copytree(APP_ROOT_IN_LAYER, root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "src").mkdir()
    shutil.copy(SCRIPTS_DIR / f"{script}.py", root / "src" / "score.py")
    return root


def _app_env(root: Path, state_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZUREML_", "AML_"))}
    # AZUREML_RUN_AS=root: on this host the test's python3 lives where www-data cannot read
    env.update(AML_APP_ROOT=str(root), AZUREML_ENTRY_SCRIPT="src/score.py", AZUREML_RUNIT_STATE_DIR=str(state_dir),
               AZUREML_RUN_AS="root")
    return env


def _python3_on_path(bin_dir: Path) -> str:
    """A PATH whose ``python3`` is this test run's interpreter (the venv with gunicorn and flask).

    The run script calls ``python3`` as the image does (its deps are on PYTHONPATH there); here
    the first python3 on the caller's PATH may be any interpreter (a fresh machine's has no
    gunicorn), so the test puts its own first.  A wrapper, not a symlink: a symlinked venv
    interpreter outside the venv's bin/ does not find the venv's packages.
    """
    bin_dir.mkdir(parents=True, exist_ok=True)
    wrapper = bin_dir / "python3"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}"


def test_gunicorn_run_script_reports_failed_init(tmp_path: Path) -> None:
    """The real run script, with a score.py whose init() raises: one headline, a traceback, gunicorn exit 3."""
    if not _port_free(9090):
        pytest.skip("127.0.0.1:9090 (gunicorn_conf.py's fixed port) is in use")
    root = _copy_app_root(tmp_path, "init_raises")
    done = subprocess.run(
        ["sh", str(RUNIT_LAYER / "var/runit/gunicorn/run")],
        env={**_app_env(root, tmp_path), "PATH": _python3_on_path(tmp_path / "bin")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stdout
    lines = done.stdout.splitlines()
    headline = [line for line in lines if "User's init function failed: FileNotFoundError" in line]
    assert len(headline) == 1
    assert "Traceback (most recent call last)" in done.stdout
    assert "Worker failed to boot" in done.stdout
    assert done.stderr == ""  # joined to stdout by the run script


@pytest.fixture
def gunicorn_echo(tmp_path: Path) -> Iterator[int]:
    """Our app (undecorated_echo) under gunicorn on a free loopback port; yields the port."""
    root = _copy_app_root(tmp_path, "undecorated_echo")
    port = _free_port()
    log = open(tmp_path / "gunicorn.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn_conf.py", "-b", f"127.0.0.1:{port}", "wsgi:app"],
        cwd=root,
        env=_app_env(root, tmp_path),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                requests.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.2)
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
        log.close()


def test_gunicorn_access_log_line(gunicorn_echo: int, tmp_path: Path) -> None:
    requests.post(f"http://127.0.0.1:{gunicorn_echo}/score?secret=1", data=b"body-text", timeout=5)
    time.sleep(0.3)
    log = (tmp_path / "gunicorn.log").read_text()
    line = next(line for line in log.splitlines() if line.startswith("POST /score"))
    assert line.startswith("POST /score 200 ") and "ms x-request-id=" in line
    assert "body-text" not in log and "secret" not in log


@pytest.fixture
def nginx_front(tmp_path: Path, gunicorn_echo: int) -> Iterator[tuple[int, int]]:
    """nginx with our site, its ports rewritten to free ones: (port to our app, port to a dead upstream)."""
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    site = SITE.read_text()
    ports = (_free_port(), _free_port())
    sites = []
    for index, (listen, upstream) in enumerate(zip(ports, (gunicorn_echo, _free_port()), strict=True)):
        sites.append(
            site.replace("listen 5001 default_server", f"listen 127.0.0.1:{listen}")
            .replace("127.0.0.1:9090", f"127.0.0.1:{upstream}")
            .replace("azureml_gunicorn", f"azureml_gunicorn_{index}")
            .replace(f"include {TIMEOUT_CONF};", "proxy_read_timeout 300s;")
        )
    (tmp_path / "sites.conf").write_text("\n".join(sites))
    temp = tmp_path / "nginx-temp"
    temp.mkdir()
    (tmp_path / "nginx.conf").write_text(
        f"""
        user root;
        daemon off;
        pid {tmp_path}/nginx.pid;
        error_log stderr;
        events {{}}
        http {{
            client_body_temp_path {temp}/body;
            proxy_temp_path {temp}/proxy;
            fastcgi_temp_path {temp}/fastcgi;
            uwsgi_temp_path {temp}/uwsgi;
            scgi_temp_path {temp}/scgi;
            include {tmp_path}/sites.conf;
        }}
        """
    )
    command = [NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")]
    check = subprocess.run([*command, "-t"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _port_free(ports[0]):
            time.sleep(0.1)
        yield ports
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


def test_nginx_proxies_the_contract(nginx_front: tuple[int, int]) -> None:
    live, dead = nginx_front
    base = f"http://127.0.0.1:{live}"
    health = requests.get(base + "/", headers={"x-request-id": "through-nginx"}, timeout=5)
    assert (health.status_code, health.text, health.headers["x-request-id"]) == (200, "Healthy", "through-nginx")
    big = "x" * (5 * 1024 * 1024)  # above nginx's default 1 MB limit
    scored = requests.post(base + "/score", data=big, headers={"Content-Type": "text/plain"}, timeout=30)
    assert scored.status_code == 200 and scored.json()["length"] == len(big)
    assert requests.put(base + "/score", timeout=5).status_code == 405

    down = requests.get(f"http://127.0.0.1:{dead}/", timeout=10)
    assert down.status_code == 502
    assert "not available" in down.json()["message"]
