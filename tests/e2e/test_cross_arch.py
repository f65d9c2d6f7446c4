"""The same fixed project gives the same image digest on amd64 and on arm64 (under qemu).

scripts/cross-arch does the work (binfmt, the cached arm64 rootfs, an offline venv of this
checkout's wheels in it, the builds); this runs it once and holds its results to two things
per codec: arm64 == amd64, and both == the golden digest below.

To regenerate GOLDEN (after a deliberate change to the layer format, a codec or its pinned
version, or scripts/cross-arch's make_tree), run as root on an x86-64 Debian machine::

    scripts/cross-arch --json | .venv/bin/python -c 'import json, sys
    for c, r in json.load(sys.stdin)["codecs"].items(): print(c, r["same"], r["amd64"]["manifest"])'

and copy each digest whose line says True. Never pin a digest of a codec whose two
architectures disagree (False): that disagreement is the bug this test is for.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, test_cache_root

#: Manifest digest of scripts/cross-arch's fixed tree built with --plain --base scratch
#: --layer TREE:/data --compression CODEC (SOURCE_DATE_EPOCH=0), on every architecture.
GOLDEN = {
    # ISA-L level 1 as built on x86-64; arm64's ISA-L gives other bytes (sha256:5f635902…):
    # issue 13. Regenerate when the gzip codec changes.
    "gzip": "sha256:9ea17ed9192410ba0d843613b8bfe2810708ebe7d2f082a96cd5eb93af9b3872",
    "zstd": "sha256:c427ce09cfab35785a93ea7e86ce1d377f849b7bed0eb9489eaa8da766ebc072",
    "none": "sha256:4090116ca9736f8841a973d88c6466dd2fd8f4fbc4eb8267fbf14111269aed67",
}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cross_arch() -> dict:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "cross-arch"), "--json", "-q",
                           "--cache-dir", str(test_cache_root())],
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode not in (0, 1):
        pytest.fail((proc.stderr.strip().splitlines() or [f"scripts/cross-arch exited {proc.returncode}"])[-1],
                    pytrace=False)
    return json.loads(proc.stdout)


def test_the_arm64_venv_has_the_versions_installed_here(cross_arch: dict) -> None:
    """Otherwise a difference could be two codec versions, not two architectures."""
    assert cross_arch["versions_differing"] == {}


@pytest.mark.parametrize("codec", sorted(GOLDEN))
def test_same_digest_on_amd64_and_arm64(cross_arch: dict, codec: str) -> None:
    amd64, arm64 = cross_arch["codecs"][codec]["amd64"], cross_arch["codecs"][codec]["arm64"]
    assert arm64["diff_ids"] == amd64["diff_ids"], "the uncompressed layer (tar) differs"
    assert arm64["layers"] == amd64["layers"], f"{codec}: same tar, other compressed bytes on arm64"
    assert arm64["manifest"] == amd64["manifest"]


@pytest.mark.parametrize("codec", sorted(GOLDEN))
def test_golden_digest_on_both(cross_arch: dict, codec: str) -> None:
    result = cross_arch["codecs"][codec]
    assert {arch: result[arch]["manifest"] for arch in ("amd64", "arm64")} == \
        {"amd64": GOLDEN[codec], "arm64": GOLDEN[codec]}
