"""Credentials against real registries: htpasswd basic auth over TLS, and the bearer token flow."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from registry_fixtures import TEST_PASSWORD, TEST_USER, skopeo

from ociassemble.errors import AuthError, RegistryError
from ociassemble.registry import RegistryOptions, login, options_for, pull_image, push_image
from ociassemble.registry.auth import parse_challenge
from ociassemble.registry.credentials import Credentials, resolve_credentials
from ociassemble.registry.client import RegistryClient
from ociassemble.settings import Settings

WRONG = "not-the-Right-pa55"


@pytest.fixture
def image(cache, make_image):
    return make_image(cache, {"score.py": b"print('auth')\n", "w.bin": os.urandom(100_000)})


# -- TLS + basic ----------------------------------------------------------------------------


def test_registry_tls_self_signed_fails_without_ca_cert(tls_registry, cache, image, options):
    with pytest.raises(RegistryError) as info:
        push_image(image, cache, [f"{tls_registry.host}/tls/app:1"],
                   options=replace(options, username=TEST_USER, password=TEST_PASSWORD))
    message = str(info.value)
    assert "\n" not in message
    assert f"TLS verification of registry {tls_registry.host} failed" in message and "--ca-cert" in message
    assert TEST_PASSWORD not in message


def test_registry_tls_with_ca_cert_and_basic_auth_pushes(tls_registry, cache, image, options):
    opts = replace(options, username=TEST_USER, password=TEST_PASSWORD, ca_cert=tls_registry.ca_cert)
    ref = f"{tls_registry.host}/tls/app:1"
    result = push_image(image, cache, [ref], options=opts)
    assert result.digest == image.digest
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", "--creds", f"{TEST_USER}:{TEST_PASSWORD}",
                                  f"docker://{ref}"))
    assert inspected["Digest"] == image.digest
    # and read back through our own pull, over TLS with the same credentials
    assert pull_image(ref, cache, options=opts).digest == image.digest


def test_registry_wrong_password_is_one_line_without_the_password(tls_registry, cache, image, options, caplog):
    caplog.set_level(logging.DEBUG)
    opts = replace(options, username=TEST_USER, password=WRONG, ca_cert=tls_registry.ca_cert)
    with pytest.raises(AuthError) as info:
        push_image(image, cache, [f"{tls_registry.host}/tls/denied:1"], options=opts)
    message = str(info.value)
    assert "\n" not in message and "HTTP 401" in message
    assert f"refused the credentials of user '{TEST_USER}'" in message
    for text in (message, repr(info.value), repr(opts), caplog.text):
        assert WRONG not in text
        assert base64.b64encode(f"{TEST_USER}:{WRONG}".encode()).decode() not in text


def test_registry_no_credentials_says_how_to_log_in(tls_registry, cache, image, options):
    with pytest.raises(AuthError, match="needs credentials; run 'ociassemble login"):
        push_image(image, cache, [f"{tls_registry.host}/tls/anon:1"], options=replace(options, ca_cert=tls_registry.ca_cert))


def test_registry_login_stores_credentials_then_push_uses_them(tls_registry, cache, image, options, tmp_path):
    config = tmp_path / "dc" / "config.json"
    opts = replace(options, ca_cert=tls_registry.ca_cert, docker_config=config)
    with pytest.raises(AuthError):
        login(tls_registry.host, TEST_USER, WRONG, options=opts)
    assert not config.exists()

    written = login(tls_registry.host, TEST_USER, TEST_PASSWORD, options=opts)
    assert written == config
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    entry = json.loads(config.read_text())["auths"][tls_registry.host]
    assert base64.b64decode(entry["auth"]).decode() == f"{TEST_USER}:{TEST_PASSWORD}"

    result = push_image(image, cache, [f"{tls_registry.host}/tls/fromconfig:1"], options=opts)
    assert result.digest == image.digest


def test_registry_credentials_from_docker_config_env_and_helper(tls_registry, cache, image, options, tmp_path,
                                                                 monkeypatch):
    # $DOCKER_CONFIG with a credHelpers entry served by a docker-credential-* executable, read by the
    # settings (``settingsload``) and handed down: the registry code reads no environment
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-ocitest"
    helper.write_text(
        "#!/bin/sh\n"
        "[ \"$1\" = get ] || exit 1\n"
        "read server\n"
        f"[ \"$server\" = '{tls_registry.host}' ] || {{ echo 'credentials not found in native keychain'; exit 1; }}\n"
        f"printf '%s' '{{\"ServerURL\":\"{tls_registry.host}\",\"Username\":\"{TEST_USER}\",\"Secret\":\"{TEST_PASSWORD}\"}}'\n")
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    docker_dir = tmp_path / "docker-env"
    docker_dir.mkdir()
    (docker_dir / "config.json").write_text(json.dumps({"credHelpers": {tls_registry.host: "ocitest"}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "not-this-one"))  # the process's: never read below settings

    files = options_for(Settings.load_environment(environ={"DOCKER_CONFIG": str(docker_dir)}).registry).credential_files
    creds = resolve_credentials(tls_registry.host, files=files)
    assert creds is not None and creds.username == TEST_USER and creds.source == "docker-credential-ocitest"
    assert TEST_PASSWORD not in repr(creds)
    assert resolve_credentials("other.example.com", files=files) is None  # helper: not found → anonymous
    assert resolve_credentials(tls_registry.host) is None  # no files given: ~/.docker/config.json only

    opts = replace(options, ca_cert=tls_registry.ca_cert, docker_config=None, credential_files=files)
    assert push_image(image, cache, [f"{tls_registry.host}/tls/helper:1"], options=opts).digest == image.digest

    # $REGISTRY_AUTH_FILE (podman's auth.json) is read first
    auth_file = tmp_path / "auth.json"
    auth_file.write_text(json.dumps({"auths": {f"https://{tls_registry.host}/v2/": {
        "auth": base64.b64encode(f"{TEST_USER}:{WRONG}".encode()).decode()}}}))
    env = {"DOCKER_CONFIG": str(docker_dir), "REGISTRY_AUTH_FILE": str(auth_file)}
    files = options_for(Settings.load_environment(environ=env).registry).credential_files
    creds = resolve_credentials(tls_registry.host, files=files)
    assert creds is not None and creds.password == WRONG and "auth.json" in creds.source


def test_login_writes_where_the_settings_say(tls_registry, tmp_path):
    """``login`` stores into ``$REGISTRY_AUTH_FILE`` when set, else ``$DOCKER_CONFIG/config.json``: the
    settings' locations, whatever the process environment says."""
    for env, written in (({"DOCKER_CONFIG": str(tmp_path / "dc")}, tmp_path / "dc" / "config.json"),
                         ({"DOCKER_CONFIG": str(tmp_path / "dc"), "REGISTRY_AUTH_FILE": str(tmp_path / "auth.json")},
                          tmp_path / "auth.json")):
        settings = Settings.load_environment(environ=env, ca_cert=str(tls_registry.ca_cert))
        assert login(tls_registry.host, TEST_USER, TEST_PASSWORD, options=options_for(settings.registry)) == written
        entry = json.loads(written.read_text())["auths"][tls_registry.host]
        assert base64.b64decode(entry["auth"]).decode() == f"{TEST_USER}:{TEST_PASSWORD}"
    assert not (tmp_path / "docker-config" / "config.json").exists()  # the fixture's $DOCKER_CONFIG: not used


