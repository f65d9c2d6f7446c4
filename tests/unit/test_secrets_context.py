"""Files named like secrets in the build context: refused before anything is written, with one
line naming them and both ways out (.ociassembleignore, --allow-secrets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ociassemble import cli
from ociassemble.errors import SecretsInContextError
from ociassemble.image.layer import Entry, LayerSource, scan_sources
from ociassemble.inputs.context import check_secrets, find_secrets, secrets_allowed

SECRET = [".env", ".env.production", "server.pem", "tls.key", "cert.p12", "id_rsa", "id_ed25519", ".netrc",
          ".pypirc", ".npmrc", ".git-credentials", ".docker/config.json", ".aws/credentials", "kubeconfig",
          "credentials.json", "credentials-prod.json", ".kube/config", ".ssh/deploy_key"]
HARMLESS = ["score.py", "model.pkl", ".env.example", "id_rsa.pub", "config.json", ".ssh/known_hosts",
            "requirements.txt", "keys.py", "docs/pem.md", ".env/lib/site.py"]


def _tree(root: Path, names: list[str]) -> Path:
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x\n")
    return root


@pytest.mark.parametrize("name", SECRET)
def test_secret_names_are_found_anywhere_in_the_tree(name: str) -> None:
    for path in (name, f"var/azureml-app/src/{name}", f"deep/er/{name}"):
        assert [e.name for e in find_secrets([Entry(path, "file", 0o644)])] == [path]


@pytest.mark.parametrize("name", HARMLESS)
def test_harmless_names_are_not(name: str) -> None:
    assert find_secrets([Entry(f"app/{name}", "file", 0o644)]) == []


def test_only_content_counts_not_a_symlink_or_folder_of_that_name() -> None:
    entries = [Entry("app/.env", "symlink", 0o777, linkname="/run/secrets/env"), Entry("app/id_rsa", "dir", 0o755),
               Entry("app/x.pem", "hardlink", 0o644, linkname="app/a")]
    assert [e.name for e in find_secrets(entries)] == ["app/x.pem"]


def test_refusal_is_one_line_naming_the_files_and_the_fixes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    _tree(tmp_path / "app", ["score.py", ".env", "keys/deploy.pem", "id_rsa.pub"])
    entries = scan_sources([LayerSource(Path("app"), "/app")])
    with pytest.raises(SecretsInContextError) as info:
        check_secrets(entries)
    message = str(info.value)
    assert "\n" not in message
    assert "2 file(s) named like secrets" in message and "app/.env" in message and "app/keys/deploy.pem" in message
    assert "id_rsa.pub" not in message and "score.py" not in message
    assert ".ociassembleignore" in message and "--allow-secrets" in message and "OCIASSEMBLE_ALLOW_SECRETS=1" in message
    warned: list[str] = []
    assert len(check_secrets(entries, allow=True, warn=warned.append)) == 2
    assert len(warned) == 1 and "warning" in warned[0] and "app/.env" in warned[0]


def test_a_long_list_is_cut_short(tmp_path: Path) -> None:
    _tree(tmp_path, [f"k{i:02}.pem" for i in range(20)])
    with pytest.raises(SecretsInContextError, match=r"20 file\(s\).* and 12 more;"):
        check_secrets(scan_sources([LayerSource(tmp_path, "/k")]))


def test_the_environment_variable_allows_them(monkeypatch) -> None:
    monkeypatch.delenv("OCIASSEMBLE_ALLOW_SECRETS", raising=False)
    assert not secrets_allowed() and secrets_allowed(True)
    monkeypatch.setenv("OCIASSEMBLE_ALLOW_SECRETS", "1")
    assert secrets_allowed()
    monkeypatch.setenv("OCIASSEMBLE_ALLOW_SECRETS", "0")
    assert not secrets_allowed()


# -- through the CLI --------------------------------------------------------------------------------


def _blobs(cache: Path) -> list[Path]:
    d = cache / "blobs" / "sha256"
    return sorted(d.iterdir()) if d.is_dir() else []


def test_cli_layer_with_a_secret_is_refused_before_anything_is_written(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("OCIASSEMBLE_ALLOW_SECRETS", raising=False)
    src = _tree(tmp_path / "ctx", ["app.py", ".aws/credentials"])
    out, cache = tmp_path / "image.tar", tmp_path / "cache"
    argv = ["build", "--plain", "--layer", f"{src}:/app", "-o", f"oci-archive:{out}", "--cache-dir", str(cache)]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ociassemble: error: 1 file(s) named like secrets")
    assert ".aws/credentials" in err[0]
    assert not out.exists() and _blobs(cache) == []

    assert cli.main([*argv, "--allow-secrets"]) == 0
    captured = capsys.readouterr()
    assert "warning: including 1 file(s) named like secrets" in captured.err and out.exists()

    monkeypatch.setenv("OCIASSEMBLE_ALLOW_SECRETS", "1")
    assert cli.main(argv) == 0


def test_cli_recipe_source_and_model_are_checked_and_the_ignore_file_is_the_fix(tmp_path: Path, capsys,
                                                                                monkeypatch) -> None:
    monkeypatch.delenv("OCIASSEMBLE_ALLOW_SECRETS", raising=False)
    project = _tree(tmp_path / "proj", [".env", "model/id_ed25519"])
    (project / "score.py").write_text("def init():\n    pass\n\n\ndef run(data):\n    return data\n")
    cache = tmp_path / "cache"
    argv = ["build", str(project), "--model", str(project / "model"), "--cache-dir", str(cache),
            "-o", f"oci-archive:{tmp_path / 'image.tar'}"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "2 file(s) named like secrets" in err and ".env" in err and "model/id_ed25519" in err
    assert _blobs(cache) == []
    (project / ".ociassembleignore").write_text(".env\n")
    (project / "model" / "id_ed25519").unlink()
    assert cli.main(argv) == 1  # past the check: this machine has no base in that cache
    err = capsys.readouterr().err
    assert "secrets" not in err and "no base image" in err


def test_cli_help_documents_the_flag() -> None:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["build"]
    assert "--allow-secrets" in sub.format_help()


# -- the source side: a credential file is refused whatever its in-image name (issue 23) ------------

#: Fake credentials in the shape of the real ones (made up here: none of them opens anything).
_AWS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzzzzzzzzz"
CREDENTIAL_CONTENTS = {
    "a docker config with registry logins":
        '{\n\t"auths": {\n\t\t"registry.example.com": {\n\t\t\t"auth": "YWxpY2U6czNjcmV0LXBhc3M="\n\t\t}\n\t}\n}\n',
    "an AWS secret access key":
        f"[default]\naws_access_key_id = AKIAZZZZZZZZZZZZZZZZ\naws_secret_access_key = {_AWS_KEY}\n",
    "a kubeconfig client key":
        "apiVersion: v1\nkind: Config\nusers:\n- name: admin\n  user:\n    client-certificate-data: LS0tLS1CRUdJTg==\n"
        "    client-key-data: LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQo=\n",
    "a private key": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ==\n"
                     "-----END OPENSSH PRIVATE KEY-----\n",
}
#: Files that mention the same words but hold no credential: code that reads one, a docker
#: config with a credential helper only, a public key, documentation.
HARMLESS_CONTENTS = {
    "score.py": 'import boto3, os\ns3 = boto3.client("s3",\n    aws_secret_access_key=os.environ["AWS_SECRET"])\n'
                'PEM = "-----BEGIN PRIVATE KEY-----"  # the marker the parser looks for\n',
    "config.json": '{"auths": {"registry.example.com": {}}, "credsStore": "pass"}\n',
    "cert.txt": "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n",
    "README.md": "Put your kubeconfig's client-key-data and aws_secret_access_key in the CI secrets.\n",
}


@pytest.mark.parametrize("what", sorted(CREDENTIAL_CONTENTS))
def test_a_file_holding_a_credential_is_refused_whatever_its_name(tmp_path: Path, what: str) -> None:
    src = tmp_path / "model"
    src.mkdir()
    (src / "settings.yaml").write_text(CREDENTIAL_CONTENTS[what])
    (src / "weights.bin").write_bytes(b"\0" * 1000)
    with pytest.raises(SecretsInContextError) as info:
        check_secrets(scan_sources([LayerSource(src, "/var/models")]))
    message = str(info.value)
    assert "\n" not in message and f"settings.yaml (holds {what})" in message and "weights.bin" not in message
    assert "--allow-secrets" in message


def test_files_that_only_mention_credentials_are_let_through(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    for name, text in HARMLESS_CONTENTS.items():
        (tmp_path / "app" / name).write_text(text)
    assert check_secrets(scan_sources([LayerSource(tmp_path / "app", "/app")])) == []


def test_only_the_first_bytes_are_read(tmp_path: Path) -> None:
    """A multi-GB model is not read to look for secrets: a key past the first 64 KiB is not seen
    (a credential file is small; its secret is at its start)."""
    from ociassemble.inputs.context import SNIFF_BYTES

    big = tmp_path / "m" / "weights.bin"
    big.parent.mkdir()
    with open(big, "wb") as f:
        f.write(b"\0" * SNIFF_BYTES)
        f.write(CREDENTIAL_CONTENTS["a private key"].encode())
    assert check_secrets(scan_sources([LayerSource(big.parent, "/m")])) == []
    small = tmp_path / "m" / "notes"
    small.write_bytes(b"x" * (SNIFF_BYTES - 200) + b"\n" + CREDENTIAL_CONTENTS["a private key"].encode()[:150])
    assert [e.name for e in find_secrets(scan_sources([LayerSource(small, "/m/")]))] == ["m/notes"]


@pytest.mark.parametrize("where", [".docker/config.json", ".aws/credentials", ".kube/config"])
def test_cli_model_or_layer_from_a_credential_folder_is_refused(tmp_path: Path, capsys, monkeypatch, where: str) -> None:
    """``-m ~/.docker/config.json`` (in the image: a model file named config.json) and ``--layer
    ~/.docker:/opt/d`` (in the image: /opt/d/config.json) went into the image silently on main."""
    monkeypatch.delenv("OCIASSEMBLE_ALLOW_SECRETS", raising=False)
    home = tmp_path / "home"
    cred = home / where
    cred.parent.mkdir(parents=True)
    cred.write_text("x = 1\n")  # named, not sniffed: the host path alone is the reason
    project = tmp_path / "proj"
    project.mkdir()
    (project / "score.py").write_text("def init():\n    pass\n\n\ndef run(data):\n    return data\n")
    cache = tmp_path / "cache"
    out = tmp_path / "image.tar"
    for argv in (["build", str(project), "--model", str(cred)],
                 ["build", "--plain", "--layer", f"{cred.parent}:/opt/d"]):
        assert cli.main([*argv, "--cache-dir", str(cache), "-o", f"oci-archive:{out}"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("ociassemble: error: 1 file(s) named like secrets or holding "
                                                   "credentials"), err
        assert f"{cred} (a credential file)" in err[0]
        assert not out.exists() and _blobs(cache) == []
    assert cli.main(["build", "--plain", "--layer", f"{cred.parent}:/opt/d", "--allow-secrets", "--cache-dir",
                     str(cache), "-o", f"oci-archive:{out}"]) == 0
    assert "warning: including 1 file(s)" in capsys.readouterr().err and out.exists()


def test_cli_a_docker_config_under_another_name_is_refused_by_its_content(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("OCIASSEMBLE_ALLOW_SECRETS", raising=False)
    layer = tmp_path / "opt"
    layer.mkdir()
    (layer / "registry.json").write_text(CREDENTIAL_CONTENTS["a docker config with registry logins"])
    cache = tmp_path / "cache"
    assert cli.main(["build", "--plain", "--layer", f"{layer}:/opt", "--cache-dir", str(cache),
                     "-o", f"oci-archive:{tmp_path / 'i.tar'}"]) == 1
    err = capsys.readouterr().err
    assert "registry.json (holds a docker config with registry logins)" in err and _blobs(cache) == []
