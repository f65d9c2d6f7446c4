"""`ociassemble inspect` on every transport, `--layer N --list`, the SBOM on build and push, and
what reaches a pipe versus a terminal (run as a user runs it: a separate process)."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from ociassemble.image.assemble import Image, ImageBuilder
from ociassemble.image.cache import BlobCache
from ociassemble.image.layer import LayerSource, build_layer
from ociassemble.image.sbom import SPDX_MEDIA_TYPE, sbom_tag
from ociassemble.inputs.base import load_base
from ociassemble.registry.push import push_image
from ociassemble.transport.archive import write_docker_archive, write_oci_archive
from ociassemble.transport.layout import write_layout
from tests.conftest import run_cli

DPKG_STATUS = """Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9+deb12u4

Package: python3.11-minimal
Status: install ok installed
Architecture: amd64
Version: 3.11.2-6+deb12u1

Package: removed-one
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0
"""


def _rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    if root.exists():
        return root
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text('PRETTY_NAME="tiny"\nID=debian\n')
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(DPKG_STATUS)
    info = root / "var/azureml-deps" / "tiny_pkg-1.2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny_pkg\nVersion: 1.2.3\n\n")
    (info / "RECORD").write_text("tiny_pkg/__init__.py,sha256=abc,0\n")
    return root


@pytest.fixture
def image(tmp_path: Path, cache: BlobCache) -> Image:
    base = load_base(f"rootfs:{_rootfs(tmp_path)}", cache)
    app = tmp_path / "app"
    (app / "pkg").mkdir(parents=True)
    (app / "main.py").write_text("print('hi')\n")
    (app / "pkg" / "data.bin").write_bytes(os.urandom(4096))
    os.symlink("main.py", app / "entry.py")
    b = ImageBuilder(cache, base)
    b.add_layer(build_layer(cache, [LayerSource(app, "/opt/app")]), "COPY app /opt/app")
    b.config = replace(b.config.with_env({"MODE": "test"}), cmd=("python3", "/opt/app/main.py"),
                       exposed_ports=("5001/tcp",), labels={"org.example.team": "ml"})
    return b.build()


def _inspect(*args: str, cache_dir: Path) -> dict:
    proc = run_cli("inspect", *args, "--json", "--cache-dir", str(cache_dir))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _check_doc(doc: dict, image: Image) -> None:
    assert doc["schemaVersion"] == 1
    assert doc["platform"] == {"os": "linux", "architecture": image.config.platform.architecture, "variant": None}
    cfg = doc["config"]
    assert cfg["cmd"] == ["python3", "/opt/app/main.py"]
    assert "MODE=test" in cfg["env"]
    assert cfg["exposedPorts"] == ["5001/tcp"]
    assert cfg["labels"] == {"org.example.team": "ml"}
    assert [l["diffID"] for l in doc["layers"]] == list(image.config.diff_ids)
    assert [l["createdBy"] for l in doc["layers"]][1] == "COPY app /opt/app"
    assert doc["layers"][0]["createdBy"].startswith("rootfs directory")
    assert all(l["size"] > 0 and l["digest"].startswith("sha256:") for l in doc["layers"])
    assert doc["totalSize"] == sum(l["size"] for l in doc["layers"])


def _check_listing(entries: list[dict]) -> None:
    by_path = {e["path"]: e for e in entries}
    assert by_path["opt/app/main.py"] == {"path": "opt/app/main.py", "type": "file", "size": 12, "mode": 0o644,
                                          "uid": 0, "gid": 0, "linkname": None}
    assert by_path["opt/app/pkg/data.bin"]["size"] == 4096
    assert by_path["opt/app/entry.py"]["type"] == "symlink" and by_path["opt/app/entry.py"]["linkname"] == "main.py"
    assert by_path["opt/app/pkg"]["type"] == "dir"


@pytest.mark.parametrize("transport", ["oci", "oci-archive", "docker-archive"])
def test_inspect_local_transports(tmp_path: Path, cache: BlobCache, image: Image, transport: str) -> None:
    if transport == "oci":
        write_layout(image, cache, tmp_path / "layout", "v1")
        spec = f"oci:{tmp_path / 'layout'}:v1"
    elif transport == "oci-archive":
        write_oci_archive(image, cache, tmp_path / "image.tar", "v1")
        spec = f"oci-archive:{tmp_path / 'image.tar'}:v1"
    else:
        write_docker_archive(image, cache, tmp_path / "docker.tar", "example/app:1")
        spec = f"docker-archive:{tmp_path / 'docker.tar'}"
    fresh = tmp_path / "fresh-cache"
    doc = _inspect(spec, cache_dir=fresh)
    _check_doc(doc, image)
    assert doc["name"] == spec
    if transport != "docker-archive":  # a docker-archive keeps no compressed digests to preserve
        assert doc["digest"] == image.digest
    listing = _inspect(spec, "--layer", "1", "--list", cache_dir=fresh)
    assert listing["layer"]["diffID"] == image.config.diff_ids[1]
    _check_listing(listing["entries"])
    # the table form: one line per entry, tar tv style
    table = run_cli("inspect", spec, "--layer", "1", "--list", "--cache-dir", str(fresh))
    assert table.returncode == 0, table.stderr
    assert any(line.startswith("lrwxrwxrwx") and line.endswith("opt/app/entry.py -> main.py")
               for line in table.stdout.splitlines())
    text = run_cli("inspect", spec, "--cache-dir", str(fresh))
    assert "COPY app /opt/app" in text.stdout and "5001/tcp" in text.stdout


def test_inspect_registry_fetches_manifest_and_config_only(plain_registry, tmp_path: Path, cache: BlobCache,
                                                           image: Image, options) -> None:
    ref = f"{plain_registry.host}/cli/inspect:1"
    push_image(image, cache, [ref], options=options)
    fresh = BlobCache(tmp_path / "fresh")
    doc = _inspect(ref, cache_dir=fresh.root)
    _check_doc(doc, image)
    assert doc["digest"] == image.digest
    layer_digests = [d.digest for d in image.manifest.layers]
    assert not any(fresh.has(d) for d in layer_digests), "inspect downloaded layers"
    assert fresh.has(image.manifest.config.digest)
    listing = _inspect(ref, "--layer", "1", "--list", cache_dir=fresh.root)
    _check_listing(listing["entries"])
    assert [fresh.has(d) for d in layer_digests] == [False, True], "--layer 1 --list fetches that layer only"


def test_inspect_errors_have_their_exit_codes(plain_registry, tmp_path: Path, cache: BlobCache, image: Image) -> None:
    missing = run_cli("inspect", f"{plain_registry.host}/cli/absent:1", "--cache-dir", str(tmp_path / "c"))
    assert missing.returncode == 2, missing.stderr  # a registry said no
    assert missing.stderr.startswith("ociassemble: error: ") and len(missing.stderr.strip().splitlines()) == 1
    write_layout(image, cache, tmp_path / "layout", "v1")
    bad = run_cli("inspect", f"oci:{tmp_path / 'layout'}:v1", "--layer", "7", "--list", "--cache-dir", str(tmp_path / "c"))
    assert bad.returncode == 1 and "numbered 0 to 1" in bad.stderr
    nolayer = run_cli("inspect", f"oci:{tmp_path / 'layout'}:v1", "--list", "--cache-dir", str(tmp_path / "c"))
    assert nolayer.returncode == 1 and "--list needs --layer" in nolayer.stderr



@pytest.mark.parametrize("transport", ["oci-archive", "docker-archive"])
def test_an_archive_given_without_its_prefix_is_read_as_one(plain_registry, tmp_path: Path, cache: BlobCache,
                                                             image: Image, transport: str) -> None:
    """``inspect image.tar`` and ``push --from image.tar`` read the archive (its members say
    which kind): it was taken for a rootfs tarball and refused as not an image."""
    path = tmp_path / "image.tar"
    if transport == "oci-archive":
        write_oci_archive(image, cache, path, "v1")
    else:
        write_docker_archive(image, cache, path, "example/app:1")
    bare, prefixed = _inspect(str(path), cache_dir=tmp_path / "c"), _inspect(f"{transport}:{path}", cache_dir=tmp_path / "c2")
    assert {**bare, "name": ""} == {**prefixed, "name": ""}
    _check_doc(bare, image)
    pushed = run_cli("push", "--from", str(path), f"{plain_registry.host}/bare/{transport}:1", "--json",
                     "--cache-dir", str(tmp_path / "c3"))
    assert pushed.returncode == 0, pushed.stderr
    if transport == "oci-archive":
        assert json.loads(pushed.stdout)["digest"] == image.digest


def test_a_missing_tarball_is_no_such_file_not_a_registry_lookup(tmp_path: Path) -> None:
    proc = run_cli("inspect", "nosuch.tar", "--cache-dir", str(tmp_path / "c"), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "ociassemble: error: nosuch.tar: no such file or directory; check the path (a registry image: docker://nosuch.tar)"]

# -- SBOM --------------------------------------------------------------------------------------


def _big_app(tmp_path: Path) -> Path:
    app = tmp_path / "bigapp"
    if app.exists():
        return app
    app.mkdir()
    (app / "weights.bin").write_bytes(os.urandom(6 << 20))  # several upload chunks and a visible bar
    (app / "main.py").write_text("print('hi')\n")
    return app


def _plain_build_args(tmp_path: Path) -> list[str]:
    return ["--plain", "--base", f"rootfs:{_rootfs(tmp_path)}", "--layer", f"{_big_app(tmp_path)}:/opt/app",
            "--cmd", "python3 /opt/app/main.py", "--cache-dir", str(tmp_path / "c")]


def test_build_sbom_is_written_beside_the_output(tmp_path: Path) -> None:
    out = tmp_path / "image.tar"
    proc = run_cli("build", *_plain_build_args(tmp_path), "-o", f"oci-archive:{out}:v1", "--sbom", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    path = Path(result["sbom"])
    assert path == tmp_path / "image.tar.sbom.spdx.json"
    doc = json.loads(path.read_text())
    assert doc["spdxVersion"] == "SPDX-2.3"
    purls = sorted(r["referenceLocator"] for p in doc["packages"] for r in p.get("externalRefs", []))
    assert "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64" in purls
    assert "pkg:pypi/tiny-pkg@1.2.3" in purls
    assert not any("removed-one" in p for p in purls)
    assert doc["packages"][0]["versionInfo"] == result["digest"]
    # the same build again gives the same SBOM bytes
    first = path.read_bytes()
    again = run_cli("build", *_plain_build_args(tmp_path), "-o", f"oci-archive:{out}:v1", "--sbom", "-q")
    assert again.returncode == 0, again.stderr
    assert path.read_bytes() == first


def test_push_sbom_is_an_artifact_referring_to_the_image(plain_registry, tmp_path: Path) -> None:
    ref = f"{plain_registry.host}/cli/sbom:1"
    proc = run_cli("push", ref, *_plain_build_args(tmp_path), "--sbom", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    digest = result["digest"]
    assert result["sbom"]["refs"] == [f"{plain_registry.host}/cli/sbom:{sbom_tag(digest)}"]
    base = f"http://{plain_registry.host}/v2/cli/sbom"
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    resp = requests.get(f"{base}/manifests/{sbom_tag(digest)}", headers=accept, timeout=10)
    assert resp.status_code == 200, resp.text
    manifest = resp.json()
    assert manifest["subject"]["digest"] == digest
    assert manifest["artifactType"] == SPDX_MEDIA_TYPE
    assert manifest["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    assert resp.headers["Docker-Content-Digest"] == result["sbom"]["digest"]
    layer = manifest["layers"][0]
    assert layer["mediaType"] == SPDX_MEDIA_TYPE
    blob = requests.get(f"{base}/blobs/{layer['digest']}", timeout=10)
    doc = blob.json()
    assert doc["packages"][0]["versionInfo"] == digest
    assert any(p["name"] == "libc6" for p in doc["packages"])
    # the image itself is untouched by the SBOM: its tag still names it
    image = requests.get(f"{base}/manifests/1", headers=accept, timeout=10)
    assert image.headers["Docker-Content-Digest"] == digest

    # inspect shows the artifact for what it is; what needs an image says why it cannot use it
    sbom_ref = result["sbom"]["refs"][0]
    shown = run_cli("inspect", sbom_ref, "--json")
    assert shown.returncode == 0, shown.stderr
    art = json.loads(shown.stdout)
    assert art["kind"] == "artifact" and art["artifactType"] == SPDX_MEDIA_TYPE
    assert art["digest"] == result["sbom"]["digest"] and art["subject"]["digest"] == digest
    assert [b["digest"] for b in art["blobs"]] == [layer["digest"]] and art["totalSize"] == layer["size"]
    human = run_cli("inspect", sbom_ref)
    assert f"ArtifactType: {SPDX_MEDIA_TYPE}" in human.stdout and f"Subject:      {digest}" in human.stdout
    assert json.loads(run_cli("inspect", ref, "--json").stdout)["kind"] == "image"
    for argv in (["inspect", sbom_ref, "--layer", "0"], ["build", "--plain", "--base", f"docker://{sbom_ref}",
                                                         "-o", f"oci:{tmp_path / 'never'}"]):
        refused = run_cli(*argv)
        assert refused.returncode == 1 and "is an OCI artifact" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "never").exists()


# -- what reaches a pipe, what reaches a terminal ----------------------------------------------


def test_no_progress_bar_or_ansi_reaches_a_pipe(plain_registry, tmp_path: Path) -> None:
    ref = f"{plain_registry.host}/cli/pipe:1"
    env = {"TERM": "xterm-256color", "FORCE_COLOR": "1", "CLICOLOR_FORCE": "1"}  # tempting, and still no colour
    proc = run_cli("push", ref, *_plain_build_args(tmp_path), "--sbom", env=env)
    assert proc.returncode == 0, proc.stderr
    for stream in (proc.stdout, proc.stderr):
        assert "\x1b" not in stream and "\r" not in stream
    assert proc.stdout.strip().startswith("sha256:") and len(proc.stdout.strip().splitlines()) == 1
    lines = proc.stderr.strip().splitlines()
    assert all(line.startswith("ociassemble: ") for line in lines), lines
    assert any(line.startswith("ociassemble: uploaded sha256:") for line in lines)
    assert any(line.startswith("ociassemble: layer ") for line in lines)
    # --json: one JSON document on stdout and nothing else; no step lines either
    again = run_cli("push", ref, *_plain_build_args(tmp_path), "--json", env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["digest"].startswith("sha256:")
    assert again.stderr == ""
    quiet = run_cli("build", *_plain_build_args(tmp_path), "-o", f"oci:{tmp_path / 'q'}", "--quiet", env=env)
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout.startswith("sha256:")


def _run_on_pty(args: list[str], timeout: float = 120.0) -> tuple[int, bytes, bytes]:
    """Run the CLI with stderr on a pseudo-terminal (stdout on a pipe); returns (rc, stdout, tty bytes)."""
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "ociassemble.cli", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    tty = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                tty += data
            elif proc.poll() is not None:
                break
        out = proc.stdout.read() if proc.stdout else b""
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return rc, out, bytes(tty)


def test_a_terminal_shows_progress_bars(plain_registry, tmp_path: Path) -> None:
    ref = f"{plain_registry.host}/cli/tty:1"
    rc, out, tty = _run_on_pty(["push", ref, *_plain_build_args(tmp_path)])
    assert rc == 0, tty.decode(errors="replace")
    text = tty.decode("utf-8", "replace")
    assert "\x1b[" in text, "no terminal control sequences: the live display did not run"
    assert "upload " in text and "MiB" in text  # an upload bar: "upload <digest> … x/y MiB"
    assert "layer " in text and "hashed and compressed" in text
    assert out.decode().strip().startswith("sha256:")  # stdout (a pipe) has the result only
    assert b"\x1b" not in out
