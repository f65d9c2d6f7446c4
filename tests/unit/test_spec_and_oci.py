"""Image locations, OCI documents and canonical JSON."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ociassemble.errors import ArchiveError, UsageError
from ociassemble.image.compress import GZIP_BLOCK, Compression, compress_stream
from ociassemble.image.oci import Descriptor, ImageConfig, Manifest, MediaType, canonical_json
from ociassemble.transport.spec import parse_spec


@pytest.mark.parametrize("text,kind,path,tag", [
    ("oci:out", "oci", "out", None),
    ("oci:out:v1", "oci", "out", "v1"),
    ("oci:/abs/dir:latest", "oci", "/abs/dir", "latest"),
    ("oci-archive:img.tar:v2", "oci-archive", "img.tar", "v2"),
    ("docker-archive:d.tar:team/app:1", "docker-archive", "d.tar", "team/app:1"),
    ("docker-archive:d.tar:team/app", "docker-archive", "d.tar", "team/app:latest"),
])
def test_output_specs(text: str, kind: str, path: str, tag: str | None) -> None:
    spec = parse_spec(text, for_output=True)
    assert (spec.kind, str(spec.path), spec.tag) == (kind, path, tag)


def test_base_specs(tmp_path: Path) -> None:
    assert parse_spec("registry.example.com/team/base:1").kind == "docker"
    assert parse_spec("docker://localhost:5000/base:1").tag == "localhost:5000/base:1"
    (tmp_path / "rootfs.tar").write_bytes(b"")
    assert parse_spec(str(tmp_path / "rootfs.tar")).kind == "rootfs"


def _tar(path: Path, names: list[str], gz: bool = False) -> Path:
    import tarfile

    with tarfile.open(path, "w:gz" if gz else "w") as tf:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 2
            tf.addfile(info, io.BytesIO(b"{}"))
    return path


@pytest.mark.parametrize("names,gz,kind", [
    (["blobs/sha256/aa", "index.json", "oci-layout"], False, "oci-archive"),  # ours and skopeo's: blobs first
    (["./oci-layout", "./index.json", "./blobs/sha256/aa"], False, "oci-archive"),
    (["manifest.json", "repositories", "aa/layer.tar"], False, "docker-archive"),
    (["blobs/sha256/aa", "index.json", "oci-layout", "manifest.json"], False, "oci-archive"),  # docker save 25+
    (["etc/os-release", "usr/bin/python3"], False, "rootfs"),
    (["etc/os-release", "index.json", "oci-layout"], False, "rootfs"),  # known at its first member, unread on
    (["index.json", "oci-layout"], True, "rootfs"),  # image archives are plain tars
])
def test_a_bare_file_is_read_as_what_it_holds(tmp_path: Path, names: list[str], gz: bool, kind: str) -> None:
    """``push --from image.tar``, ``inspect image.tar``, ``--base image.tar``: an oci-archive or a
    docker-archive given without its prefix is read as one (it was taken for a rootfs tarball)."""
    spec = parse_spec(str(_tar(tmp_path / "x.tar", names, gz)))
    assert spec.kind == kind


def test_a_missing_tarball_is_a_path_not_a_registry_reference() -> None:
    assert parse_spec("nosuch.tar").kind == "rootfs"  # the error says "no such file", not a Docker Hub lookup
    assert parse_spec("team/app:1").kind == "docker"


@pytest.mark.parametrize("bad", ["", "out.tar", "rootfs:x", "docker://"])
def test_bad_output_specs(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_spec(bad, for_output=True)


def test_docker_media_types_are_read_as_oci() -> None:
    doc = {"schemaVersion": 2, "mediaType": MediaType.DOCKER_MANIFEST,
           "config": {"mediaType": MediaType.DOCKER_CONFIG, "digest": "sha256:" + "a" * 64, "size": 3},
           "layers": [{"mediaType": MediaType.DOCKER_LAYER_GZIP, "digest": "sha256:" + "b" * 64, "size": 4}]}
    m = Manifest.from_json(doc)
    assert m.config.media_type == MediaType.CONFIG
    assert m.layers[0].media_type == MediaType.LAYER_GZIP


def test_bad_digest_in_a_descriptor_is_refused() -> None:
    with pytest.raises(UsageError, match="invalid digest"):
        Descriptor.from_json({"mediaType": MediaType.LAYER_GZIP, "digest": "sha256:xyz", "size": 1})
    with pytest.raises(ArchiveError, match="no 'layers'"):
        Manifest.from_json({"schemaVersion": 2, "config": {"digest": "sha256:" + "a" * 64, "size": 1}})


def test_config_round_trip_keeps_unknown_fields() -> None:
    doc = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
           "config": {"Env": ["A=1"], "Healthcheck": {"Test": ["NONE"]}}, "container_config": {"x": 1}}
    cfg = ImageConfig.from_json(doc)
    again = json.loads(cfg.to_bytes())
    assert again["config"]["Healthcheck"] == {"Test": ["NONE"]}
    assert again["container_config"] == {"x": 1}
    assert cfg.with_env({"B": "2", "A": "3"}).env == ("A=3", "B=2")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children), max_leaves=20)


@given(json_values)
def test_canonical_json_is_stable_and_round_trips(value: object) -> None:
    data = canonical_json(value)
    assert json.loads(data) == value
    assert canonical_json(json.loads(data)) == data


def test_parallel_gzip_does_not_depend_on_the_number_of_workers() -> None:
    import gzip
    import os
    from unittest import mock

    data = os.urandom(GZIP_BLOCK // 2) * 7  # several blocks, partly compressible
    chunks = [data[i:i + 300_000] for i in range(0, len(data), 300_000)]
    outs = []
    for cpus in (1, 2, 8):
        out = io.BytesIO()
        with mock.patch("os.cpu_count", return_value=cpus):
            compress_stream(iter(chunks), out, Compression.parse("gzip"), lambda c: None)
        outs.append(out.getvalue())
    assert outs[0] == outs[1] == outs[2]
    assert gzip.decompress(outs[0]) == data
