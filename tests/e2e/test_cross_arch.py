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
#: --layer TREE:/data --compression CODEC (SOURCE_DATE_EPOCH=0), on every architecture;
#: for "gzip-weights", its weights tree with --compression gzip.
GOLDEN = {
    # gzip by libdeflate; the history line of --layer names its destination only (issue 13)
    "gzip": "sha256:23584ce1316bc6a40d47d41bc9240139c30ade19ec06bea8fdcc1d52badc098a",
    "zstd": "sha256:d50f842c711da211c99e993efa0758c4f8217cf305eafcfe9569cd94afe0c53b",
    "none": "sha256:11e31d1f27221d505c0839f55071ecbf67f4c29316eb7524028d56f9dbe2f7e4",
    # the 17 MiB weights-like tree, gzip forced: Huffman-only by zlib-ng (LAYER_FORMAT 4)
    "gzip-weights": "sha256:9d86b1d939c18ba105987b602122a0fec1498115bd9c6c97af6209994fcb924c",
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
