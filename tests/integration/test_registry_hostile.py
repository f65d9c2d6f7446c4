"""A registry (or what stands between us and it) as an attacker: each case of issue 23, run against
the real client through the CLI or the library, with scripted registries on 127.0.0.1
(``hostile_registry``) and the real docker-registry where one fits.

- an upload ``Location`` or a redirect to another origin (another port) receives no credentials,
  Basic or bearer; HTTPS never continues over plain HTTP;
- a ``--base`` or ``--cache-from`` registry never sees the push target's explicit password (it
  gets its own, from the docker config);
- 300 MB error (and token) answers keep the process under 100 MB of RSS;
- a manifest of 100,000 nested arrays is one error line, exit 1;
- terminal control bytes and echoed credentials in a registry's text never reach stdout/stderr.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hostile_registry import MANIFEST_TYPE, FakeRegistry, Handler, digest, tiny_image
from registry_fixtures import TEST_PASSWORD, TEST_USER, FaultProxy, Registry, credential_leaks, make_cert

from ociassemble.errors import RegistryError
from ociassemble.image.assemble import Image
from ociassemble.image.cache import BlobCache
from ociassemble.registry import FAST_RETRY, RegistryOptions, pull_image, push_image

BASIC = "Basic " + base64.b64encode(f"{TEST_USER}:{TEST_PASSWORD}".encode()).decode()
TOKEN = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSIsIm4iOjQyfQ.c2lnbmF0dXJlLTEyMzQ"
#: Runs the CLI with every logger at DEBUG on stderr (as test_credentials_never_leak does).
VERBOSE_CLI = ("import logging, sys; logging.basicConfig(level=logging.DEBUG); "
               "from ociassemble.cli import main; sys.exit(main(sys.argv[1:]))")
#: Runs a command and prints its exit code, output and peak RSS (KiB) as JSON: this wrapper's only
#: child is the command, so RUSAGE_CHILDREN's maximum is the command's own peak.
PEAK_RSS = ("import json, resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, "
            "text=True, timeout=300); print(json.dumps({'rc': p.returncode, 'out': p.stdout, 'err': p.stderr, "
            "'maxrss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))")


@pytest.fixture
def servers() -> Iterator[Callable[..., FakeRegistry]]:
    started: list[FakeRegistry] = []

    def start(answer: Callable[[Handler, bytes], None], cert: tuple[Path, Path] | None = None) -> FakeRegistry:
        started.append(FakeRegistry(answer, cert))
        return started[-1]

    yield start
    for s in started:
        s.stop()


def _authorized(h: Handler, scheme: str, realm: str) -> bool:
    """The registry's own auth: Basic alice, or a bearer token from its /token."""
    got = h.headers.get("Authorization")
    if scheme == "basic" and got == BASIC or scheme == "bearer" and got == f"Bearer {TOKEN}":
        return True
    challenge = 'Basic realm="hostile"' if scheme == "basic" else f'Bearer realm="{realm}/token",service="hostile"'
    h.reply(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"log in"}]}', {"WWW-Authenticate": challenge})
    return False


def _token(h: Handler) -> bool:
    if not h.path.startswith("/token"):
        return False
    if h.headers.get("Authorization") != BASIC:
        h.reply(401)
    else:
        h.reply(200, json.dumps({"token": TOKEN, "expires_in": 300}).encode(), {"Content-Type": "application/json"})
    return True


def _leaks_in(seen: object) -> list[str]:
    return credential_leaks(repr(seen)) + (["the bearer token"] if TOKEN in repr(seen) else [])