# -- bearer tokens ---------------------------------------------------------------------------


def test_registry_bearer_flow_pushes_and_reuses_one_token(token_registry, cache, image, options):
    reg, tokens = token_registry
    tokens.requests.clear()
    ref = f"{reg.host}/bearer/app:1"
    result = push_image(image, cache, [ref], options=replace(options, username=TEST_USER, password=TEST_PASSWORD))
    assert result.digest == image.digest
    # HEADs, POSTs, PUTs of two blobs in parallel and two manifest PUTs: one token
    assert tokens.requests == [(TEST_USER, ["repository:bearer/app:pull,push"])]

    tokens.requests.clear()
    pulled = pull_image(ref, cache, options=options)  # anonymous: the token server grants pull
    assert pulled.digest == image.digest
    assert tokens.requests == [(None, ["repository:bearer/app:pull"])]

    # a push with the base mounted from another repository asks for pull on that one too
    tokens.requests.clear()
    result = push_image(pulled, cache, [f"{reg.host}/bearer/other:1"],
                        options=replace(options, username=TEST_USER, password=TEST_PASSWORD))
    assert set(result.blobs_mounted) == {d.digest for d in image.manifest.layers}
    assert tokens.requests == [(TEST_USER, ["repository:bearer/app:pull", "repository:bearer/other:pull,push"])]


