"""The registry layer cache without a registry: build_layer's lookup path, per-digest origins, the flags."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from ociassemble import cli
from ociassemble.errors import UsageError
from ociassemble.image.assemble import ImageBuilder
from ociassemble.image.cache import BlobCache
from ociassemble.image.compress import Compression
from ociassemble.image.layer import BuiltLayer, LayerSource, build_layer
from ociassemble.image.oci import Descriptor
from ociassemble.registry.layercache import RegistryLayerCache, deps_tag, layer_cache_from, layer_tag
from ociassemble.settings import ENV_CACHE_REPO


class FakeIndex:
    """A remote index that answers from a dict and records what it was asked."""

    def __init__(self, entries: dict[tuple[str, str], BuiltLayer] | None = None, reading: bool = True) -> None:
        self.entries = entries or {}
        self.asked: list[tuple[str, int, str]] = []
        self.reading = reading

    def find_layer(self, diff_id: str, size: int, compression: Compression) -> BuiltLayer | None:
        self.asked.append((diff_id, size, compression.id))
        return self.entries.get((diff_id, compression.id))


def _tree(tmp_path: Path, name: str = "src") -> Path:
    src = tmp_path / name
    src.mkdir()
    (src / "a.txt").write_text("hello\n" * 1000)
    return src


def test_a_hit_skips_compression_and_writes_nothing(tmp_path: Path) -> None:
    reference = build_layer(BlobCache(tmp_path / "ref"), [LayerSource(_tree(tmp_path), "/app")], epoch=0)
    cache = BlobCache(tmp_path / "fresh")
    remote_layer = BuiltLayer(reference.descriptor, reference.diff_id, False, reference.compression,
                              reference.uncompressed_size, origin="reg.example/team/cache")
    index = FakeIndex({(reference.diff_id, reference.compression): remote_layer})
    got = build_layer(cache, [LayerSource(tmp_path / "src", "/app")], epoch=0, remote=index)
    assert got is remote_layer and got.outcome == "registry"
    assert index.asked == [(reference.diff_id, reference.uncompressed_size, reference.compression)]
    assert list(cache.iter_blobs()) == []  # nothing compressed, nothing written
    assert not any((cache.root / "layers").iterdir())  # and the local index does not claim it


def test_a_miss_builds_the_same_layer_and_off_means_not_even_hashed(tmp_path: Path) -> None:
    src = _tree(tmp_path)
    plain = build_layer(BlobCache(tmp_path / "a"), [LayerSource(src, "/app")], epoch=0)
    index = FakeIndex()
    missed = build_layer(BlobCache(tmp_path / "b"), [LayerSource(src, "/app")], epoch=0, remote=index)
    assert missed == plain and missed.outcome == "compressed" and len(index.asked) == 1
    off = FakeIndex(reading=False)
    build_layer(BlobCache(tmp_path / "c"), [LayerSource(src, "/app")], epoch=0, remote=off)
    assert off.asked == []


def test_remote_layers_get_their_own_origin_and_fetcher(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "c")
    local = build_layer(cache, [LayerSource(_tree(tmp_path), "/app")], epoch=0)
    fetched: list[str] = []
    remote_desc = Descriptor(local.descriptor.media_type, "sha256:" + "ab" * 32, 10)
    remote = BuiltLayer(remote_desc, "sha256:" + "cd" * 32, False, "gzip", 20, origin="reg.example/team/cache",
                        fetch=lambda d, c: fetched.append(d.digest))
    b = ImageBuilder(cache)
    b.add_layer(local, "local")
    b.add_layer(remote, "remote")
    image = b.build()
    assert image.origin_of(remote_desc.digest) == "reg.example/team/cache"
    assert image.origin_of(local.descriptor.digest) is None
    assert image.fetch is not None
    image.fetch(remote_desc, cache)
    assert fetched == [remote_desc.digest]
    # a later image over this one keeps the per-digest origins
    top = ImageBuilder(cache, image).build()
    assert top.origin_of(remote_desc.digest) == "reg.example/team/cache"


def test_keys_name_what_decides_the_bytes() -> None:
    gz = Compression.parse("gzip")
    assert layer_tag("sha256:" + "0" * 64, gz.id) != layer_tag("sha256:" + "0" * 64, Compression.parse("zstd").id)
    assert layer_tag("sha256:" + "0" * 64, gz.id).startswith("oa-layer-") and len(layer_tag("x", "y")) <= 128
    # the deps layer's key is the recipe's (azureml.deps.DepsKey.layer_key): the tag only names it
    assert deps_tag("ab" * 32) == "oa-deps-" + "ab" * 32 and len(deps_tag("ab" * 32)) <= 128


def _args(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(list(argv))


def _layer_cache(args: argparse.Namespace, cache: BlobCache):  # type: ignore[no-untyped-def]
    """The registry layer cache the command's flags (and the environment) ask for, as its job opens it."""
    from ociassemble.build import open_layer_cache
    from ociassemble.settings import Settings

    return open_layer_cache(Settings.from_argparse(args), cache, None, pushing=args.command == "push")


