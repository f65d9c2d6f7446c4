"""Multi-platform builds written to disk: the index in oci: and oci-archive: as skopeo reads it,
read back whole or per platform, docker-archive refused for several, the flag's and the
config's platform lists, and bad platforms named in one line.

The images here are plain (``--base scratch``): nothing in them runs, so no arm64 base is
needed; tests/e2e/test_multiplatform.py builds and runs the scoring image for both."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ociassemble.image.cache import BlobCache
from ociassemble.image.imageindex import ImageIndex
from ociassemble.image.platform import ALL, parse_platform
from ociassemble.imageio import load_image
from tests.conftest import run_cli

TWO = "linux/amd64,linux/arm64"


def _build(tmp_path: Path, out: str, *extra: str) -> subprocess.CompletedProcess[str]:
    src = tmp_path / "src"
    if not src.exists():
        src.mkdir()
        (src / "hello.txt").write_text("same bytes on every platform\n")
    return run_cli("build", "--plain", "--base", "scratch", "--layer", f"{src}:/data", "-o", out, "--json",
                   "--cache-dir", str(tmp_path / "cache"), *extra)


@pytest.mark.parametrize("kind", ["oci", "oci-archive"])
def test_an_index_output_is_read_by_skopeo_per_platform(tmp_path: Path, kind: str) -> None:
    out = tmp_path / ("layout" if kind == "oci" else "image.tar")
    proc = _build(tmp_path, f"{kind}:{out}:v1", "--platform", TWO)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["mediaType"] == "application/vnd.oci.image.index.v1+json"
    by = {p["platform"]: p for p in res["platforms"]}
    assert list(by) == ["linux/amd64", "linux/arm64/v8"]  # the order given
    # the one new layer is the same blob in both images
    assert by["linux/amd64"]["layers"][0]["digest"] == by["linux/arm64/v8"]["layers"][0]["digest"]
    raw = subprocess.run(["skopeo", "inspect", "--raw", f"{kind}:{out}:v1"], capture_output=True, text=True, check=True)
    index = json.loads(raw.stdout)
    assert [(m["digest"], m["platform"]) for m in index["manifests"]] == [
        (by["linux/amd64"]["digest"], {"architecture": "amd64", "os": "linux"}),
        (by["linux/arm64/v8"]["digest"], {"architecture": "arm64", "os": "linux", "variant": "v8"})]
    for arch, plat in (("arm64", "linux/arm64/v8"), ("amd64", "linux/amd64")):
        dest = tmp_path / f"copy-{arch}"
        subprocess.run(["skopeo", "copy", "--override-arch", arch, f"{kind}:{out}:v1", f"oci:{dest}:x"],
                       capture_output=True, text=True, check=True)
        top = json.loads((dest / "index.json").read_text())["manifests"][0]
        assert top["digest"] == by[plat]["digest"]


def test_read_back_whole_or_one_platform(tmp_path: Path) -> None:
    out = tmp_path / "layout"
    res = json.loads(_build(tmp_path, f"oci:{out}", "--platform", TWO).stdout)
    cache = BlobCache(tmp_path / "other-cache")
    whole = load_image(f"oci:{out}", cache, platform=ALL)
    assert isinstance(whole, ImageIndex) and whole.digest == res["digest"]
    arm = load_image(f"oci:{out}", cache, platform=parse_platform("linux/arm64"))
    assert arm.digest == res["platforms"][1]["digest"] and arm.platform.architecture == "arm64"
    with pytest.raises(Exception, match=r"has no image for linux/s390x; it has linux/amd64, linux/arm64/v8"):
        load_image(f"oci:{out}", cache, platform=parse_platform("linux/s390x"))


def test_one_platform_is_the_very_image_the_index_holds_for_it(tmp_path: Path) -> None:
    both = json.loads(_build(tmp_path, f"oci:{tmp_path / 'both'}", "--platform", TWO).stdout)
    one = _build(tmp_path, f"docker-archive:{tmp_path / 'arm.tar'}:x/y:arm", "--platform", "linux/aarch64")
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout)["digest"] == both["platforms"][1]["digest"]
    assert "mediaType" not in json.loads(one.stdout)  # one platform: a manifest, not an index


def test_a_docker_archive_of_several_platforms_is_refused_before_any_work(tmp_path: Path) -> None:
    proc = _build(tmp_path, f"docker-archive:{tmp_path / 'x.tar'}", "--platform", TWO)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert "docker-archive holds one platform's image" in last and "--platform" in last
    assert not (tmp_path / "x.tar").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("value,message", [
    ("linux/sparc", r"unknown architecture 'sparc'"),
    ("windows/amd64", r"only linux images"),
    ("linux/", r"write OS/ARCH\[/VARIANT\]"),
    (",", r"no platform given"),
])
def test_a_bad_platform_is_one_line(tmp_path: Path, value: str, message: str) -> None:
    import re

    proc = _build(tmp_path, f"oci:{tmp_path / 'out'}", "--platform", value)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert re.search(message, proc.stderr.strip().splitlines()[-1]), proc.stderr
    assert not (tmp_path / "out").exists()


def test_the_config_platform_list_is_the_flag(tmp_path: Path) -> None:
    flag = json.loads(_build(tmp_path, f"oci:{tmp_path / 'a'}", "--platform", TWO).stdout)
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "ociassemble.toml").write_text('platform = ["linux/amd64", "linux/arm64"]\n')
    proc = run_cli("build", str(proj), "--plain", "--base", "scratch", "--layer", f"{tmp_path / 'src'}:/data",
                   "-o", f"oci:{tmp_path / 'b'}", "--json", "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["digest"] == flag["digest"]
    # a flag wins over the config
    one = run_cli("build", str(proj), "--plain", "--base", "scratch", "--layer", f"{tmp_path / 'src'}:/data",
                  "--platform", "linux/arm64", "-o", f"oci:{tmp_path / 'c'}", "--json", "--cache-dir", str(tmp_path / "cache"))
    assert json.loads(one.stdout)["digest"] == flag["platforms"][1]["digest"]


def test_the_order_of_the_platforms_is_the_index_order(tmp_path: Path) -> None:
    a = json.loads(_build(tmp_path, f"oci:{tmp_path / 'a'}", "--platform", TWO).stdout)
    b = json.loads(_build(tmp_path, f"oci:{tmp_path / 'b'}", "--platform", "linux/arm64,linux/amd64,linux/arm64/v8").stdout)
    assert a["digest"] != b["digest"]
    assert [p["digest"] for p in a["platforms"]] == [p["digest"] for p in reversed(b["platforms"])]


def test_an_index_archive_as_base_is_resolved_per_platform(tmp_path: Path) -> None:
    """Each platform's image is built on that platform's image of the base (its layers, its config),
    and a platform the base lacks is refused naming the ones it has."""
    base = tmp_path / "base.tar"
    made = json.loads(_build(tmp_path, f"oci-archive:{base}", "--platform", TWO).stdout)
    top = tmp_path / "top"
    top.mkdir()
    (top / "app.txt").write_text("on top\n")
    proc = run_cli("build", "--plain", "--base", f"oci-archive:{base}", "--layer", f"{top}:/app", "--platform", TWO,
                   "-o", f"oci:{tmp_path / 'out'}", "--json", "--cache-dir", str(tmp_path / "cache2"))
    assert proc.returncode == 0, proc.stderr
    cache = BlobCache(tmp_path / "cache2")
    for plat, base_manifest in zip(("linux/amd64", "linux/arm64"), made["platforms"]):
        image = load_image(f"oci:{tmp_path / 'out'}", cache, platform=parse_platform(plat))
        base_image = load_image(f"oci-archive:{base}", cache, platform=parse_platform(plat))
        assert image.platform.architecture == plat.split("/")[1]
        assert image.config.diff_ids[:1] == base_image.config.diff_ids
        assert base_image.digest == base_manifest["digest"]
    lacking = run_cli("build", "--plain", "--base", f"oci-archive:{base}", "--layer", f"{top}:/app",
                      "--platform", "linux/amd64,linux/s390x", "-o", f"oci:{tmp_path / 'out2'}",
                      "--cache-dir", str(tmp_path / "cache2"))
    assert lacking.returncode == 1 and not (tmp_path / "out2").exists()
    assert "has no image for linux/s390x; it has linux/amd64, linux/arm64/v8" in lacking.stderr.strip().splitlines()[-1]


def test_missing_default_bases_are_named_before_any_platform_is_built(tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "score.py").write_text("def init():\n    pass\n\n\ndef run(data):\n    return data\n")
    proc = run_cli("build", str(proj), "--platform", TWO, "-o", f"oci:{tmp_path / 'out'}",
                   "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "ociassemble: error: no base image for linux/amd64,linux/arm64 with Python 3.11: run 'ociassemble make-base --platform "
        "linux/amd64,linux/arm64' once (Debian bookworm with python3, nginx, runit), or pass --base")
    assert "layer" not in proc.stderr and not (tmp_path / "out").exists()
