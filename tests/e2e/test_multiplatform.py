"""End to end: the example built for linux/amd64 and linux/arm64 on this x86 machine, as one image index.

It is pushed to a real docker-registry (the layers both platforms share uploaded once), read
back by skopeo (the index, and the arm64 image by --override-arch), served from the index by
``ociassemble run`` on both platforms (arm64 through qemu user emulation) with the same
prediction, and loaded by podman from a one-platform docker-archive. Built again from a cold
cache on the same bases pulled from a registry, it has the same index digest.

The two bases are the default bases of ``make-base`` (amd64 and arm64, both from .debs, no
qemu), given as one multi-platform base (an index layout), which each platform's build
resolves to its own image.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from ociassemble.emulation import SLOWDOWN, needs_emulation
from ociassemble.image.cache import BlobCache
from tests.conftest import run_cli
from tests.e2e.conftest import free_port, http, podman_command, wait_healthy
from tests.integration.registry_fixtures import Registry, start_registry, stop_pid

pytestmark = pytest.mark.slow

PLATFORMS = "linux/amd64,linux/arm64"


@pytest.fixture(scope="module")
def bases_index(amd64_base: str, arm64_base: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """``oci:DIR`` of one index holding the amd64 and the arm64 default bases."""
    from ociassemble.image.imageindex import ImageIndex
    from ociassemble.imageio import load_image
    from ociassemble.image.platform import parse_platform
    from ociassemble.transport.layout import write_layout

    cache = BlobCache(tmp_path_factory.mktemp("bases-cache"))
    images = [load_image(amd64_base, cache, platform=parse_platform("linux/amd64")),
              load_image(arm64_base, cache, platform=parse_platform("linux/arm64"))]
    dest = tmp_path_factory.mktemp("bases") / "index"
    write_layout(ImageIndex.of(images), cache, dest, "latest")  # type: ignore[arg-type]
    return f"oci:{dest}:latest"


def _build(example: Path, base: str, out: Path, cache: Path) -> dict:
    proc = run_cli("build", str(example), "--base", base, "--platform", PLATFORMS, "-o", f"oci:{out}:latest",
                   "--json", "--cache-dir", str(cache))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def multi(trained_example: Path, bases_index: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The two-platform build, from a cold cache."""
    work = tmp_path_factory.mktemp("multi")
    result = _build(trained_example, bases_index, work / "image", work / "cache")
    result["layout"] = work / "image"
    result["cache"] = work / "cache"
    return result


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    reg = start_registry(tmp_path_factory.mktemp("multi-registry"))
    try:
        yield reg
    finally:
        stop_pid(reg.proc)


def _by_platform(result: dict) -> dict[str, dict]:
    return {p["platform"]: p for p in result["platforms"]}


def test_the_build_is_an_index_of_both_platforms_sharing_the_platform_independent_layers(multi: dict) -> None:
    assert multi["mediaType"] == "application/vnd.oci.image.index.v1+json"
    plats = _by_platform(multi)
    assert set(plats) == {"linux/amd64", "linux/arm64/v8"}
    amd, arm = plats["linux/amd64"], plats["linux/arm64/v8"]
    layers = {p: {l["what"]: l["digest"] for l in plats[p]["layers"]} for p in plats}
    # the deps layer is each platform's own (pex resolved other wheels); every other new layer is shared
    assert layers["linux/amd64"]["python-deps"] != layers["linux/arm64/v8"]["python-deps"]
    shared = [w for w in layers["linux/amd64"] if w != "python-deps"]
    assert shared and all(layers["linux/amd64"][w] == layers["linux/arm64/v8"][w] for w in shared)
    assert amd["pex_ran"] and arm["pex_ran"]
    index = json.loads((multi["layout"] / "index.json").read_text())
    assert index["manifests"][0]["digest"] == multi["digest"]


