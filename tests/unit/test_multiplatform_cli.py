"""Multi-platform images without a registry: the inspect listing against docs/json.md, and the
refusals that come before any work (a docker-archive of several platforms, push --from of two)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ociassemble import cli
from ociassemble.errors import EXIT_USER, UsageError
from ociassemble.image.cache import BlobCache
from ociassemble.image.imageindex import ImageIndex
from ociassemble.image.platform import parse_platform
from ociassemble.registry.push import PushResult
from ociassemble.transport.layout import write_layout
from ociassemble.imageio import write_image

from tests.conftest import two_platform_index
from tests.unit.test_cli import _doc_examples, _same_shape, _shape


def _index(tmp_path: Path) -> tuple[ImageIndex, BlobCache]:
    cache = BlobCache(tmp_path / "cache")
    return two_platform_index(cache, tmp_path / "src", {"score.py": b"def run(x):\n    return x\n"}), cache


def test_inspect_lists_the_platforms_as_docs_json_md_says(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index, cache = _index(tmp_path)
    write_layout(index, cache, tmp_path / "out", "v1")
    spec, flags = f"oci:{tmp_path / 'out'}:v1", ["--cache-dir", str(cache.root)]
    capsys.readouterr()
    assert cli.main(["inspect", spec, "--json", *flags]) == 0
    doc = json.loads(capsys.readouterr().out)
    _same_shape(_shape(_doc_examples()["inspect (a multi-platform image)"]), _shape(doc))
    assert doc["digest"] == index.digest and doc["kind"] == "index"
    assert [(m["platform"], m["digest"]) for m in doc["manifests"]] == [
        ("linux/amd64", index.images[0].digest), ("linux/arm64/v8", index.images[1].digest)]
    layer = index.images[0].manifest.layers[0]
    assert doc["totalSize"] == layer.size  # the shared layer once
    assert cli.main(["inspect", spec, *flags]) == 0
    text = capsys.readouterr().out
    assert index.digest in text and "linux/arm64/v8" in text and index.images[1].digest in text
    assert cli.main(["inspect", spec, "--json", "--platform", "linux/arm64", *flags]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["kind"] == "image" and one["digest"] == index.images[1].digest
    assert cli.main(["inspect", spec, "--layer", "0", *flags]) == EXIT_USER
    assert "--platform" in capsys.readouterr().err


def test_a_docker_archive_of_several_platforms_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index, cache = _index(tmp_path)
    with pytest.raises(UsageError, match="docker-archive holds one platform"):
        write_image(index, cache, f"docker-archive:{tmp_path / 'x.tar'}")
    assert not (tmp_path / "x.tar").exists()
    write_image(index, cache, f"docker-archive:{tmp_path / 'arm.tar'}", platform=parse_platform("linux/arm64"))
    assert (tmp_path / "arm.tar").stat().st_size > 0
    # pull --platform all into a docker-archive: refused before the registry is asked (nothing listens on port 9)
    capsys.readouterr()
    code = cli.main(["pull", "127.0.0.1:9/team/app:1", f"docker-archive:{tmp_path / 'p.tar'}", "--platform", "all",
                     "--cache-dir", str(cache.root)])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_USER and len(err.splitlines()) == 1
    assert "docker-archive holds one platform" in err and "oci-archive:" in err
    # build for two platforms into a docker-archive: refused before building
    code = cli.main(["build", "--plain", "--base", "scratch", "--layer", f"{tmp_path / 'src'}:/app",
                     "--platform", "linux/amd64,linux/arm64", "-o", f"docker-archive:{tmp_path / 'b.tar'}",
                     "--cache-dir", str(cache.root)])
    assert code == EXIT_USER and "docker-archive holds one platform" in capsys.readouterr().err


def test_push_from_takes_one_platform_or_all(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index, cache = _index(tmp_path)
    write_layout(index, cache, tmp_path / "out")
    capsys.readouterr()
    code = cli.main(["push", "--from", f"oci:{tmp_path / 'out'}", "--platform", "linux/amd64,linux/arm64",
                     "127.0.0.1:9/team/app:1", "--cache-dir", str(cache.root)])
    assert code == EXIT_USER and "push --from pushes one platform's image, or all" in capsys.readouterr().err
    write_layout(index.images[1], cache, tmp_path / "arm")
    code = cli.main(["push", "--from", f"oci:{tmp_path / 'arm'}", "--platform", "linux/amd64",
                     "127.0.0.1:9/team/app:1", "--cache-dir", str(cache.root)])
    assert code == EXIT_USER and "is for linux/arm64/v8, not linux/amd64" in capsys.readouterr().err


def test_push_result_of_an_index_names_each_platform_manifest() -> None:
    res = PushResult("sha256:" + "1" * 64, ("r/a:1",), 10, manifests={"linux/amd64": "sha256:" + "2" * 64,
                                                                       "linux/arm64/v8": "sha256:" + "3" * 64})
    doc = res.to_json()
    assert doc["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert doc["manifests"] == [{"platform": "linux/amd64", "digest": "sha256:" + "2" * 64},
                                {"platform": "linux/arm64/v8", "digest": "sha256:" + "3" * 64}]
    assert "manifests" not in PushResult("sha256:" + "1" * 64, ("r/a:1",), 10).to_json()
