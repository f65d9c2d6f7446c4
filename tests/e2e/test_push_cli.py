"""The CI user's path: `ociassemble push REF…` builds the scoring image from the cache and
pushes it to a real registry; tools we did not write read it back; a re-push sends nothing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ociassemble.image.cache import BlobCache
from tests.conftest import run_cli
from tests.integration.registry_fixtures import TEST_PASSWORD, TEST_USER, make_cert, start_registry, stop_pid


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    reg = start_registry(tmp_path_factory.mktemp("registry-cli"))
    yield reg
    stop_pid(reg.proc)


def test_push_builds_pushes_and_repushes_nothing(registry, example_build: dict, trained_example: Path,  # type: ignore[no-untyped-def]
                                                 debian_base: str, shared_cache: BlobCache, tmp_path: Path) -> None:
    refs = [f"{registry.host}/team/diabetes:1.0", f"{registry.host}/team/diabetes:latest"]
    args = ["push", *refs, "--base", debian_base, "--json", "--cache-dir", str(shared_cache.root),
            "--digest-file", str(tmp_path / "digest")]
    first = run_cli(*args, cwd=trained_example)
    assert first.returncode == 0, first.stderr
    pushed = json.loads(first.stdout)
    assert pushed["digest"] == example_build["digest"]  # the same image `build` wrote
    assert (tmp_path / "digest").read_text().strip() == pushed["digest"]
    for ref in refs:
        out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{ref}"], capture_output=True,
                             text=True, check=True).stdout
        assert json.loads(out)["Digest"] == pushed["digest"]
    again = run_cli(*args, cwd=trained_example)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["bytes_uploaded"] == 0
    # pull it back into a layout through our own client; inspect agrees on every layer
    pulled = run_cli("pull", refs[0], f"oci:{tmp_path / 'pulled'}:v1", "--json", "--cache-dir", str(tmp_path / "c"))
    assert pulled.returncode == 0, pulled.stderr
    a = json.loads(run_cli("inspect", f"oci:{tmp_path / 'pulled'}:v1", "--json", "--cache-dir", str(tmp_path / "c")).stdout)
    b = json.loads(run_cli("inspect", f"oci-archive:{example_build['path']}:latest", "--json",
                           "--cache-dir", str(tmp_path / "c2")).stdout)
    assert a["digest"] == b["digest"] and a["layers"] == b["layers"]


def test_push_from_an_archive_with_wrong_password_is_one_line(tmp_path: Path, example_build: dict) -> None:
    work = tmp_path / "tls"
    work.mkdir()
    cert, key = make_cert(work, "127.0.0.1")
    htpasswd = work / "htpasswd"
    htpasswd.write_bytes(subprocess.run(["htpasswd", "-Bbn", TEST_USER, TEST_PASSWORD], capture_output=True,
                                        check=True).stdout)
    reg = start_registry(work, tls=(cert, key), auth={"htpasswd": {"realm": "r", "path": str(htpasswd)}})
    try:
        wrong = "not-the-password-8731"
        proc = run_cli("push", "--from", f"oci-archive:{example_build['path']}:latest", f"{reg.host}/x/y:1",
                       "-u", TEST_USER, "--password-stdin", "--ca-cert", str(cert), "--cache-dir", str(tmp_path / "c"),
                       input=wrong + "\n", env={"DOCKER_CONFIG": str(tmp_path / "dc")})
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("ociassemble: error: ")
        assert "Traceback" not in proc.stderr and wrong not in proc.stderr + proc.stdout
        ok = run_cli("push", "--from", f"oci-archive:{example_build['path']}:latest", f"{reg.host}/x/y:1",
                     "-u", TEST_USER, "--password-stdin", "--ca-cert", str(cert), "--cache-dir", str(tmp_path / "c"),
                     input=TEST_PASSWORD + "\n", env={"DOCKER_CONFIG": str(tmp_path / "dc")})
        assert ok.returncode == 0, ok.stderr
        assert TEST_PASSWORD not in ok.stderr + ok.stdout
        no_ca = run_cli("push", "--from", f"oci-archive:{example_build['path']}:latest", f"{reg.host}/x/y:2",
                        "-u", TEST_USER, "--password-stdin", "--cache-dir", str(tmp_path / "c"),
                        input=TEST_PASSWORD + "\n", env={"DOCKER_CONFIG": str(tmp_path / "dc")})
        assert no_ca.returncode == 2 and "certificate" in no_ca.stderr.lower(), no_ca.stderr
    finally:
        stop_pid(reg.proc)


def test_a_digest_file_that_cannot_be_written_says_the_image_was_pushed(registry, example_build: dict,  # type: ignore[no-untyped-def]
                                                                         tmp_path: Path) -> None:
    taken = tmp_path / "digest"
    taken.mkdir()  # a folder where the file should go: the rename over it fails, after the push
    ref = f"{registry.host}/team/digest-file:1"
    proc = run_cli("push", "--from", f"oci-archive:{example_build['path']}:latest", ref, "--digest-file", str(taken),
                   "--sbom", "--cache-dir", str(tmp_path / "c"))
    assert proc.returncode == 1, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line == (f"ociassemble: error: pushed {example_build['digest']} as {ref}, but --digest-file {taken} could "
                    "not be written (Is a directory): write it from that digest, or push again"), line
    assert "Traceback" not in proc.stderr and list(taken.iterdir()) == [] and not list(tmp_path.glob(".digest.tmp-*"))
    out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{ref}"], capture_output=True,
                         text=True, check=True).stdout
    assert json.loads(out)["Digest"] == example_build["digest"]
    # what goes beside the image went too: the failure is told last
    sbom = f"docker://{registry.host}/team/digest-file:sha256-{example_build['digest'].split(':')[1]}.sbom"
    subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", sbom], capture_output=True, check=True)