# -- credentials stay with their origin ------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["basic", "bearer"])
def test_an_upload_location_on_another_origin_gets_no_credentials(servers, cache: BlobCache,
                                                                  make_image: Callable[..., Image], scheme: str) -> None:
    """The registry sends every upload to another port (as one fronted by a storage service
    does): the blobs go there, but the Authorization header does not."""
    storage = servers(lambda h, body: h.reply(202 if h.command == "PATCH" else 201,
                                              headers={"Location": h.path.split("?")[0]}))

    def registry(h: Handler, body: bytes) -> None:
        if _token(h) or not _authorized(h, scheme, reg.url):
            return
        if h.command == "HEAD":
            h.reply(404)
        elif h.command == "POST" and "/blobs/uploads/" in h.path:
            h.reply(202, headers={"Location": f"{storage.url}/upload/{len(reg.seen)}"})
        elif h.command == "PUT" and "/manifests/" in h.path:
            h.reply(201, headers={"Docker-Content-Digest": digest(body)})
        else:
            h.reply(200)

    reg = servers(registry)
    image = make_image(cache, {"model.bin": os.urandom(200_000)})
    options = RegistryOptions(username=TEST_USER, password=TEST_PASSWORD, retry=FAST_RETRY,
                              monolithic_max=64 << 10, chunk_size=64 << 10)
    push_image(image, cache, [f"{reg.host}/team/app:1"], options=options)
    assert {s.method for s in storage.seen} == {"PATCH", "PUT"}, storage.seen  # the blobs went there
    assert storage.authorizations() == [] and _leaks_in(storage.seen) == []
    assert reg.authorizations(), "the registry itself got no credentials: nothing was tested"


def test_a_redirect_to_another_origin_gets_no_credentials_and_one_to_the_same_origin_keeps_them(
        servers, cache: BlobCache) -> None:
    manifest, config = tiny_image()
    cdn = servers(lambda h, body: h.reply(200, config))

    def registry(h: Handler, body: bytes) -> None:
        if not _authorized(h, "basic", reg.url):
            return
        if h.path.startswith("/v2/team/app/manifests/"):
            h.reply(307, headers={"Location": "/elsewhere/manifest"})  # the same origin: credentials go along
        elif h.path == "/elsewhere/manifest":
            h.reply(200, manifest, {"Content-Type": MANIFEST_TYPE})
        elif "/blobs/" in h.path:
            h.reply(307, headers={"Location": f"{cdn.url}/blob?sig=abc"})  # another port: they do not
        else:
            h.reply(200)

    reg = servers(registry)
    image = pull_image(f"{reg.host}/team/app:1", cache,
                       options=RegistryOptions(username=TEST_USER, password=TEST_PASSWORD, retry=FAST_RETRY))
    assert image.manifest.config.digest == digest(config)
    assert [s.path for s in cdn.seen] == ["/blob?sig=abc"]
    assert cdn.authorizations() == [] and _leaks_in(cdn.seen) == []
    assert [s.headers.get("authorization") for s in reg.seen if s.path == "/elsewhere/manifest"] == [BASIC]


@pytest.mark.parametrize("how", ["upload Location", "redirect"])
def test_https_never_continues_over_plain_http(servers, cache: BlobCache, make_image: Callable[..., Image],
                                               tmp_path: Path, how: str) -> None:
    cert = make_cert(tmp_path, "127.0.0.1")
    plain = servers(lambda h, body: h.reply(201))

    def registry(h: Handler, body: bytes) -> None:
        if not _authorized(h, "basic", reg.url):
            return
        if h.command == "HEAD":
            h.reply(404)
        elif h.command == "POST":
            if how == "upload Location":
                h.reply(202, headers={"Location": f"{plain.url}/upload/1"})
            else:
                h.reply(202, headers={"Location": "/v2/team/app/blobs/uploads/1"})
        elif h.command == "PUT" and "/blobs/uploads/" in h.path:
            h.reply(307, headers={"Location": f"{plain.url}/upload/1?digest=x"})
        else:
            h.reply(201)

    reg = servers(registry, cert)
    image = make_image(cache, {"a": b"a"})
    options = RegistryOptions(username=TEST_USER, password=TEST_PASSWORD, retry=FAST_RETRY, ca_cert=cert[0])
    with pytest.raises(RegistryError, match="refusing to leave HTTPS") as info:
        push_image(image, cache, [f"{reg.host}/team/app:1"], options=options)
    assert "\n" not in str(info.value)
    assert plain.seen == [], "a request went out over plain HTTP"


class _BobOnly(FaultProxy):
    """A registry (the real one behind a proxy) that wants bob's login and records every Authorization."""

    def __init__(self, upstream_port: int, bob: str) -> None:
        super().__init__(upstream_port)
        self.bob = bob
        self.authorizations: list[str] = []

    def _relay(self, h) -> None:  # type: ignore[no-untyped-def]
        got = h.headers.get("Authorization")
        if got:
            self.authorizations.append(got)
        if got != self.bob:
            h.send_response(401)
            h.send_header("WWW-Authenticate", 'Basic realm="bob"')
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        super()._relay(h)


