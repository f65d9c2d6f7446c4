"""The registry credentials never show up in anything ociassemble prints or writes.

Every auth flow is run through the CLI as a user runs it, with ``--debug`` and every logger
(ociassemble's, requests', urllib3's) at DEBUG: login (right and wrong password), push and pull
with credentials from stdin, the environment and the docker config, inspect, a build on a
registry base, over basic auth (TLS) and the bearer token flow. Then stdout, stderr, every file
under the test's folders (caches, layouts, archives; not the docker config, whose job is to store
them) and the registry's own log are searched for the password and its encodings.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from registry_fixtures import TEST_PASSWORD, TEST_USER, credential_forms, credential_leaks

WRONG = "wr0ng-Pa55-not-it"
#: Runs the CLI with every logger at DEBUG (on stderr), on top of ``--debug``'s tracebacks.
_VERBOSE_CLI = ("import logging, sys; logging.basicConfig(level=logging.DEBUG); "
                "from ociassemble.cli import main; sys.exit(main(sys.argv[1:]))")


def leaks(text: str, *passwords: str) -> list[str]:
    return credential_leaks(text, *passwords)


class Runs:
    """Runs the CLI and keeps everything it printed."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.output: list[str] = []

    def __call__(self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None,
                 expect: int = 0) -> subprocess.CompletedProcess[str]:
        import os

        full_env = {**os.environ, "OCIASSEMBLE_USERNAME": "", "OCIASSEMBLE_PASSWORD": "", **(env or {})}
        proc = subprocess.run([sys.executable, "-c", _VERBOSE_CLI, *args, "--debug"], input=stdin, env=full_env,
                              capture_output=True, text=True, timeout=300)
        self.output.append(f"$ ociassemble {' '.join(args)}\n{proc.stdout}\n{proc.stderr}")
        assert proc.returncode == expect, f"ociassemble {' '.join(args)}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
        return proc


def _written_files(root: Path, skip: tuple[str, ...]) -> dict[str, bytes]:
    out = {}
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink() and not any(part.startswith(skip) for part in p.relative_to(root).parts):
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def _assert_nothing_leaked(runs: Runs, tmp_path: Path, registry_logs: list[Path]) -> None:
    problems = []
    for text in runs.output:
        found = leaks(text, TEST_PASSWORD, WRONG)
        if found:
            problems.append(f"output of {text.splitlines()[0]}: {found}")
    for name, data in _written_files(tmp_path, ("docker-config",)).items():
        found = leaks(data.decode("latin-1"), TEST_PASSWORD, WRONG)
        if found:
            problems.append(f"file {name}: {found}")
    for log in registry_logs:
        found = leaks(log.read_text(errors="replace"), TEST_PASSWORD, WRONG)
        if found:
            problems.append(f"registry log {log}: {found}")
    assert not problems, "credentials leaked:\n" + "\n".join(problems)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    (d / "app.py").write_text("print('no secrets here')\n")
    return d


def test_basic_auth_flows_over_tls_never_print_or_write_the_password(tls_registry, tmp_path: Path, src: Path,
                                                                     monkeypatch) -> None:
    host, ca = tls_registry.host, str(tls_registry.ca_cert)
    cache = str(tmp_path / "cache")
    config_dir = tmp_path / "docker-config"
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
    run = Runs(tmp_path)
    common = ("--ca-cert", ca, "--cache-dir", cache)
    creds = {"OCIASSEMBLE_USERNAME": TEST_USER, "OCIASSEMBLE_PASSWORD": TEST_PASSWORD}

    run("login", host, "-u", TEST_USER, "--password-stdin", "--ca-cert", ca, stdin=WRONG + "\n", expect=2)
    assert not (config_dir / "config.json").exists()
    run("push", f"{host}/leak/app:1", "--plain", "--layer", f"{src}:/app", *common,
        env={"OCIASSEMBLE_USERNAME": TEST_USER, "OCIASSEMBLE_PASSWORD": WRONG}, expect=2)
    run("push", f"{host}/leak/app:1", "--plain", "--layer", f"{src}:/app", "--json", *common, env=creds)
    run("login", host, "-u", TEST_USER, "--password-stdin", "--ca-cert", ca, stdin=TEST_PASSWORD + "\n")
    stored = json.loads((config_dir / "config.json").read_text())
    assert host in stored["auths"]  # the docker config is where credentials belong (and only there)
    run("push", f"{host}/leak/app:2", "--plain", "--layer", f"{src}:/app", "--sbom", *common)  # docker config
    run("pull", f"{host}/leak/app:1", f"oci:{tmp_path / 'pulled'}", *common)
    run("pull", f"{host}/leak/app:1", f"docker-archive:{tmp_path / 'pulled.tar'}", "-u", TEST_USER,
        "--password-stdin", *common, stdin=TEST_PASSWORD + "\n")
    run("inspect", f"{host}/leak/app:1", "--json", *common, env=creds)
    run("inspect", f"{host}/leak/app:1", "--layer", "0", "--list", *common)
    run("build", "--plain", "--base", f"{host}/leak/app:1", "--layer", f"{src}:/extra", "-o",
        f"oci-archive:{tmp_path / 'built.tar'}", *common, env=creds)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config-empty"))
    run("pull", f"{host}/leak/app:1", f"oci:{tmp_path / 'anon'}", *common, expect=2)  # no credentials at all

    assert any("Traceback" in text for text in run.output), "--debug printed no traceback: the error paths were not run"
    _assert_nothing_leaked(run, tmp_path, [tls_registry.log])


def test_bearer_token_flows_never_print_or_write_the_password(token_registry, tmp_path: Path, src: Path,
                                                              monkeypatch) -> None:
    reg, _tokens = token_registry
    cache = str(tmp_path / "cache")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    run = Runs(tmp_path)
    creds = {"OCIASSEMBLE_USERNAME": TEST_USER, "OCIASSEMBLE_PASSWORD": TEST_PASSWORD}

    run("push", f"{reg.host}/leak/bearer:1", "--plain", "--layer", f"{src}:/app", "--cache-dir", cache,
        env={"OCIASSEMBLE_USERNAME": TEST_USER, "OCIASSEMBLE_PASSWORD": WRONG}, expect=2)
    run("login", reg.host, "-u", TEST_USER, "--password-stdin", stdin=WRONG + "\n", expect=2)
    run("push", f"{reg.host}/leak/bearer:1", "--plain", "--layer", f"{src}:/app", "--cache-dir", cache, env=creds)
    run("login", reg.host, "-u", TEST_USER, "--password-stdin", stdin=TEST_PASSWORD + "\n")
    run("pull", f"{reg.host}/leak/bearer:1", f"oci-archive:{tmp_path / 'pulled.tar'}", "--cache-dir", cache)
    run("inspect", f"{reg.host}/leak/bearer:1", "--cache-dir", cache, env=creds)

    _assert_nothing_leaked(run, tmp_path, [reg.log])


def test_the_scan_finds_each_form() -> None:
    """The search itself works: each encoding of the password is caught, by name only."""
    for label, form in credential_forms(TEST_USER, TEST_PASSWORD).items():
        found = leaks(f"log line ... {form} ...", TEST_PASSWORD)
        assert found and all(TEST_PASSWORD not in f for f in found), label
    header = "Authorization: Basic " + base64.b64encode(f"{TEST_USER}:{TEST_PASSWORD}".encode()).decode()
    assert "base64 of user:password (the test credentials)" in leaks(header, TEST_PASSWORD)
    assert leaks("nothing to see", TEST_PASSWORD) == []