def test_push_uploads_shared_layers_once_and_skopeo_reads_the_index(multi: dict, registry: Registry,
                                                                    tmp_path: Path) -> None:
    ref = f"{registry.host}/examples/multi:1.0"
    pushed = run_cli("push", "--from", f"oci:{multi['layout']}:latest", ref, "--json", "--cache-dir", str(multi["cache"]))
    assert pushed.returncode == 0, pushed.stderr
    assert json.loads(pushed.stdout)["digest"] == multi["digest"]

    # every blob of both manifests was uploaded exactly once (the registry's own access log)
    log = registry.log.read_text(errors="replace")
    finals = re.findall(r'"PUT /v2/examples/multi/blobs/uploads/[^ ?"]*\?[^ "]*digest=sha256(?:%3A|:)([0-9a-f]{64})', log)
    assert finals, "the registry log shows no finished upload"
    assert len(finals) == len(set(finals)), "a blob was uploaded twice"
    plats = _by_platform(multi)
    blobs = {l["digest"].split(":")[1] for p in plats.values() for l in p["layers"]}
    assert blobs <= set(finals)

    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                         capture_output=True, text=True, timeout=120)
    assert raw.returncode == 0, raw.stderr
    index = json.loads(raw.stdout)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert {(m["platform"]["architecture"], m["platform"].get("variant")) for m in index["manifests"]} == {
        ("amd64", None), ("arm64", "v8")}

    copied = tmp_path / "arm64"
    copy = subprocess.run(["skopeo", "copy", "--override-arch", "arm64", "--src-tls-verify=false",
                           f"docker://{ref}", f"oci:{copied}:arm64"], capture_output=True, text=True, timeout=300)
    assert copy.returncode == 0, copy.stderr
    top = json.loads((copied / "index.json").read_text())["manifests"][0]
    assert top["digest"] == plats["linux/arm64/v8"]["digest"]
    manifest = json.loads((copied / "blobs" / "sha256" / top["digest"].split(":")[1]).read_text())
    config = json.loads((copied / "blobs" / "sha256" / manifest["config"]["digest"].split(":")[1]).read_text())
    assert config["architecture"] == "arm64"


def test_same_inputs_from_another_cold_cache_and_a_registry_base_give_the_same_index(
        multi: dict, trained_example: Path, bases_index: str, registry: Registry, tmp_path: Path) -> None:
    """Reproducibility per platform, and a base index resolved per platform from a registry: the two
    bases pushed as one index by skopeo (a tool we did not write), the example built on it from a
    cold cache (pex runs again for both platforms) gives the index the layout base gave."""
    ref = f"{registry.host}/bases/azureml:bookworm"
    layout = bases_index.removeprefix("oci:")
    copy = subprocess.run(["skopeo", "copy", "--all", "--preserve-digests", "--dest-tls-verify=false",
                           f"oci:{layout}", f"docker://{ref}"], capture_output=True, text=True, timeout=600)
    assert copy.returncode == 0, copy.stderr
    again = _build(trained_example, ref, tmp_path / "image", tmp_path / "cache")
    assert all(p["pex_ran"] for p in again["platforms"])  # nothing came from the first build's cache
    assert again["digest"] == multi["digest"]
    assert [(p["platform"], p["digest"]) for p in again["platforms"]] == \
        [(p["platform"], p["digest"]) for p in multi["platforms"]]