def test_flags_choose_read_and_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_CACHE_REPO, raising=False)
    cache = BlobCache(tmp_path / "c")
    assert _layer_cache(_args("build"), cache) is None  # off by default
    lc = _layer_cache(_args("build", "--cache-repo", "reg.example/team/cache"), cache)
    assert (lc.read, lc.write_enabled, lc.name) == (True, False, "reg.example/team/cache")
    lc = _layer_cache(_args("push", "--cache-repo", "reg.example/team/cache"), cache)
    assert (lc.read, lc.write_enabled) == (True, True)
    lc = _layer_cache(_args("push", "--cache-to", "reg.example/team/cache"), cache)
    assert (lc.read, lc.write_enabled) == (False, True)
    lc = _layer_cache(_args("push", "--cache-from", "reg.example/c", "--cache-to", "reg.example/c"), cache)
    assert (lc.read, lc.write_enabled) == (True, True)
    monkeypatch.setenv(ENV_CACHE_REPO, "reg.example/env/cache")
    assert _layer_cache(_args("build"), cache).name == "reg.example/env/cache"
    assert _layer_cache(_args("push", "--no-cache-repo"), cache) is None
    monkeypatch.setenv(ENV_CACHE_REPO, "off")
    assert _layer_cache(_args("push"), cache) is None


def test_a_program_chooses_the_cache_with_plain_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``layer_cache_from`` is what the flags call: the options are asked for only when a cache is on; it
    reads no environment (``$OCIASSEMBLE_CACHE_REPO`` is the settings', above)."""
    cache, asked = BlobCache(tmp_path / "c"), []

    def options():  # type: ignore[no-untyped-def]
        asked.append(1)
        return None

    monkeypatch.setenv(ENV_CACHE_REPO, "reg.example/env")
    assert layer_cache_from(cache, options=options) is None and not asked
    assert layer_cache_from(cache, repo="reg.example/c", off=True, options=options) is None and not asked
    lc = layer_cache_from(cache, repo="reg.example/c", pushing=True, options=options)
    assert lc is not None and (lc.name, lc.read, lc.write_enabled) == ("reg.example/c", True, True) and asked
    lc = layer_cache_from(cache, read_from="reg.example/c", pushing=True)
    assert lc is not None and (lc.read, lc.write_enabled) == (True, False)


@pytest.mark.parametrize("argv, message", [
    (["build", "--cache-to", "reg.example/c"], "use it with 'ociassemble push'"),
    (["push", "--cache-from", "reg.example/a", "--cache-to", "reg.example/b"], "different repositories"),
    (["push", "--cache-repo", "reg.example/c:v1"], "without :tag"),
    (["push", "--cache-repo", "reg.example/c@sha256:" + "0" * 64], "without :tag"),
])
def test_bad_cache_flags_are_usage_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str],
                                          message: str) -> None:
    monkeypatch.delenv(ENV_CACHE_REPO, raising=False)
    with pytest.raises(UsageError, match=message):
        _layer_cache(_args(*argv), BlobCache(tmp_path / "c"))


def test_write_only_cache_never_reads(tmp_path: Path) -> None:
    lc = RegistryLayerCache("reg.example/team/cache", BlobCache(tmp_path / "c"), read=False)
    assert not lc.reading
    assert lc.find_layer("sha256:" + "0" * 64, 1, Compression.parse("gzip")) is None  # no request made
