"""The command line's contract: exit codes, --version, --help examples, completion, secrets from the
environment, the progress reporters, and the documented --json schemas (docs/json.md)."""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ociassemble import __version__, cli
from ociassemble.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_REGISTRY, EXIT_USER, RegistryError
from ociassemble.image.oci import Descriptor, MediaType
from ociassemble.cli.progress import LiveReporter, PlainReporter, Reporter, make_reporter

REPO = Path(__file__).resolve().parents[2]
COMMANDS = ("build", "push", "pull", "inspect", "run", "make-base", "init", "login", "cache", "completion", "verify",
            "keygen", "lock")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


# -- exit codes ---------------------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"ociassemble {__version__}"


def test_the_installed_version_is_the_packages_own() -> None:
    """pyproject.toml takes the version from ``ociassemble.__version__`` (one place): what pip
    installed says the same, and the command line does not pay for importlib.metadata."""
    import importlib.metadata
    import subprocess
    import sys

    assert importlib.metadata.version("ociassemble") == __version__
    out = subprocess.run([sys.executable, "-c", "import sys, ociassemble.cli; print('importlib.metadata' in sys.modules)"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_bad_flags_exit_1_not_argparse_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["inspect"])  # IMAGE missing
    assert exc.value.code == EXIT_USER
    with pytest.raises(SystemExit) as exc:
        cli.main(["build", "--compression", "lzma"])
    assert exc.value.code == EXIT_USER
    assert "invalid choice" in capsys.readouterr().err


def _failing(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    def boom(args: argparse.Namespace, out: object) -> int:
        raise exc

    monkeypatch.setattr(cli.init, "cmd_init", boom)  # the parser looks it up when built


def test_a_bug_prints_its_traceback_and_exits_3(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _failing(monkeypatch, ZeroDivisionError("oops"))
    assert cli.main(["init"]) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ZeroDivisionError: oops" in err
    assert err.strip().splitlines()[-1] == (f"ociassemble: this is a bug in ociassemble {__version__}: "
                                            "please report it with the traceback above")


def test_a_registry_error_is_one_line_and_exits_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _failing(monkeypatch, RegistryError("registry r refused the push (DENIED)\nsecond line"))
    assert cli.main(["init"]) == EXIT_REGISTRY
    err = capsys.readouterr().err
    assert err == "ociassemble: error: registry r refused the push (DENIED); second line\n"


def test_debug_adds_the_traceback_but_keeps_the_exit_code(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    _failing(monkeypatch, RegistryError("no route"))
    assert cli.main(["init", "--debug"]) == EXIT_REGISTRY
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("ociassemble: error: no route\n")


def test_interrupted_exits_130(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _failing(monkeypatch, KeyboardInterrupt())
    assert cli.main(["init"]) == EXIT_INTERRUPTED
    assert "interrupted" in capsys.readouterr().err


def test_exit_codes_are_documented() -> None:
    text = (REPO / "docs" / "exit-codes.md").read_text()
    for code in ("0", "1", "2", "3", "130"):
        assert re.search(rf"^\| `?{code}`? \|", text, re.MULTILINE), f"exit code {code} is not in docs/exit-codes.md"
    assert "exit codes: 0 ok, 1 bad input or environment, 2 registry or network, 3 internal error" in cli.parser.EPILOG


# -- help, completion -----------------------------------------------------------------------------


def test_every_command_has_help_with_an_example_and_a_docs_page() -> None:
    subs = _subparsers(cli.build_parser())
    assert set(subs) == set(COMMANDS)
    for name, sub in subs.items():
        text = sub.format_help()
        assert "example:" in text and f"ociassemble {name}" in text.split("example:", 1)[1], name
        for action in sub._actions:  # every flag and argument says what it is for
            if action.dest not in ("help",):
                assert action.help, f"{name}: {action.option_strings or action.dest} has no help text"
        if name != "completion":
            assert (REPO / "docs" / "commands" / f"{name}.md").is_file(), f"docs/commands/{name}.md is missing"


def _complete(script: str, words: list[str]) -> list[str]:
    cword = len(words) - 1
    program = (script + "\nCOMP_WORDS=(" + " ".join(f"'{w}'" for w in words) + f")\nCOMP_CWORD={cword}\n"
               "_ociassemble\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n")
    proc = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True)
    return proc.stdout.split()


def test_bash_completion_completes_commands_flags_and_choices() -> None:
    script = cli.completion_script("bash")
    subprocess.run(["bash", "-n", "-c", script], check=True)
    assert _complete(script, ["ociassemble", "pu"]) == ["pull", "push"]
    assert _complete(script, ["ociassemble", "inspect", "--l"]) == ["--layer", "--list"]
    assert _complete(script, ["ociassemble", "build", "--compression", "z"]) == ["zstd"]
    assert _complete(script, ["ociassemble", "completion", ""]) == ["bash", "zsh"]
    assert "--sbom" in _complete(script, ["ociassemble", "push", "--s"])
    assert _complete(script, ["ociassemble", "lo"]) == ["lock", "login"]
    assert _complete(script, ["ociassemble", "lock", "--up"]) == ["--upgrade"]
    assert "--locked" in _complete(script, ["ociassemble", "build", "--lo"])


def test_zsh_completion_reuses_the_bash_function_through_bashcompinit() -> None:
    script = cli.completion_script("zsh")
    assert script.startswith("#compdef ociassemble\n")
    assert "bashcompinit" in script and "complete -o default -F _ociassemble ociassemble" in script


def _zsh_candidates(script: str, words: list[str]) -> list[str]:
    """What the completion gives in a real zsh for ``words`` (the last being completed).

    zsh calls the bash function through bashcompinit with ksharrays on; its compgen returns
    every word of -W and zsh's own matcher then filters by the typed prefix, so this is the
    candidate set before that filtering.
    """
    program = (f"autoload -U compinit && compinit -u -D\n{script}\n"
               "[[ -n ${_comps[ociassemble]} ]] || { print -u2 'not registered'; exit 3 }\n"
               "setopt ksharrays\nCOMP_WORDS=(" + " ".join(f"'{w}'" for w in words) + f")\nCOMP_CWORD={len(words) - 1}\n"
               "_ociassemble\nprint -rl -- \"${COMPREPLY[@]}\"\n")
    proc = subprocess.run(["zsh", "-f", "-c", program], capture_output=True, text=True, check=True)
    return proc.stdout.split()


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed (scripts/setup installs it)")
def test_zsh_completion_runs_in_zsh_and_completes_by_context() -> None:
    script = cli.completion_script("zsh")
    subprocess.run(["zsh", "-n", "-c", script], check=True)
    assert {"build", "push", "inspect", "make-base"} <= set(_zsh_candidates(script, ["ociassemble", "pu"]))
    assert _zsh_candidates(script, ["ociassemble", "build", "--compression", "z"]) == ["auto", "gzip", "zstd", "none"]
    inspect_flags = _zsh_candidates(script, ["ociassemble", "inspect", "--l"])
    assert {"--layer", "--list"} <= set(inspect_flags) and "--sbom" not in inspect_flags
    assert _zsh_candidates(script, ["ociassemble", "completion", ""]) == ["bash", "zsh"]


def test_completion_command_prints_the_script(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["completion", "bash"]) == 0
    assert capsys.readouterr().out == cli.completion_script("bash")


# -- secrets ------------------------------------------------------------------------------------------


def test_credentials_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCIASSEMBLE_USERNAME", "ci-bot")
    monkeypatch.setenv("OCIASSEMBLE_PASSWORD", "t0ken")
    from ociassemble.registry.options import options_for
    from ociassemble.settings import Settings

    args = cli.build_parser().parse_args(["pull", "r/x:1", "oci:out"])
    settings = Settings.from_argparse(args)
    opts = options_for(settings.registry, "r/x:1", secrets=settings.secrets)
    assert (opts.username, opts.password) == ("ci-bot", "t0ken")
    assert "t0ken" not in repr(opts) and "t0ken" not in repr(settings)


def test_password_stdin_is_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("from-stdin\n"))
    monkeypatch.setenv("OCIASSEMBLE_PASSWORD", "ignored")
    from ociassemble.registry.options import options_for
    from ociassemble.settings import Settings

    args = cli.build_parser().parse_args(["push", "r/x:1", "-u", "me", "--password-stdin"])
    settings = Settings.from_argparse(args)  # stdin is read here, once
    assert options_for(settings.registry, "r/x:1").password == "from-stdin"
    assert options_for(settings.registry, "r/x:1").password == "from-stdin"  # a registry base and the push share it


def test_registry_options_from_plain_values() -> None:
    """What the flags call: a given value wins, the environment fills the rest."""
    from ociassemble.registry.options import options_for
    from ociassemble.settings import Settings

    env = {"OCIASSEMBLE_USERNAME": "env-user", "OCIASSEMBLE_PASSWORD": "env-pass"}
    opts = options_for(Settings.load_environment(environ=env, insecure_registries=["reg:5000"]).registry)
    assert (opts.username, opts.password, opts.insecure_registries) == ("env-user", "env-pass", ("reg:5000",))
    # an empty stdin is still the password given
    opts = options_for(Settings.load_environment(username="me", password="", environ=env).registry)
    assert (opts.username, opts.password) == ("me", "")
    assert options_for(Settings.load_environment(environ={}).registry).username is None


def test_the_help_names_the_environment_the_library_reads() -> None:
    """The parser names the variables as text (no registry import for --help): they must be the library's."""
    from ociassemble import settings as run_settings
    from ociassemble.cli import parser

    assert (parser.ENV_USERNAME, parser.ENV_PASSWORD, parser.ENV_CACHE_REPO, parser.ENV_SIGN_KEY,
            parser.ENV_COSIGN_PASSWORD) == (run_settings.ENV_USERNAME, run_settings.ENV_PASSWORD,
                                            run_settings.ENV_CACHE_REPO, run_settings.ENV_SIGN_KEY,
                                            run_settings.ENV_COSIGN_PASSWORD)


def test_only_secret_flags_are_password_stdin() -> None:
    """No flag takes a secret as its value: passwords come from stdin or the environment."""
    for name, sub in _subparsers(cli.build_parser()).items():
        for action in sub._actions:
            for opt in action.option_strings:
                assert not re.search(r"pass(word)?$|token|secret", opt) or action.nargs == 0, (name, opt)


# -- progress -----------------------------------------------------------------------------------------


def test_plain_reporter_writes_lines_only() -> None:
    out = io.StringIO()
    reporter = make_reporter(out)
    assert isinstance(reporter, PlainReporter)
    desc = Descriptor(MediaType.LAYER_GZIP, "sha256:" + "ab" * 32, 3000)
    reporter.step("layer python-deps")
    reporter.layer_bytes(1 << 20)
    for _ in range(3):
        reporter.blob_bytes(desc, 1000)
    reporter.blob_bytes(desc, 1000)  # a retry resends: still one line
    reporter.close()
    assert out.getvalue() == ("ociassemble: layer python-deps\n"
                              "ociassemble: uploaded sha256:abababababab (2.9 KiB)\n")


def test_quiet_reporter_writes_nothing() -> None:
    reporter = make_reporter(io.StringIO(), quiet=True)
    assert type(reporter) is Reporter


class _FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_the_live_reporter_unless_term_is_dumb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    assert isinstance(make_reporter(_FakeTty()), LiveReporter)
    monkeypatch.setenv("TERM", "dumb")
    assert isinstance(make_reporter(_FakeTty()), PlainReporter)


# -- the documented JSON schemas -------------------------------------------------------------------


def _doc_examples() -> dict[str, object]:
    """The ```json blocks of docs/json.md, by the heading above each."""
    text = (REPO / "docs" / "json.md").read_text()
    out: dict[str, object] = {}
    for section in re.split(r"^#+ ", text, flags=re.MULTILINE)[1:]:
        heading, _, body = section.partition("\n")
        block = re.search(r"^```json\n(.*?)^```", body, re.MULTILINE | re.DOTALL)
        if block:
            out[heading.strip()] = json.loads(block.group(1))
    return out


def _shape(value: object) -> object:
    """Keys and JSON types, recursively (lists by their first element); None matches anything."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    if value is None:
        return None
    return type(value).__name__


def _same_shape(doc: object, actual: object, where: str = "$") -> None:
    if isinstance(doc, dict):
        assert isinstance(actual, dict), where
        assert set(doc) == set(actual), f"{where}: documented {sorted(doc)} but got {sorted(actual)}"
        for k in doc:
            _same_shape(doc[k], actual[k], f"{where}.{k}")
    elif isinstance(doc, list):
        assert isinstance(actual, list), where
        if doc and actual:
            _same_shape(doc[0], actual[0], f"{where}[0]")
    elif doc is not None and actual is not None:
        assert doc == actual, f"{where}: documented {doc}, got {actual}"


def test_inspect_json_matches_docs_json_md(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dataclasses import replace

    from ociassemble.image.assemble import ImageBuilder
    from ociassemble.image.cache import BlobCache
    from ociassemble.image.describe import describe_image
    from ociassemble.image.layer import LayerSource, build_layer

    examples = _doc_examples()
    assert {"inspect", "inspect --layer N --list"} <= set(examples), sorted(examples)
    cache = BlobCache(tmp_path / "cache")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    b = ImageBuilder(cache)
    b.add_layer(build_layer(cache, [LayerSource(src, "/app")]), "COPY src /app")
    b.config = replace(b.config, cmd=("python3",), env=("A=1",), labels={"org.opencontainers.image.created": "1970-01-01T00:00:00Z"}, exposed_ports=("5001/tcp",),
                       working_dir="/app", user="app", stop_signal="SIGTERM", entrypoint=("tini",))
    image = b.build()
    from ociassemble.transport.layout import write_layout

    write_layout(image, cache, tmp_path / "out", "v1")
    spec, cache_flag = f"oci:{tmp_path / 'out'}:v1", ["--cache-dir", str(cache.root)]
    capsys.readouterr()
    assert cli.main(["inspect", spec, "--json", *cache_flag]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc == describe_image(image, name=spec)
    _same_shape(_shape(examples["inspect"]), _shape(doc))
    assert cli.main(["inspect", spec, "--json", "--layer", "0", "--list", *cache_flag]) == 0
    listing = json.loads(capsys.readouterr().out)
    _same_shape(_shape(examples["inspect --layer N --list"]), _shape(listing))
    assert [e["path"] for e in listing["entries"]] == ["app", "app/a.txt"]

    from ociassemble.image.describe import describe_artifact
    from ociassemble.image.oci import Descriptor, Manifest
    from ociassemble.image.sbom import SPDX_MEDIA_TYPE

    blob = Descriptor(SPDX_MEDIA_TYPE, "sha256:" + "5" * 64, 10,
                      annotations={"org.opencontainers.image.title": "sbom.spdx.json"})
    config = Descriptor("application/vnd.oci.empty.v1+json", "sha256:" + "4" * 64, 2)
    subject = Descriptor(image.manifest.media_type, image.digest, len(image.manifest_bytes))
    sbom = Manifest(config, (blob,), annotations={"org.opencontainers.image.created": "1970-01-01T00:00:00Z"},
                    subject=subject, artifact_type=SPDX_MEDIA_TYPE)
    art = describe_artifact(sbom, sbom.to_bytes(), name="x")
    _same_shape(_shape(examples["inspect (an artifact)"]), _shape(art))
    assert art["kind"] == "artifact" and art["subject"]["digest"] == image.digest and art["totalSize"] == 10


def test_build_summary_says_which_layers_were_held_by_reference(tmp_path: Path) -> None:
    """An uncompressed layer of the user's files is held by reference, not compressed: the
    log line and ``work`` say so (they once counted it as compressed)."""
    import os
    import sys

    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "w.bin").write_bytes(os.urandom(17 << 20))  # past auto's small-layer gzip
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "t.txt").write_text("hello\n" * 2000)
    exe = str(Path(sys.executable).parent / "ociassemble")
    done = subprocess.run([exe, "build", "--plain", "--base", "scratch", "--layer", f"{tmp_path / 'weights'}:/w",
                           "--layer", f"{tmp_path / 'text'}:/t", "--cache-dir", str(tmp_path / "c"),
                           "-o", f"oci:{tmp_path / 'out'}", "--json"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    work = json.loads(done.stdout)["work"]
    assert (work["layers_compressed"], work["layers_held_by_reference"], work["layers_stored_uncompressed"]) == (1, 1, 0)
    assert sorted(layer["source"] for layer in json.loads(done.stdout)["layers"]) == ["compressed", "held"]
    quiet = subprocess.run([exe, "build", "--plain", "--base", "scratch", "--layer", f"{tmp_path / 'weights'}:/w",
                            "--cache-dir", str(tmp_path / "c2"), "-o", f"oci:{tmp_path / 'out2'}"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert "layers: 0 compressed, 1 held by reference, 0 reused" in quiet.stderr, quiet.stderr