def test_a_base_or_cache_registry_never_sees_the_push_targets_explicit_password(
        tls_registry: Registry, plain_registry: Registry, pushed: tuple[Image, str], tmp_path: Path) -> None:
    """push to the TLS registry as alice (--password-stdin) on a --base, with --cache-from, both on a
    registry that wants bob's login (from the docker config): bob's goes there, alice's never does."""
    from tests.conftest import run_cli

    _image, ref = pushed
    bob = "Basic " + base64.b64encode(b"bob:b0b-Pa55-word").decode()
    proxy = _BobOnly(plain_registry.port, bob)
    config = tmp_path / "dc"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"auths": {proxy.host: {"auth": bob.split()[1]}}}))
    src = tmp_path / "src"
    src.mkdir()
    (src / "app.py").write_text("print('hi')\n")
    base = ref.replace(plain_registry.host, proxy.host)
    try:
        proc = run_cli("push", f"{tls_registry.host}/scoped/app:1", "--plain", "--base", base, "--layer",
                       f"{src}:/extra", "--cache-from", f"{proxy.host}/scoped/cache", "-u", TEST_USER,
                       "--password-stdin", "--ca-cert", str(tls_registry.ca_cert), "--cache-dir", str(tmp_path / "c"),
                       env={"DOCKER_CONFIG": str(config), "OCIASSEMBLE_USERNAME": "", "OCIASSEMBLE_PASSWORD": ""},
                       input=TEST_PASSWORD + "\n")
    finally:
        proxy.stop()
    assert proc.returncode == 0, proc.stderr
    assert proxy.authorizations and set(proxy.authorizations) == {bob}, "the base registry got other credentials"
    assert credential_leaks(repr(proxy.authorizations)) == []
    assert any("/scoped/cache/" in p for _m, p, _s in proxy.log), "the cache repository was never read"


def test_explicit_credentials_for_two_push_registries_are_refused(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    proc = run_cli("push", "--from", f"oci:{tmp_path}", "127.0.0.1:1/a/b:1", "127.0.0.1:2/a/b:1", "-u", TEST_USER,
                   "--password-stdin", input=TEST_PASSWORD + "\n")
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "are for one registry" in proc.stderr, proc.stderr


# -- bounded answers --------------------------------------------------------------------------------

BIG = 300 << 20
MAX_RSS_MB = 100


def _peak(*args: str, env: dict[str, str] | None = None) -> dict:
    full = {**os.environ, "OCIASSEMBLE_USERNAME": "", "OCIASSEMBLE_PASSWORD": "", **(env or {})}
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS, sys.executable, "-m", "ociassemble.cli", *args],
                          capture_output=True, text=True, env=full, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("case", ["pull: manifest 404", "pull: token answer", "push: POST 400 (chunked)"])
def test_a_300_mb_answer_keeps_the_process_under_100_mb(servers, tmp_path: Path, case: str) -> None:
    def registry(h: Handler, body: bytes) -> None:
        if case == "pull: token answer":
            if h.path.startswith("/token"):
                h.reply_huge(200, BIG)
            else:
                h.reply(401, headers={"WWW-Authenticate": f'Bearer realm="{reg.url}/token",service="s"'})
        elif h.path == "/v2/":
            h.reply(200)
        elif h.command == "HEAD":
            h.reply(404)
        elif "/manifests/" in h.path or h.command == "POST":
            h.reply_huge(400 if h.command == "POST" else 404, BIG, chunked=h.command == "POST")
        else:
            h.reply(400)

    reg = servers(registry)
    if case.startswith("pull"):
        got = _peak("pull", f"{reg.host}/team/app:1", f"oci:{tmp_path / 'out'}", "--cache-dir", str(tmp_path / "c"))
    else:
        src = tmp_path / "src"
        src.mkdir()
        (src / "a.txt").write_text("a\n")
        got = _peak("push", f"{reg.host}/team/app:1", "--plain", "--layer", f"{src}:/a", "--cache-dir",
                    str(tmp_path / "c"), "-q")
    assert got["rc"] == 2, got["err"]
    assert got["err"].count("\n") == 1 and "Traceback" not in got["err"], got["err"]
    print(f"{case}: peak RSS {got['maxrss_kb'] / 1024:.0f} MB")  # shown with -s (main: 638, 638, 1243 MB)
    assert got["maxrss_kb"] < MAX_RSS_MB * 1024, f"{case}: peak RSS {got['maxrss_kb'] // 1024} MB"


