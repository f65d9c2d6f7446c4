"""Performance invariants that do not depend on the machine's speed: memory stays flat.

Not timed: speed is measured by ``scripts/bench``, on purpose outside the test suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

LAYER_MIB = 256
#: what one layer build may add to the process's peak RSS, whatever the layer's size:
#: a few 1 MiB chunks in each pipeline stage, the gzip blocks in flight, zstd's window.
MAX_RSS_DELTA_MB = 100

_CHILD = r"""
import json, os, resource, sys
from pathlib import Path
from ociassemble.image.cache import BlobCache
from ociassemble.image.compress import Compression
from ociassemble.image.layer import LayerSource, build_layer

src, cache_dir, codec = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
cache = BlobCache(cache_dir)
# warm up: imports, thread pools and codec state are not the layer's memory
tiny = src.parent / "tiny"
tiny.mkdir(exist_ok=True)
(tiny / "f").write_bytes(os.urandom(3 << 20))
build_layer(cache, [LayerSource(tiny, "/t")], compression=Compression.parse(codec))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
layer = build_layer(cache, [LayerSource(src, "/model")], compression=Compression.parse(codec))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"delta_mb": (after - before) / 1024, "size": layer.uncompressed_size,
                  "media_type": layer.descriptor.media_type}))
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("model") / "weights"
    d.mkdir()
    # Not sparse: each 1 MiB block differs, so gzip and zstd do real work; cheap to make.
    block = bytes(range(256)) * 4096
    with open(d / "weights.bin", "wb") as f:
        for i in range(LAYER_MIB):
            f.write(i.to_bytes(4, "little") + block[4:])
    return d


@pytest.mark.parametrize("codec", ["gzip", "zstd", "none"])
def test_a_big_layer_is_written_with_flat_memory(model_dir: Path, tmp_path: Path, codec: str) -> None:
    r = subprocess.run([sys.executable, "-c", _CHILD, str(model_dir), str(tmp_path / "cache"), codec],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["size"] > LAYER_MIB << 20
    assert result["delta_mb"] < MAX_RSS_DELTA_MB, f"{codec}: peak RSS grew {result['delta_mb']:.0f} MB for a {LAYER_MIB} MiB layer"
