"""``Settings``: one immutable value, the flags over the config file over the environment, typed."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest

from ociassemble import cli
from ociassemble.errors import InputError, UsageError
from ociassemble.image.platform import parse_platform
from ociassemble.modelspec import ModelSpec
from ociassemble.settings import Settings


def test_the_flags_go_over_the_config_file_and_paths_are_each_ones_own(tmp_path: Path) -> None:
    p = tmp_path / "proj"
    p.mkdir()
    (p / "ociassemble.toml").write_text('requirements = "reqs.txt"\nbase = "oci:/config-base"\n'
                                        'platform = ["linux/amd64", "linux/arm64"]\nenv = { A = "config", B = "config" }\n'
                                        'apt = ["jq"]\nmodels = ["m.pkl:demo:2"]\ncompression_level = 3\n')
    s = Settings.load(p, cwd=tmp_path, environ={}, base="oci:/flag-base", env={"B": "flag"}, apt=["curl", "jq"],
                      conda_file="env.yml")
    assert (s.root, s.config_file) == (p, p / "ociassemble.toml")
    assert s.base == "oci:/flag-base" and s.compression_level == 3
    assert s.platforms == (parse_platform("linux/amd64"), parse_platform("linux/arm64"))
    assert dict(s.env) == {"A": "config", "B": "flag"} and s.apt == ("jq", "curl")
    assert s.models == (ModelSpec(p / "m.pkl", "demo", "2"),)  # the config's path: relative to the config
    assert (s.conda_file, s.requirements) == (tmp_path / "env.yml", None)  # the flag's: to cwd; it replaces the config's
    assert s.given == frozenset({"base", "env", "apt", "conda_file"})
    assert Settings.load(p, environ={}, platforms="linux/arm64").platforms == (parse_platform("linux/arm64"),)


def test_settings_are_immutable(tmp_path: Path) -> None:
    s = Settings.load(tmp_path, environ={}, env={"A": "1"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.base = "scratch"  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.env["A"] = "2"  # type: ignore[index]
    assert dataclasses.replace(s, base="scratch").base == "scratch" and s.base is None
    given = {"A": "1"}
    s = Settings(env=given, apt=["jq"], cmd=["/bin/sh", "-c", "true"])  # a program's own lists and dicts
    given["A"] = "2"
    assert (dict(s.env), s.apt, s.cmd) == ({"A": "1"}, ("jq",), ("/bin/sh", "-c", "true"))
    with pytest.raises(UsageError, match="give a list of strings"):
        Settings(cmd="/bin/sh -c true")


def test_the_environment_fills_what_nothing_else_says(tmp_path: Path) -> None:
    env = {"OCIASSEMBLE_CACHE": str(tmp_path / "c"), "OCIASSEMBLE_USERNAME": "ci", "OCIASSEMBLE_PASSWORD": "t0ken",
           "OCIASSEMBLE_CACHE_REPO": "reg.example/cache", "OCIASSEMBLE_SIGN_KEY": "env.key",
           "COSIGN_PASSWORD": "", "OCIASSEMBLE_ALLOW_SECRETS": "yes"}
    s = Settings.load(tmp_path, environ=env)
    assert s.cache_dir == tmp_path / "c" and s.blob_cache().root == tmp_path / "c"
    assert (s.registry.username, s.registry.password) == ("ci", "t0ken") and "t0ken" not in repr(s)
    assert s.layer_cache.repo == "reg.example/cache" and s.allow_secrets
    assert (s.signing.key, s.signing.key_from, s.signing.password) == (Path("env.key"), "$OCIASSEMBLE_SIGN_KEY", b"")
    s = Settings.load(tmp_path, environ=env, username="me", password="pw", cache_from="reg.example/other",
                      cache_dir=str(tmp_path / "flag"))
    assert (s.registry.username, s.registry.password, s.cache_dir) == ("me", "pw", tmp_path / "flag")
    assert (s.layer_cache.repo, s.layer_cache.read_from) == (None, "reg.example/other")
    assert Settings.load(tmp_path, environ={"OCIASSEMBLE_CACHE_REPO": "off"}).layer_cache.repo is None


def test_from_argparse_reads_the_command_line_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ociassemble.toml").write_text('output = "oci:/from-config"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO("secret\n"))
    args = cli.build_parser().parse_args(["push", "r.example/x:1", "--plain", "--layer", "site:/srv", "--cmd",
                                          '["/bin/sh", "-c", "true"]', "-p", "80", "--password-stdin", "-u", "me",
                                          "--locked", "--sbom"])
    s = Settings.from_argparse(args, environ={})
    assert (s.recipe, s.cmd, s.ports, s.lock_mode, s.sbom) == (False, ("/bin/sh", "-c", "true"), ("80",), "locked", True)
    assert [(x.src, x.dest) for x in s.extra_layers] == [(Path("site"), "/srv")]
    assert s.registry.password == "secret" and s.output == "oci:/from-config"
    assert vars(args) == vars(cli.build_parser().parse_args(
        ["push", "r.example/x:1", "--plain", "--layer", "site:/srv", "--cmd", '["/bin/sh", "-c", "true"]', "-p", "80",
         "--password-stdin", "-u", "me", "--locked", "--sbom"]))  # the flags are read, never changed


def test_a_command_that_builds_nothing_reads_no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ociassemble.toml").write_text("this is not toml [\n")
    monkeypatch.chdir(tmp_path)
    s = Settings.from_argparse(cli.build_parser().parse_args(["pull", "r.example/x:1", "oci:out"]), environ={})
    assert s.config_file is None
    with pytest.raises(InputError, match="is not valid TOML"):
        Settings.from_argparse(cli.build_parser().parse_args(["build"]), environ={})


@pytest.mark.parametrize("given, message", [
    ({"nonsense": 1}, "unknown settings nonsense"),
    ({"platforms": "linux"}, "--platform"),
])
def test_bad_values_are_usage_errors(tmp_path: Path, given: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        Settings.load(tmp_path, environ={}, **given)
    with pytest.raises(UsageError, match="is not a folder"):
        Settings.load(tmp_path / "missing")


def test_speculative_upload_the_flag_over_the_config_over_the_environment(tmp_path: Path) -> None:
    """On by default; ``$OCIASSEMBLE_SPECULATIVE_UPLOAD=0`` turns it off, the config's key goes over the
    environment either way, and the flag (or a program's False) turns it off over both."""
    off = {"OCIASSEMBLE_SPECULATIVE_UPLOAD": "0"}
    assert Settings.load(tmp_path, environ={}).speculative_upload
    assert not Settings.load(tmp_path, environ=off).speculative_upload
    (tmp_path / "ociassemble.toml").write_text("speculative_upload = true\n")
    assert Settings.load(tmp_path, environ=off).speculative_upload
    assert not Settings.load(tmp_path, environ={}, no_speculative_upload=True).speculative_upload
    assert not Settings.load(tmp_path, environ={}, speculative_upload=False).speculative_upload
    args = cli.build_parser().parse_args(["push", "--no-speculative-upload", "r.example/x:1", str(tmp_path)])
    assert not Settings.from_argparse(args, environ={}).speculative_upload
    (tmp_path / "ociassemble.toml").write_text('speculative_upload = "no"\n')
    with pytest.raises(UsageError, match="speculative_upload must be true or false"):
        Settings.load(tmp_path, environ={})
