"""What a hostile registry can send, checked on the pure functions that read it (issue 23): a huge
``WWW-Authenticate`` header parses in linear time, deep JSON is a ValueError, the output cleaner
takes out credentials and control bytes, and explicit credentials are bound to one registry."""

from __future__ import annotations

import base64
import time

import pytest

from ociassemble.errors import UsageError
from ociassemble.image.oci import MAX_JSON_DEPTH, parse_json
from ociassemble.redact import REDACTED, Secrets, clean
from ociassemble.registry.auth import parse_challenge
from ociassemble.registry.client import RegistryOptions
from ociassemble.registry.credentials import same_registry
from ociassemble.registry.http import Origin

#: 60 KB headers of the shapes that made the old regex backtrack (one took 32 s of CPU).
HUGE_HEADERS = {
    "one long word": "Bearer " + "a" * 60_000,
    "an unterminated quote": 'Bearer realm="' + "a" * 60_000,
    "escapes, unterminated": 'Bearer realm="' + "\\a" * 30_000,
    "name= repeated": "Bearer " + "a=" * 30_000,
    "names without values": "Bearer " + "a " * 30_000,
    "commas": "Bearer " + "a," * 30_000,
    "quotes": "Bearer " + '"' * 60_000,
    "many params": "Bearer " + ",".join(f'k{i}="v{i}"' for i in range(6_000)),
}


@pytest.mark.parametrize("shape", sorted(HUGE_HEADERS))
def test_a_60_kb_challenge_parses_in_under_50_ms(shape: str) -> None:
    header = HUGE_HEADERS[shape]
    assert len(header) >= 60_000
    best = min(_timed(header) for _ in range(3))  # the best of three: a loaded CI machine stalls now and then
    assert best < 0.050, f"{shape}: {best * 1000:.0f} ms"


def _timed(header: str) -> float:
    start = time.perf_counter()
    parse_challenge(header)
    return time.perf_counter() - start


def test_the_challenge_is_still_read_right() -> None:
    c = parse_challenge('Bearer realm="https://auth.example.com/token",service="registry.example.com",'
                        'scope="repository:a/b:pull,push" , error=invalid_token, junk, x="q\\"uoted"')
    assert c is not None and c.scheme == "bearer"
    assert c.params == {"realm": "https://auth.example.com/token", "service": "registry.example.com",
                        "scope": "repository:a/b:pull,push", "error": "invalid_token", "x": 'q"uoted'}
    assert parse_challenge('Basic realm="Registry Realm"').params == {"realm": "Registry Realm"}
    assert parse_challenge("Negotiate abc") is None and parse_challenge("") is None
    assert parse_challenge('Bearer realm="unterminated').params == {"realm": '"unterminated'}


def test_deep_json_is_a_value_error_not_a_recursion_error() -> None:
    for depth in (100_000, MAX_JSON_DEPTH + 1):
        with pytest.raises(ValueError, match="nested more than"):
            parse_json(b"[" * depth + b"]" * depth)
        with pytest.raises(ValueError, match="nested more than"):
            parse_json('{"a":' * depth + "1" + "}" * depth)
    assert parse_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH) is not None
    assert parse_json(b'{"schemaVersion": 2, "layers": [{"annotations": {"a": "b"}}]}')["schemaVersion"] == 2


def test_clean_redacts_what_we_sent_and_escapes_control_bytes() -> None:
    secrets = Secrets()
    secrets.add_login("alice", "s3cret-Pa55")
    secrets.add("tok.en-123456")
    basic = base64.b64encode(b"alice:s3cret-Pa55").decode()
    text = (f"denied: Authorization: Basic {basic}; pw=s3cret-Pa55 url=s3cret-Pa55%21 token tok.en-123456 "
            f"unknown Bearer abc.def-123 \x1b]0;title\x07\x1b[2J\u202eevil\r\nnext\tline")
    out = clean(text, secrets)
    for gone in (basic, "s3cret-Pa55", "tok.en-123456", "abc.def-123", "\x1b", "\x07", "\u202e", "\r"):
        assert gone not in out, gone
    assert out.count(REDACTED) == 5 and "\\x1b]0;title\\x07" in out and "\\u202eevil" in out
    assert "\nnext\tline" in out  # a traceback keeps its lines
    assert clean(out, secrets) == out  # cleaning twice (at the source, at the output) changes nothing more
    assert clean("Basic authentication and a bearer token") == "Basic authentication and a bearer token"
    short = Secrets()
    short.add("ab")  # too short to search for: it would shred the output and hide nothing
    assert clean("a tab b", short) == "a tab b"


def test_origins_differ_by_scheme_host_and_port() -> None:
    assert Origin.of("https://r.example.com/v2/") == Origin.of("https://R.example.com:443/x?y=1")
    assert Origin.of("http://r.example.com/") == Origin.of("http://r.example.com:80/")
    assert Origin.of("https://r.example.com/") != Origin.of("http://r.example.com/")
    assert Origin.of("http://127.0.0.1:5000/") != Origin.of("http://127.0.0.1:5001/")
    assert Origin.of("https://r.example.com/") != Origin.of("https://storage.example.com/")


def test_explicit_credentials_are_bound_to_one_registry() -> None:
    opts = RegistryOptions(username="alice", password="s3cret-Pa55")
    assert opts.scoped_to(["127.0.0.1:5000", "127.0.0.1:5000"]).credentials_registry == "127.0.0.1:5000"
    assert opts.scoped_to(["a.example.com"]).scoped_to(["b.example.com"]).credentials_registry == "a.example.com"
    with pytest.raises(UsageError, match="are for one registry"):
        opts.scoped_to(["a.example.com", "b.example.com"])
    anonymous = RegistryOptions()
    assert anonymous.scoped_to(["a.example.com", "b.example.com"]) is anonymous
    assert same_registry("docker.io", "index.docker.io") and same_registry("https://Reg.example.com/v1/", "reg.example.com")
    assert not same_registry("127.0.0.1:5000", "127.0.0.1:5001")
    assert "s3cret-Pa55" in opts.secrets.forms()  # known to the cleaner from the start
