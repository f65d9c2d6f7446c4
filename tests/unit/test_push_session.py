"""What a push opens before any work (``registry.session.open_push``), from the settings' plain values.

No request is sent by opening a session: these need no registry.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ociassemble.errors import UsageError
from ociassemble.image.cache import BlobCache
from ociassemble.redact import Secrets, clean
from ociassemble.registry.options import layer_cache_for, options_for
from ociassemble.registry.session import open_push
from ociassemble.settingparts import LayerCacheSettings, RegistrySettings

CREDS = RegistrySettings(username="me", password="s3cret", insecure_registries=("reg.example:5000",))


def test_a_push_session_binds_the_credentials_to_the_destination(tmp_path: Path) -> None:
    secrets = Secrets()
    session = open_push(CREDS, ["reg.example:5000/team/app:1", "reg.example:5000/team/app:latest"],
                        BlobCache(tmp_path), secrets=secrets)
    opts = session.options
    assert (opts.username, opts.password, opts.credentials_registry) == ("me", "s3cret", "reg.example:5000")
    assert opts.insecure_registries == ("reg.example:5000",)
    assert "s3cret" not in clean("token s3cret", secrets)  # every credential the push may send is known to redact
    assert session.refs == ("reg.example:5000/team/app:1", "reg.example:5000/team/app:latest")
    assert session.layer_cache is None and session.uploader is None
    session.close()  # nothing opened: nothing to close, no error


def test_credentials_for_two_registries_are_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="one\\s+registry"):
        open_push(CREDS, ["a.example/x:1", "b.example/x:1"], BlobCache(tmp_path), speculative=True,
                  layer_cache=LayerCacheSettings(repo="a.example/cache"))


def test_the_layer_cache_and_the_uploader_of_a_push_that_builds(tmp_path: Path) -> None:
    waits: list[tuple[str, float]] = []
    session = open_push(RegistrySettings(), ["reg.example/team/app:1"], BlobCache(tmp_path),
                        layer_cache=LayerCacheSettings(repo="reg.example/team/cache"), speculative=True,
                        on_wait=lambda registry, seconds: waits.append((registry, seconds)))
    try:
        lc, up = session.layer_cache, session.uploader
        assert lc is not None and (lc.name, lc.read, lc.write_enabled) == ("reg.example/team/cache", True, True)
        assert up is not None and (up.client.registry, up.repo) == ("reg.example", "team/app")
        assert session.options.on_wait is not None and lc.options is session.options and up.options is session.options
    finally:
        session.close()


def test_a_build_reads_the_layer_cache_and_never_writes_it(tmp_path: Path) -> None:
    opts = options_for(RegistrySettings(), "reg.example/team/base:1")
    lc = layer_cache_for(LayerCacheSettings(repo="reg.example/team/cache"), BlobCache(tmp_path), opts, pushing=False)
    assert lc is not None and (lc.read, lc.write_enabled) == (True, False)
    assert layer_cache_for(LayerCacheSettings(repo="reg.example/c", off=True), BlobCache(tmp_path), opts,
                           pushing=True) is None
    with pytest.raises(UsageError, match="--cache-to"):
        layer_cache_for(LayerCacheSettings(write_to="reg.example/c"), BlobCache(tmp_path), opts, pushing=False)