@pytest.mark.parametrize("where", ["manifest", "error body", "token answer"])
def test_deeply_nested_json_is_one_line(servers, tmp_path: Path, where: str) -> None:
    # 100,000 levels in a manifest (the attack); 30,000 in an error body or token answer, which
    # stay under the 64 KiB an error body is read to
    depth = 100_000 if where == "manifest" else 30_000
    nested = b"[" * depth + b"]" * depth

    def registry(h: Handler, body: bytes) -> None:
        if where == "token answer":
            if h.path.startswith("/token"):
                h.reply(200, nested, {"Content-Type": "application/json"})
            else:
                h.reply(401, headers={"WWW-Authenticate": f'Bearer realm="{reg.url}/token",service="s"'})
        elif h.path == "/v2/":
            h.reply(200)
        elif where == "manifest":
            h.reply(200, nested, {"Content-Type": MANIFEST_TYPE})
        else:
            h.reply(404, nested, {"Content-Type": "application/json"})

    reg = servers(registry)
    from tests.conftest import run_cli

    commands = [["pull", f"{reg.host}/team/app:1", f"oci:{tmp_path / 'out'}"]]
    if where == "manifest":
        commands.append(["inspect", f"{reg.host}/team/app:1"])
    for command in commands:
        proc = run_cli(*command, "--cache-dir", str(tmp_path / "c"))
        assert proc.returncode == (1 if where == "manifest" else 2), proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
        if where == "manifest":
            assert "nested more than" in proc.stderr


# -- what a registry says is printed clean ---------------------------------------------------------

NASTY = "\x1b]0;pwned\x07\x1b[2J\x1b[8mhidden\x1b[0m\u202e"


@pytest.mark.parametrize("scheme", ["basic", "bearer"])
def test_control_bytes_and_echoed_credentials_never_reach_the_terminal(servers, tmp_path: Path, scheme: str) -> None:
    """The registry echoes our Authorization header in its error message, wraps it in escape
    sequences, and puts some in its reason phrase and in an image's label: none of it is printed."""
    manifest, config = tiny_image({"evil": NASTY + " label"})

    def registry(h: Handler, body: bytes) -> None:
        if _token(h) or not _authorized(h, scheme, reg.url):
            return
        if h.path == "/v2/":
            h.reply(200)
        elif "/manifests/good" in h.path:
            h.reply(200, manifest, {"Content-Type": MANIFEST_TYPE})
        elif "/blobs/" in h.path:
            h.reply(200, config)
        else:
            echo = f"{NASTY} you sent Authorization: {h.headers.get('Authorization')} {NASTY}"
            h.reply(403, json.dumps({"errors": [{"code": "DENIED\x1b[31m", "message": echo}]}).encode(),
                    {"Content-Type": "application/json"}, reason="Forbidden\x1b[2J")

    reg = servers(registry)
    outputs = []
    for args in (["pull", f"{reg.host}/team/app:bad", f"oci:{tmp_path / 'o'}"],
                 ["inspect", f"{reg.host}/team/app:good"], ["inspect", f"{reg.host}/team/app:good", "--json"]):
        proc = subprocess.run([sys.executable, "-c", VERBOSE_CLI, *args, "--debug", "-u", TEST_USER,
                               "--password-stdin", "--cache-dir", str(tmp_path / "c")],
                              input=TEST_PASSWORD + "\n", capture_output=True, text=True, timeout=120,
                              env={**os.environ, "OCIASSEMBLE_USERNAME": "", "OCIASSEMBLE_PASSWORD": ""})
        outputs.append((args, proc))
    (_, bad), (_, good), _ = outputs
    assert bad.returncode == 2 and "DENIED" in bad.stderr and "<redacted>" in bad.stderr, bad.stderr
    assert "Traceback" in bad.stderr  # --debug: the traceback is printed (cleaned) too
    assert good.returncode == 0 and "label" in good.stdout and "\\x1b" in good.stdout, good.stdout
    for args, proc in outputs:
        text = proc.stdout + proc.stderr
        assert not any(c in text for c in "\x1b\x07\u202e"), f"{args}: control bytes printed: {text[-2000:]!r}"
        assert _leaks_in(text) == [], f"{args}: {_leaks_in(text)}"