def test_registry_bearer_token_refreshed_on_401(token_registry, image, options):
    reg, tokens = token_registry
    client = RegistryClient(reg.host, replace(options, username=TEST_USER, password=TEST_PASSWORD))
    scopes = client.scopes("bearer/refresh", push=True)
    assert client.blob_exists("bearer/refresh", image.manifest.config.digest, scopes) is False
    assert client.auth.token_requests == 1
    assert client.blob_exists("bearer/refresh", image.manifest.config.digest, scopes) is False
    assert client.auth.token_requests == 1  # cached
    # the registry stops accepting the cached token (expired, revoked): one refresh, no error
    client.auth._tokens = {k: ("not-a-valid-token", v[1]) for k, v in client.auth._tokens.items()}
    assert client.blob_exists("bearer/refresh", image.manifest.config.digest, scopes) is False
    assert client.auth.token_requests == 2
    assert "not-a-valid-token" not in repr(client) and TEST_PASSWORD not in repr(client)
    client.close()


def test_registry_bearer_wrong_password_is_one_line(token_registry, cache, image, options, caplog):
    reg, _ = token_registry
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthError) as info:
        push_image(image, cache, [f"{reg.host}/bearer/denied:1"], options=replace(options, username=TEST_USER, password=WRONG))
    message = str(info.value)
    assert "\n" not in message
    assert f"refused the credentials of user '{TEST_USER}'" in message and "token server HTTP 401" in message
    assert WRONG not in message and WRONG not in caplog.text


def test_registry_bearer_anonymous_push_is_denied_clearly(token_registry, cache, image, options):
    reg, _ = token_registry
    with pytest.raises(AuthError) as info:
        push_image(image, cache, [f"{reg.host}/bearer/anon:1"], options=options)
    assert "\n" not in str(info.value) and "ociassemble login" in str(info.value)


def test_registry_parse_challenge():
    c = parse_challenge('Bearer realm="https://auth.example.com/token",service="registry.example.com",'
                        'scope="repository:team/app:pull,push"')
    assert c is not None and c.scheme == "bearer"
    assert dict(c.params) == {"realm": "https://auth.example.com/token", "service": "registry.example.com",
                              "scope": "repository:team/app:pull,push"}
    assert parse_challenge('Basic realm="r"').scheme == "basic"
    assert parse_challenge(None) is None and parse_challenge("Negotiate abc") is None
    assert "hunter2" not in repr(Credentials("u", "hunter2"))
    assert "hunter2" not in repr(RegistryOptions(username="u", password="hunter2"))


def test_registry_docker_hub_keys(tmp_path: Path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {"https://index.docker.io/v1/": {
        "auth": base64.b64encode(b"hubuser:hubpass").decode()}}}))
    creds = resolve_credentials("docker.io", config_path=config)
    assert creds is not None and creds.username == "hubuser"
    assert resolve_credentials("ghcr.io", config_path=config) is None
    assert resolve_credentials("docker.io", config_path=tmp_path / "missing.json") is None
