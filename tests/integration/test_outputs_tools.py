"""Tools we did not write accept every output: skopeo, umoci, oci-image-tool.

oci-image-tool 1.0's tar walker fails on any tarball (GNU tar's own included), so it
validates the layout directory and the manifest; skopeo reads all three transports.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from ociassemble.image.assemble import Image, ImageBuilder
from ociassemble.image.cache import BlobCache
from ociassemble.image.layer import LayerSource, build_layer
from ociassemble.inputs.base import load_base
from ociassemble.transport.archive import read_docker_archive, read_oci_archive, write_docker_archive, write_oci_archive
from ociassemble.transport.layout import read_layout, write_layout

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed (.ci/run installs it)")


def _tool(*cmd: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd[0]} failed: {proc.stderr}"
    return proc.stdout


@pytest.fixture
def image(tmp_path: Path, cache: BlobCache) -> Image:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "os-release").write_text("ID=tiny\n")
    (rootfs / "bin").mkdir()
    (rootfs / "bin" / "hello").write_text("#!/bin/sh\necho hello\n")
    os.chmod(rootfs / "bin" / "hello", 0o755)
    base = load_base(f"rootfs:{rootfs}", cache)
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text("print('hi')\n")
    b = ImageBuilder(cache, base)
    b.add_layer(build_layer(cache, [LayerSource(app, "/opt/app")]), "app")
    b.config = replace(b.config.with_env({"MODE": "test"}), cmd=("/bin/hello",), exposed_ports=("5001/tcp",))
    return b.build()


def test_oci_layout_is_accepted(tmp_path: Path, cache: BlobCache, image: Image) -> None:
    out = tmp_path / "layout"
    write_layout(image, cache, out, "v1")
    info = json.loads(_tool("skopeo", "inspect", f"oci:{out}:v1"))
    assert info["Digest"] == image.digest
    assert "MODE=test" in info["Env"]
    _tool("oci-image-tool", "validate", "--type", "image", "--ref", "name=v1", str(out))
    _tool("oci-image-tool", "validate", "--type", "manifest", str(out / "blobs" / "sha256" / image.digest[7:]))
    _tool("umoci", "unpack", "--image", f"{out}:v1", str(tmp_path / "bundle"))
    assert (tmp_path / "bundle/rootfs/opt/app/main.py").read_text() == "print('hi')\n"
    assert (tmp_path / "bundle/rootfs/etc/os-release").is_file()
    # skopeo copies it to another layout with the digest unchanged, and we read that back
    _tool("skopeo", "copy", "--preserve-digests", f"oci:{out}:v1", f"oci:{tmp_path / 'copy'}:v1")
    again = read_layout(tmp_path / "copy", "v1", BlobCache(tmp_path / "cache2"))
    assert again.digest == image.digest


def test_oci_archive_is_accepted(tmp_path: Path, cache: BlobCache, image: Image) -> None:
    out = tmp_path / "image.tar"
    write_oci_archive(image, cache, out, "v1")
    assert json.loads(_tool("skopeo", "inspect", f"oci-archive:{out}:v1"))["Digest"] == image.digest
    _tool("skopeo", "copy", f"oci-archive:{out}:v1", f"oci:{tmp_path / 'copy'}:v1")
    assert read_oci_archive(out, "v1", BlobCache(tmp_path / "c2")).digest == image.digest
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".image.tar.tmp")]


def test_docker_archive_is_accepted(tmp_path: Path, cache: BlobCache, image: Image) -> None:
    out = tmp_path / "docker.tar"
    write_docker_archive(image, cache, out, "example/app:1")
    info = json.loads(_tool("skopeo", "inspect", f"docker-archive:{out}"))
    assert info["RepoTags"] == ["1"] or "example/app" in json.dumps(info) or info["Layers"]
    assert len(info["Layers"]) == 2
    # skopeo writes its own docker-archive; we read it back to the same config and diff_ids
    _tool("skopeo", "copy", f"oci-archive:{_oci_archive(tmp_path, cache, image)}", f"docker-archive:{tmp_path / 'sk.tar'}:x/y:1")
    theirs = read_docker_archive(tmp_path / "sk.tar", None, BlobCache(tmp_path / "c3"))
    ours = read_docker_archive(out, None, BlobCache(tmp_path / "c4"))
    assert theirs.config.diff_ids == ours.config.diff_ids == image.config.diff_ids


def _oci_archive(tmp_path: Path, cache: BlobCache, image: Image) -> Path:
    p = tmp_path / "for-skopeo.tar"
    write_oci_archive(image, cache, p)
    return p


def test_outputs_are_byte_identical_when_rebuilt(tmp_path: Path, cache: BlobCache, image: Image) -> None:
    for i in (1, 2):
        write_oci_archive(image, cache, tmp_path / f"a{i}.tar", "v1")
        write_docker_archive(image, cache, tmp_path / f"d{i}.tar", "x/y:1")
    assert (tmp_path / "a1.tar").read_bytes() == (tmp_path / "a2.tar").read_bytes()
    assert (tmp_path / "d1.tar").read_bytes() == (tmp_path / "d2.tar").read_bytes()
