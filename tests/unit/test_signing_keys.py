"""Signing's pure parts: cosign's key box against go-securesystemslib's own vectors, the key formats
we read and refuse, the payload's exact bytes, DSSE's encoding, the CI run from the environment."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ociassemble.cli import main
from ociassemble.errors import InputError, UnsupportedKeyError, WrongPasswordError
from ociassemble.sign.ci import ci_run
from ociassemble.sign.dsse import Envelope, pae, sign_envelope
from ociassemble.sign.encrypted import open_box, seal_box
from ociassemble.sign.keys import generate_key_pair, load_private_key, load_public_key
from ociassemble.sign.simplesigning import parse_payload, signing_payload

#: go-securesystemslib's encrypted/encrypted_test.go kdfVectors (Apache-2.0): the JSON of the Go
#: []byte "reallyimportant" (a base64 string) sealed under "supersecret" with each of the three
#: scrypt strengths, by the Go code cosign uses (its test reads them back with Unmarshal).
GO_VECTORS = [
    b'{"kdf":{"name":"scrypt","params":{"N":32768,"r":8,"p":1},"salt":"WO3mVvyTwJ9vwT5/Tk5OW5WPIBUofMjcpEfrLnfY4uA="},'
    b'"cipher":{"name":"nacl/secretbox","nonce":"tCy7HcTFr4uxv4Nrg/DWmncuZ148U1MX"},'
    b'"ciphertext":"08n43p5G5yviPEZpO7tPPF4aZQkWiWjkv4taFdhDBA0tamKH4nw="}',
    b'{"kdf":{"name":"scrypt","params":{"N":65536,"r":8,"p":1},"salt":"FhzPOt9/bJG4PTq6lQ6ecG6GzaOuOy/ynG5+yRiFlNs="},'
    b'"cipher":{"name":"nacl/secretbox","nonce":"aw1ng1jHaDz/tQ7V2gR9O2+IGQ8xJEuE"},'
    b'"ciphertext":"HycvuLZL4sYH0BrYTh4E/H20VtAW6u5zL5Pr+IBjYLYnCPzDkq8="}',
    b'{"kdf":{"name":"scrypt","params":{"N":131072,"r":8,"p":1},"salt":"m38E3kouJTtiheLQN22NQ8DTito5hrjpUIskqcd375k="},'
    b'"cipher":{"name":"nacl/secretbox","nonce":"Y6PM13yA+o44pE/W1ZBwczeGnTV/m9Zc"},'
    b'"ciphertext":"6H8sqj1K6B6yDjtH5AQ6lbFigg/C2yDDJc4rYJ79w9aVPImFIPI="}',
]


@pytest.mark.parametrize("vector", GO_VECTORS, ids=["legacy", "standard", "owasp"])
def test_go_securesystemslib_vectors_open(vector: bytes) -> None:
    opened = open_box(vector, b"supersecret", "vector")
    assert base64.b64decode(json.loads(opened)) == b"reallyimportant"
    with pytest.raises(WrongPasswordError, match="wrong password"):
        open_box(vector, b"supersecreT", "vector")


def test_box_refuses_parameters_no_reader_accepts() -> None:
    doc = json.loads(GO_VECTORS[0])
    doc["kdf"]["params"]["N"] = 1024
    with pytest.raises(InputError, match="N=1024"):
        open_box(json.dumps(doc).encode(), b"supersecret", "weak.key")


def test_seal_is_what_go_reads() -> None:
    """Our box has the Go struct's fields and the legacy parameters every reader takes."""
    doc = json.loads(seal_box(b"x", b"pw"))
    assert doc["kdf"]["name"] == "scrypt" and doc["kdf"]["params"] == {"N": 32768, "r": 8, "p": 1}
    assert len(base64.b64decode(doc["kdf"]["salt"])) == 32 and len(base64.b64decode(doc["cipher"]["nonce"])) == 24
    assert doc["cipher"]["name"] == "nacl/secretbox"


def test_keygen_pair_round_trip_and_deterministic_signatures() -> None:
    pair = generate_key_pair(b"pw")
    assert pair.private_pem.startswith(b"-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n")
    key = load_private_key(pair.private_pem, b"pw", "cosign.key")
    pub = load_public_key(pair.public_pem, "cosign.pub")
    assert pub.keyid == key.public.keyid
    sig = key.sign(b"payload")
    assert pub.verify(sig, b"payload") and not pub.verify(sig, b"other")
    assert key.sign(b"payload") == sig  # RFC 6979: pushing again signs the same bytes
    with pytest.raises(WrongPasswordError):
        load_private_key(pair.private_pem, b"nope", "cosign.key")
    # cosign 2.x names the same box ENCRYPTED SIGSTORE PRIVATE KEY
    renamed = pair.private_pem.replace(b"COSIGN", b"SIGSTORE")
    assert load_private_key(renamed, b"pw", "cosign.key").public.keyid == pub.keyid


