"""Image reference parsing (pure; lives here beside the registry tests it serves)."""

from __future__ import annotations

import pytest

from ociassemble.errors import ImageReferenceError
from ociassemble.registry.reference import parse_reference

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize("raw,registry,repo,tag,digest", [
    ("ubuntu", "docker.io", "library/ubuntu", "latest", None),
    ("ubuntu:22.04", "docker.io", "library/ubuntu", "22.04", None),
    ("docker.io/ubuntu", "docker.io", "library/ubuntu", "latest", None),
    ("index.docker.io/team/app:1", "docker.io", "team/app", "1", None),
    ("team/app", "docker.io", "team/app", "latest", None),
    ("localhost/app", "localhost", "app", "latest", None),
    ("localhost:5000/a/b/c:v1.2-rc_3", "localhost:5000", "a/b/c", "v1.2-rc_3", None),
    ("127.0.0.1:5000/app", "127.0.0.1:5000", "app", "latest", None),
    ("[::1]:5000/app:x", "[::1]:5000", "app", "x", None),
    ("registry.example.com/team/app@" + D, "registry.example.com", "team/app", None, D),
    ("registry.example.com/team/app:1@" + D, "registry.example.com", "team/app", "1", D),
    ("docker://ghcr.io/o/r:t", "ghcr.io", "o/r", "t", None),
    ("my.registry/a__b/c-d.e", "my.registry", "a__b/c-d.e", "latest", None),
])
def test_registry_reference_parses_with_docker_defaults(raw, registry, repo, tag, digest):
    r = parse_reference(raw)
    assert (r.registry, r.repository, r.tag, r.digest) == (registry, repo, tag, digest)
    assert parse_reference(str(r)) == r


def test_registry_reference_properties():
    r = parse_reference("ubuntu")
    assert r.host == "registry-1.docker.io" and r.name == "docker.io/library/ubuntu" and r.reference == "latest"
    pinned = parse_reference("127.0.0.1:5000/app:1@" + D)
    assert pinned.reference == D and pinned.hostname == "127.0.0.1"
    assert str(pinned.with_tag("2")) == "127.0.0.1:5000/app:2"


@pytest.mark.parametrize("raw,fragment", [
    ("", "empty image reference"),
    ("Team/App", "repository names are lowercase"),
    ("quay.io/Team/app", "repository names are lowercase"),
    ("app:", "invalid tag ''"),
    ("app:-x", "invalid tag '-x'"),
    ("app:" + "t" * 129, "up to 128"),
    ("app@sha256:1234", "64 lowercase hex"),
    ("app@md5:" + "a" * 32, "write @sha256:"),
    ("https://registry.example.com/app", "has a URL scheme"),
    ("registry.example.com/", "names no repository"),
    ("registry.example.com//app", "invalid repository name"),
    ("a/-b", "invalid repository name"),
    ("app name", "whitespace"),
    ("reg_istry.com:5000/app", "invalid registry"),
    ("r.io/" + "a" * 260, "too long"),
])
def test_registry_reference_errors_are_one_line_with_the_fix(raw, fragment):
    with pytest.raises(ImageReferenceError) as info:
        parse_reference(raw)
    assert fragment in str(info.value) and "\n" not in str(info.value)
