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


def test_source_date_epoch_a_program_over_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``$SOURCE_DATE_EPOCH`` is read once, into ``Settings.source_date_epoch``; a program's value goes
    over it, and a Settings made by keyword reads no environment at all."""
    from ociassemble.azureml.project import project_of

    at = {"SOURCE_DATE_EPOCH": "1700000000"}
    s = Settings.load(tmp_path, environ=at)
    assert (s.source_date_epoch, s.epoch, project_of(s).epoch) == (1700000000, 1700000000, 1700000000)
    assert (Settings.load(tmp_path, environ={}).source_date_epoch, Settings.load(tmp_path, environ={}).epoch) == (None, 0)
    assert Settings.load(tmp_path, environ={"SOURCE_DATE_EPOCH": " "}).source_date_epoch is None  # empty: unset
    assert Settings.load(tmp_path, environ=at, source_date_epoch=5).epoch == 5
    assert Settings.load(tmp_path, environ=at, source_date_epoch=0).source_date_epoch == 0  # 0 says something
    assert Settings.load_environment(environ=at).epoch == 1700000000  # push --from dates its SBOM by it
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert Settings().epoch == 0 and Settings.load(tmp_path, environ={}).epoch == 0
    for bad in (-1, "5", 1.5, True):
        with pytest.raises(UsageError, match="source_date_epoch .*whole number of seconds"):
            Settings(source_date_epoch=bad)  # type: ignore[arg-type]


def _plain_build(tmp_path: Path, settings: Settings):
    from ociassemble.build import build_images

    return build_images(settings, settings.blob_cache()).builds[0].image


def test_the_epoch_that_dates_an_image_is_the_settings_not_the_process_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain build's layer mtimes and ``created`` come from the settings: a SOURCE_DATE_EPOCH in the
    process environment but not in the settings' changes nothing (no read below ``settingsload``)."""
    import tarfile

    from ociassemble.image.describe import open_layer

    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("hello\n")
    given = {"recipe": False, "extra_layers": [f"{site}:/srv"], "cache_dir": str(tmp_path / "cache")}
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    zero = _plain_build(tmp_path, Settings.load(tmp_path, environ={}, **given))
    dated = _plain_build(tmp_path, Settings.load(tmp_path, environ={"SOURCE_DATE_EPOCH": "1700000000"}, **given))
    assert zero.config.created == "1970-01-01T00:00:00Z" and dated.config.created == "2023-11-14T22:13:20Z"
    assert zero.digest != dated.digest
    cache = Settings(cache_dir=tmp_path / "cache").blob_cache()
    for image, epoch in ((zero, 0), (dated, 1700000000)):
        with open_layer(image, cache, image.manifest.layers[-1]) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
            assert {m.name: m.mtime for m in tar} == {"srv": epoch, "srv/index.html": epoch}
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert _plain_build(tmp_path, Settings.load(tmp_path, environ={}, **given)).digest == zero.digest


@pytest.mark.parametrize("value, says", [("soon", "is not a whole number of seconds"), ("-5", "is negative")])
def test_a_bad_source_date_epoch_is_one_line_and_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys,
                                                        value: str, says: str) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "f").write_text("x\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", value)
    assert cli.main(["build", "--plain", "--layer", f"{site}:/srv", "-o", f"oci:{tmp_path / 'out'}",
                     "--cache-dir", str(tmp_path / "cache")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"SOURCE_DATE_EPOCH={value!r} {says}: set it to a Unix time in seconds" in err and "unset it" in err
    assert not (tmp_path / "out").exists()


def test_a_bad_source_date_epoch_stops_only_what_dates_something(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys) -> None:
    """A CI job's SOURCE_DATE_EPOCH is meant for builds: a bad one stops a build (above) and the
    settings' ``epoch``, but not a command that dates nothing (keygen, inspect of a layout)."""
    bad = {"SOURCE_DATE_EPOCH": "yesterday"}
    s = Settings.load_environment(environ=bad)
    with pytest.raises(UsageError, match="SOURCE_DATE_EPOCH='yesterday' is not a whole number of seconds"):
        s.epoch
    assert Settings.load(tmp_path, environ=bad, source_date_epoch=7).epoch == 7  # a program's value goes over it
    site = tmp_path / "site"
    site.mkdir()
    (site / "f").write_text("x\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["build", "--plain", "--layer", f"{site}:/srv", "-o", f"oci:{tmp_path / 'img'}",
                     "--cache-dir", str(tmp_path / "cache"), "-q"]) == 0
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    capsys.readouterr()
    assert cli.main(["inspect", f"oci:{tmp_path / 'img'}", "--cache-dir", str(tmp_path / "cache"), "--json"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    monkeypatch.setenv("COSIGN_PASSWORD", "")
    assert cli.main(["keygen", "--output-key-prefix", str(tmp_path / "k")]) == 0
    assert (tmp_path / "k.key").exists()


def test_credential_files_given_over_the_environment(tmp_path: Path) -> None:
    """Where stored registry credentials are: ``$REGISTRY_AUTH_FILE`` and ``$DOCKER_CONFIG``, read into
    ``Settings.registry`` (a program's ``auth_file``/``docker_config`` over them) and handed to the
    registry code in ``RegistryOptions.credential_files``."""
    from ociassemble.registry.credentials import CredentialFiles
    from ociassemble.registry.options import options_for

    env = {"REGISTRY_AUTH_FILE": str(tmp_path / "auth.json"), "DOCKER_CONFIG": str(tmp_path / "docker")}
    r = Settings.load_environment(environ=env).registry
    assert (r.auth_file, r.docker_config) == (tmp_path / "auth.json", tmp_path / "docker")
    files = options_for(Settings.load(tmp_path, environ=env).registry).credential_files
    assert files == CredentialFiles(tmp_path / "auth.json", tmp_path / "docker")
    assert files.candidates() == [tmp_path / "auth.json", tmp_path / "docker" / "config.json"]
    r = Settings.load(tmp_path, environ=env, docker_config=str(tmp_path / "mine")).registry
    assert (r.auth_file, r.docker_config) == (tmp_path / "auth.json", tmp_path / "mine")
    r = Settings.load(tmp_path, environ={"REGISTRY_AUTH_FILE": "", "DOCKER_CONFIG": ""}).registry
    assert (r.auth_file, r.docker_config) == (None, None)
    assert options_for(Settings().registry).credential_files.candidates() == [Path.home() / ".docker" / "config.json"]


def test_keygen_takes_cosign_password_from_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``keygen`` seals the key under ``$COSIGN_PASSWORD`` as the settings read it (set and empty: the
    empty password), the same value ``push`` opens the key with."""
    from ociassemble.errors import WrongPasswordError
    from ociassemble.sign.keys import load_private_key

    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal: nothing is asked
    for password in ("s3cret", ""):
        monkeypatch.setenv("COSIGN_PASSWORD", password)
        prefix = tmp_path / f"k{len(password)}"
        assert cli.main(["keygen", "--output-key-prefix", str(prefix)]) == 0
        data = (tmp_path / f"{prefix.name}.key").read_bytes()
        assert Settings.load_environment().signing.password == password.encode()
        load_private_key(data, password.encode(), "k")
        with pytest.raises(WrongPasswordError):
            load_private_key(data, b"other", "k")
    monkeypatch.delenv("COSIGN_PASSWORD")
    assert cli.main(["keygen", "--output-key-prefix", str(tmp_path / "none")]) == 1  # no password anywhere
