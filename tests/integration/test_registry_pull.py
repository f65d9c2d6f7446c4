"""Pulling from a real registry: digests round-trip, layers come only when needed."""

from __future__ import annotations

import json
import os

import pytest
from registry_fixtures import FaultProxy, skopeo

from ociassemble.errors import RegistryError
from ociassemble.image.cache import BlobCache
from ociassemble.image.oci import Descriptor, Index, MediaType, Platform
from ociassemble.image.platform import host_platform
from ociassemble.registry import pull_image, pull_to_layout, push_image
from ociassemble.registry.client import RegistryClient
from ociassemble.transport.layout import read_layout


def test_registry_pull_round_trips_and_fetches_layers_lazily(pushed, proxy: FaultProxy, tmp_path, options):
    image, ref = pushed
    cache = BlobCache(tmp_path / "fresh")
    pulled = pull_image(ref.replace(ref.split("/")[0], proxy.host), cache, options=options)

    assert pulled.digest == image.digest
    assert pulled.manifest_bytes == image.manifest_bytes
    assert pulled.config_bytes == image.config_bytes and cache.has(image.manifest.config.digest)
    assert pulled.origin == f"{proxy.host}/pull/app"
    assert pulled.origin_digests == {d.digest for d in image.manifest.layers}
    layer = image.manifest.layers[0]
    assert not cache.has(layer.digest)
    assert not any(m == "GET" and layer.digest in p for m, p, s in proxy.log)

    # an output that needs the bytes fetches them, verified, once (and survives a reset)
    proxy.add("GET", layer.digest, "reset")  # a GET has no body: the reset lands before the answer
    pulled.ensure_blobs(cache)
    assert cache.has(layer.digest)
    assert sum(1 for m, p, s in proxy.log if m == "GET" and layer.digest in p and s == 200) == 1
    pulled.ensure_blobs(cache)
    assert sum(1 for m, p, s in proxy.log if m == "GET" and layer.digest in p and s == 200) == 1


def test_registry_pull_to_layout_matches_skopeo(pushed, tmp_path, options):
    image, ref = pushed
    cache = BlobCache(tmp_path / "fresh")
    dest = tmp_path / "layout"
    pull_to_layout(ref, cache, dest, options=options)
    index = json.loads((dest / "index.json").read_text())
    assert index["manifests"][0]["digest"] == image.digest
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "1"
    assert json.loads(skopeo("inspect", f"oci:{dest}:1"))["Digest"] == image.digest
    assert read_layout(dest, "1", BlobCache(tmp_path / "other")).digest == image.digest


def test_registry_pull_resolves_an_index_to_this_platform(pushed, plain_registry, cache, make_image, options, tmp_path):
    image, _ = pushed
    host = host_platform()
    other = Platform("linux", "s390x" if host.architecture != "s390x" else "arm64")
    foreign = make_image(cache, {"other.txt": b"another platform"})
    push_image(foreign, cache, [f"{plain_registry.host}/pull/app:foreign"], options=options)
    index = Index((
        Descriptor(MediaType.MANIFEST, foreign.digest, len(foreign.manifest_bytes), platform=other),
        Descriptor(MediaType.MANIFEST, image.digest, len(image.manifest_bytes), platform=host),
    ))
    client = RegistryClient(plain_registry.host, options)
    scopes = client.scopes("pull/app", push=True)
    client.put_manifest("pull/app", "multi", index.to_bytes(), MediaType.INDEX, scopes)
    client.close()

    pulled = pull_image(f"{plain_registry.host}/pull/app:multi", BlobCache(tmp_path / "c"), options=options)
    assert pulled.digest == image.digest
    by_digest = pull_image(f"{plain_registry.host}/pull/app@{image.digest}", BlobCache(tmp_path / "c"), options=options)
    assert by_digest.digest == image.digest


def test_registry_pull_docker_schema2_keeps_digest_and_media_type(pushed, plain_registry, options, tmp_path):
    _, ref = pushed
    v2s2 = f"{plain_registry.host}/pull/docker:v2s2"
    skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--format", "v2s2",
           f"docker://{ref}", f"docker://{v2s2}")
    expected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{v2s2}"))["Digest"]

    cache = BlobCache(tmp_path / "c")
    pulled = pull_image(v2s2, cache, options=options)
    assert pulled.digest == expected
    assert pulled.manifest.media_type == MediaType.DOCKER_MANIFEST
    # pushed on as it is: same bytes, same digest, layers mounted, docker media type kept
    result = push_image(pulled, cache, [f"{plain_registry.host}/pull/docker-copy:1"], options=options)
    assert result.digest == expected and result.blobs_mounted
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{plain_registry.host}/pull/docker-copy:1")
    assert json.loads(raw)["mediaType"] == MediaType.DOCKER_MANIFEST


def test_registry_pull_unknown_tag_is_one_line(plain_registry, cache, options):
    with pytest.raises(RegistryError) as info:
        pull_image(f"{plain_registry.host}/pull/app:nope", cache, options=options)
    message = str(info.value)
    assert "\n" not in message and "HTTP 404" in message and "MANIFEST_UNKNOWN" in message
    assert info.value.codes == ("MANIFEST_UNKNOWN",)