def _score(image: str, platform: str, example: Path, cache: Path) -> tuple[list[float], str]:
    """``run --platform`` the image, wait for Healthy, POST the sample; the prediction and run's log."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ociassemble.cli", "run", image, "--platform", platform,
                             "--publish", f"127.0.0.1:{port}:5001", "--cache-dir", str(cache)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, b"")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        # under qemu, gunicorn's workers import Flask, numpy and scikit-learn several times slower
        wait_healthy(f"http://127.0.0.1:{port}/", proc, timeout=120 * SLOWDOWN)
        # and run says so itself (its own probe, every half second): wait for its ready line, not race it
        deadline = time.monotonic() + 60
        while not any(b"; Ctrl-C stops it" in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.2)
        status, headers, body = http("POST", f"http://127.0.0.1:{port}/score",
                                     (example / "sample-request.json").read_bytes(),
                                     {"Content-Type": "application/json"}, timeout=120)
        assert status == 200, body
        assert "nginx" in headers.get("server", "") and "x-ms-run-fn-exec-ms" in headers
        prediction = json.loads(body)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        reader.join(timeout=10)
    log = b"".join(lines).decode(errors="replace")
    assert proc.returncode in (0, 130, 143), log[-2000:]
    return prediction, log


def test_both_platforms_serve_the_same_prediction_from_the_index(multi: dict, trained_example: Path) -> None:
    """The arm64 image (through qemu on an x86 machine) predicts what the amd64 one and the model here do."""
    import joblib

    image = f"oci:{multi['layout']}:latest"
    amd64, amd64_log = _score(image, "linux/amd64", trained_example, multi["cache"])
    arm64, arm64_log = _score(image, "linux/arm64", trained_example, multi["cache"])
    rows = json.loads((trained_example / "sample-request.json").read_text())["data"]
    here = joblib.load(trained_example / "model.pkl").predict(rows).tolist()
    assert amd64 == pytest.approx(here) and arm64 == pytest.approx(amd64, rel=1e-9)
    for plat, log in (("linux/amd64", amd64_log), ("linux/arm64/v8", arm64_log)):
        emulated = needs_emulation(plat.split("/")[1])
        assert (f"({plat}, emulated by qemu)" in log) == emulated, log[-2000:]


@pytest.mark.skipif(shutil.which("podman") is None, reason="podman not installed (.ci/run installs it)")
def test_podman_loads_the_arm64_docker_archive_as_arm64(multi: dict, trained_example: Path, bases_index: str,
                                                        tmp_path: Path) -> None:
    archive = tmp_path / "arm64.tar"
    # a docker-archive holds one platform: asked for both, build refuses before any work …
    both = run_cli("build", str(trained_example), "--base", bases_index, "--platform", PLATFORMS,
                   "-o", f"docker-archive:{archive}", "--cache-dir", str(multi["cache"]))
    assert both.returncode == 1 and "--platform" in both.stderr and not archive.exists()
    # … and for linux/arm64 it writes the very image the index holds for arm64
    wrote = run_cli("build", str(trained_example), "--base", bases_index, "--platform", "linux/arm64", "--json",
                    "-o", f"docker-archive:{archive}:examples/multi:arm64", "--cache-dir", str(multi["cache"]))
    assert wrote.returncode == 0, wrote.stderr
    assert json.loads(wrote.stdout)["digest"] == _by_platform(multi)["linux/arm64/v8"]["digest"]
    runroot = Path(tempfile.mkdtemp(prefix="oa-podman-"))  # podman limits its runroot path to 50 characters
    try:
        podman = podman_command(tmp_path / "storage", runroot)
        load = subprocess.run([*podman, "load", "-i", str(archive)], capture_output=True, text=True, timeout=300)
        assert load.returncode == 0, load.stderr
        inspected = json.loads(subprocess.run([*podman, "image", "inspect", "localhost/examples/multi:arm64"],
                                              capture_output=True, text=True, check=True).stdout)[0]
        assert inspected["Architecture"] == "arm64"
        assert inspected["Config"]["Cmd"] == ["runsvdir", "/var/runit"]
    finally:
        shutil.rmtree(runroot, ignore_errors=True)


def test_a_requirement_with_no_wheel_for_arm64_is_one_line_naming_the_platform(trained_example: Path,
                                                                                bases_index: str,
                                                                                tmp_path: Path) -> None:
    """intel-openmp publishes wheels for x86-64 only (and no source): fine for amd64, none for arm64."""
    project = tmp_path / "p"
    shutil.copytree(trained_example, project)
    (project / "requirements.txt").write_text("intel-openmp==2024.2.1\n")
    out = tmp_path / "out"
    proc = run_cli("build", str(project), "--base", bases_index, "--platform", "linux/arm64",
                   "-o", f"oci:{out}", "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("ociassemble: error: ") and "Traceback" not in proc.stderr
    assert "linux/arm64" in lines[-1] and "intel-openmp==2024.2.1" in lines[-1], lines[-1]
    assert not out.exists()