def test_plain_pem_keys() -> None:
    k = ec.generate_private_key(ec.SECP256R1())
    expected = load_public_key(k.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo), "p").keyid
    for fmt, enc, password in ((serialization.PrivateFormat.PKCS8, serialization.NoEncryption(), None),
                               (serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption(), None),
                               (serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw"), b"pw")):
        pem = k.private_bytes(serialization.Encoding.PEM, fmt, enc)
        assert load_private_key(pem, password, "key.pem").public.keyid == expected
    encrypted = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.BestAvailableEncryption(b"pw"))
    with pytest.raises(WrongPasswordError):
        load_private_key(encrypted, b"wrong", "key.pem")


@pytest.mark.parametrize("key,said", [
    (lambda: rsa.generate_private_key(65537, 2048), "an RSA 2048-bit key"),
    (lambda: ed25519.Ed25519PrivateKey.generate(), "an Ed25519 key"),
    (lambda: ec.generate_private_key(ec.SECP384R1()), "an ECDSA secp384r1 key"),
], ids=["rsa", "ed25519", "p384"])
def test_unsupported_keys_are_refused_in_one_line(key, said) -> None:  # type: ignore[no-untyped-def]
    k = key()
    pem = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(UnsupportedKeyError) as info:
        load_private_key(pem, None, "signing key k.pem")
    assert str(info.value) == (f"signing key k.pem is {said}: ociassemble signs and verifies with ECDSA P-256 keys "
                               "(cosign's default) only; make one with 'ociassemble keygen' or 'cosign generate-key-pair'")
    pub = k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(UnsupportedKeyError, match=said):
        load_public_key(pub, "k.pub")


def test_payload_is_cosigns_bytes() -> None:
    digest = "sha256:" + "ab" * 32
    assert signing_payload("registry.example.com/team/app", digest) == (
        b'{"critical":{"identity":{"docker-reference":"registry.example.com/team/app"},"image":'
        b'{"docker-manifest-digest":"sha256:' + b"ab" * 32 + b'"},"type":"cosign container image signature"},'
        b'"optional":null}')
    claim = parse_payload(signing_payload("r/a", digest))
    assert claim is not None and (claim.docker_reference, claim.digest) == ("r/a", digest)
    assert parse_payload(b'{"critical":{"type":"something else"}}') is None


def test_dsse_pae_and_envelope() -> None:
    # the DSSE specification's own example
    assert pae("http://example.com/HelloWorld", b"hello world") == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    key = load_private_key(generate_key_pair(b"").private_pem, b"", "k")
    env = Envelope.parse(sign_envelope(b'{"a":1}', key))
    assert env is not None and env.payload == b'{"a":1}' and env.verified_by(key.public)
    other = load_private_key(generate_key_pair(b"").private_pem, b"", "k")
    assert not env.verified_by(other.public)


def test_ci_runs() -> None:
    assert ci_run({}) is None
    gh = ci_run({"GITHUB_ACTIONS": "true", "GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "o/r",
                 "GITHUB_RUN_ID": "7", "GITHUB_SHA": "c0ffee", "GITHUB_REF": "refs/tags/v1",
                 "GITHUB_WORKFLOW_REF": "o/r/.github/workflows/b.yml@refs/tags/v1"})
    assert gh is not None and gh.builder_id == "https://github.com/o/r/.github/workflows/b.yml@refs/tags/v1"
    assert gh.invocation_id == "https://github.com/o/r/actions/runs/7/attempts/1" and gh.commit == "c0ffee"
    gl = ci_run({"GITLAB_CI": "true", "CI_SERVER_URL": "https://gitlab.com", "CI_PROJECT_PATH": "g/p", "CI_RUNNER_ID": "3",
                 "CI_JOB_URL": "https://gitlab.com/g/p/-/jobs/9", "CI_COMMIT_SHA": "beef",
                 "CI_PROJECT_URL": "https://gitlab.com/g/p", "CI_COMMIT_REF_NAME": "main"})
    assert gl is not None and gl.builder_id == "https://gitlab.com/g/p/-/runners/3" and gl.source == "git+https://gitlab.com/g/p@main"
    az = ci_run({"TF_BUILD": "True", "SYSTEM_COLLECTIONURI": "https://dev.azure.com/org/", "SYSTEM_TEAMPROJECT": "proj",
                 "SYSTEM_DEFINITIONID": "12", "BUILD_BUILDID": "345", "BUILD_SOURCEVERSION": "f00d",
                 "BUILD_REPOSITORY_URI": "https://dev.azure.com/org/proj/_git/repo", "BUILD_SOURCEBRANCH": "refs/heads/main"})
    assert az is not None and az.invocation_id == "https://dev.azure.com/org/proj/_build/results?buildId=345"
    assert az.builder_id == "https://dev.azure.com/org/proj/_build?definitionId=12" and az.commit == "f00d"


def test_keyless_says_what_is_missing_in_one_line(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIGSTORE_ID_TOKEN", raising=False)
    monkeypatch.delenv("ACTIONS_ID_TOKEN_REQUEST_URL", raising=False)
    try:
        import sigstore  # noqa: F401
        expected = "--keyless found no OIDC identity token"
    except ImportError:
        expected = "--keyless needs the sigstore package"
    assert main(["push", "--keyless", "registry.example.com/team/app:1", "--from", "oci:/nonexistent"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err


def test_sign_flags_refused_before_any_work(tmp_path, capsys: pytest.CaptureFixture[str],  # type: ignore[no-untyped-def]
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OCIASSEMBLE_SIGN_KEY", raising=False)
    assert main(["push", "registry.example.com/team/app:1", "--from", "oci:/nonexistent", "--provenance"]) == 1
    assert "--provenance is signed with the signing key" in capsys.readouterr().err
    assert main(["push", "registry.example.com/team/app:1", "--from", "oci:/nonexistent",
                 "--sign-key", str(tmp_path / "missing.key")]) == 1
    assert "signing key" in capsys.readouterr().err
    assert main(["verify", "registry.example.com/team/app:1", "--key", str(tmp_path / "x.pub"), "--against", "oci:x"]) == 1
    assert "give one" in capsys.readouterr().err


def test_sign_key_in_the_config_is_relative_to_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ociassemble.azureml.project import load_project

    (tmp_path / "ociassemble.toml").write_text('sign_key = "keys/cosign.key"\n')
    assert load_project(tmp_path).sign_key == tmp_path / "keys" / "cosign.key"
