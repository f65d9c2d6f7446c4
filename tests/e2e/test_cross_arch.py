"""The same fixed project gives the same image digest on amd64 and on arm64: one natively, the
other under qemu (``tests.hostarch``: arm64 emulated on an x86-64 machine, amd64 on an aarch64 one).

scripts/cross-arch does the work (binfmt, the foreign architecture's default base unpacked as
the rootfs, this checkout's dependencies' wheels for that architecture unpacked for it, the
builds); this runs it once and holds its results to two things per codec: foreign == host, and
both == the golden digest below.

To regenerate GOLDEN (after a deliberate change to the layer format, a codec or its pinned
version, or scripts/cross-arch's make_tree), run as root on an x86-64 or aarch64 Debian
machine (the results are keyed "amd64" and "arm64" on either)::

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
from tests.hostarch import FOREIGN, HOST

#: The keys of each codec's two results: this machine's architecture, the emulated one's.
NATIVE, EMULATED = HOST.architecture, FOREIGN.architecture

#: Manifest digest of scripts/cross-arch's fixed tree built with --plain --base scratch
#: --layer TREE:/data --compression CODEC (SOURCE_DATE_EPOCH=0), on every architecture;
#: for "gzip-weights", its weights tree with --compression gzip.
GOLDEN = {
    # gzip by libdeflate; the history line of --layer names its destination only (issue 13);
    # layer format 4: docs/notes3.txt (over 1 MiB) has its data at a 4096-byte offset (issue 17)
    "gzip": "sha256:c0a370c00bec3243c9d4f318dcba0cb5a9ba642a630d1eec009916ef586d0c89",
    "zstd": "sha256:5ae8d8db21ecf009d6a922b3e3799fd13429163aa02b3aa6d6fbfd23687d3d00",
    "none": "sha256:2bc459d7e5ce6cd45207f74c8231777697aa94526b2fd259f75d38cd8b795f24",
    # the 17 MiB weights-like tree, gzip forced: Huffman-only by zlib-ng (LAYER_FORMAT 5)
    "gzip-weights": "sha256:66ee350486c55d61383a6216135eeacfbf37498c5036234a49f714acda8a4ceb",
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


def test_the_foreign_python_has_the_versions_installed_here(cross_arch: dict) -> None:
    """Otherwise a difference could be two codec versions, not two architectures (the versions
    the emulated python3 itself finds, against this venv's)."""
    assert cross_arch["versions_differing"] == {}


@pytest.mark.parametrize("codec", sorted(GOLDEN))
def test_same_digest_on_host_and_foreign(cross_arch: dict, codec: str) -> None:
    host, foreign = cross_arch["codecs"][codec][NATIVE], cross_arch["codecs"][codec][EMULATED]
    assert foreign["diff_ids"] == host["diff_ids"], "the uncompressed layer (tar) differs"
    assert foreign["layers"] == host["layers"], f"{codec}: same tar, other compressed bytes on {EMULATED}"
    assert foreign["manifest"] == host["manifest"]


@pytest.mark.parametrize("codec", sorted(GOLDEN))
def test_golden_digest_on_both(cross_arch: dict, codec: str) -> None:
    result = cross_arch["codecs"][codec]
    assert {arch: result[arch]["manifest"] for arch in (NATIVE, EMULATED)} == \
        {NATIVE: GOLDEN[codec], EMULATED: GOLDEN[codec]}
