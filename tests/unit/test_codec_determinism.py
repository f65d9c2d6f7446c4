"""The layer codecs give the same bytes whatever the process, its memory layout or the CPU.

ISA-L's x86 level-1 deflate, used before, mixed bits 16-47 of its stream struct's address
into one hash slot per block, so a block compressed another way in some processes (about
one in 18,000) and never within one: tests that build twice in one process could not see
it. These tests move what such a bug would feed on, one thing at a time: the address of
the codec's state (placed by us), the heap of fresh processes, the CPU features the
library dispatches on.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import mmap
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import deflate
import pytest

from ociassemble.image.compress import GZIP_BLOCK, Compression, compress_stream

REPO = Path(__file__).resolve().parents[2]


def _sample(n: int, seed: int = 5) -> bytes:
    """Text-like data with long and short repeats (deflate finds matches at every distance)."""
    import random

    rng = random.Random(seed)
    words = [bytes(rng.choice(b"etaoinshrdlucmfw_.(): \n") for _ in range(rng.randint(1, 14))) for _ in range(4000)]
    out = bytearray()
    while len(out) < n:
        out += rng.choice(words)
        if rng.random() < 0.01:
            out += out[-rng.randint(100, min(len(out), 30000) or 100):][:rng.randint(10, 300)]
    return bytes(out[:n])


def _libdeflate() -> ctypes.CDLL:
    """The very libdeflate the ``deflate`` wheel carries (it exports the C API)."""
    return ctypes.CDLL(deflate._deflate.__file__)


class _Options(ctypes.Structure):
    _fields_ = [("sizeof_options", ctypes.c_size_t),
                ("malloc_func", ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_size_t)),
                ("free_func", ctypes.CFUNCTYPE(None, ctypes.c_void_p))]


@pytest.mark.parametrize("level", [1, 6, 12])
def test_gzip_bytes_do_not_depend_on_where_the_compressor_state_lives(level: int) -> None:
    """The targeted test ISA-L would have failed: one block, the compressor's state placed
    at 40 chosen addresses (64 KiB steps plus odd page offsets, so bits 12-25 all move),
    one output. Also equal to what the wheel's own gzip_compress (its own malloc) gives."""
    lib = _libdeflate()
    lib.libdeflate_alloc_compressor_ex.restype = ctypes.c_void_p
    lib.libdeflate_alloc_compressor_ex.argtypes = [ctypes.c_int, ctypes.POINTER(_Options)]
    lib.libdeflate_gzip_compress.restype = ctypes.c_size_t
    lib.libdeflate_gzip_compress.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                                             ctypes.c_void_p, ctypes.c_size_t]
    lib.libdeflate_free_compressor.argtypes = [ctypes.c_void_p]

    arena = mmap.mmap(-1, 96 << 20)
    base = ctypes.addressof(ctypes.c_char.from_buffer(arena))
    where = {"offset": 0}
    placed: list[int] = []

    @ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_size_t)
    def place(size: int) -> int:
        assert where["offset"] + size <= len(arena), "the arena is too small for the compressor"
        placed.append(base + where["offset"])
        return base + where["offset"]

    @ctypes.CFUNCTYPE(None, ctypes.c_void_p)
    def release(_ptr: int) -> None:
        pass

    options = _Options(ctypes.sizeof(_Options), place, release)
    block = _sample(GZIP_BLOCK)
    out = ctypes.create_string_buffer(2 * len(block) + 1024)
    results = set()
    for k in range(40):
        where["offset"] = k * 65536 * 17 % (48 << 20) + (k % 7) * 4096 + (k % 3) * 8
        comp = lib.libdeflate_alloc_compressor_ex(level, ctypes.byref(options))
        assert comp, "libdeflate could not allocate a compressor"
        try:
            n = lib.libdeflate_gzip_compress(comp, block, len(block), out, len(out))
        finally:
            lib.libdeflate_free_compressor(comp)
        assert n > 0
        results.add(out.raw[:n])
    assert len({p >> 16 for p in placed}) >= 30, "the state did not move across 64 KiB boundaries"
    assert len(results) == 1
    assert results.pop() == bytes(deflate.gzip_compress(block, level))
    del place, release
    arena.close()


_CHILD = r"""
import ctypes, hashlib, sys
import deflate
force = sys.argv[1]
if force != "native":
    lib = ctypes.CDLL(deflate._deflate.__file__)
    for name in ("libdeflate_x86_cpu_features", "libdeflate_arm_cpu_features"):
        try:
            var = ctypes.c_uint32.in_dll(lib, name)
        except ValueError:
            continue
        var.value = 1 << 31   # "features known": none, so every generic code path
        break
    else:
        print("no-cpu-features-symbol")
        sys.exit(0)
from ociassemble.image.compress import Compression, compress_stream
data = open(sys.argv[2], "rb").read()
h = hashlib.sha256()
class S:
    def write(self, b):
        h.update(b); return len(b)
compress_stream(iter([data[i:i + 300000] for i in range(0, len(data), 300000)]), S(), Compression.parse("gzip", int(sys.argv[3])), lambda c: None)
print(h.hexdigest())
"""


@pytest.mark.parametrize("level", [1, 6])
def test_gzip_bytes_do_not_depend_on_the_cpu_features_libdeflate_sees(tmp_path: Path, level: int) -> None:
    """libdeflate picks vector code paths at run time from the CPU's features; with every
    feature hidden (the generic C paths, as on an old x86-64) a fresh process writes the
    same stream as one using this CPU's best."""
    data = tmp_path / "data"
    data.write_bytes(_sample(3 * GZIP_BLOCK + 777, seed=9))
    outs = {}
    for force in ("native", "generic"):
        r = subprocess.run([sys.executable, "-c", _CHILD, force, str(data), str(level)],
                           capture_output=True, text=True, check=True, cwd=tmp_path)
        outs[force] = r.stdout.strip()
    assert outs["generic"] != "no-cpu-features-symbol", "this libdeflate exports no CPU-features variable to force"
    assert outs["native"] == outs["generic"]
    assert len(outs["native"]) == 64


_QEMU_X86 = shutil.which("qemu-x86_64-static")

_HUFFMAN_CHILD = r"""
import ctypes, hashlib, sys
import deflate
from ociassemble.image.compress import Compression, compress_stream
data = open(sys.argv[1], "rb").read()
h = hashlib.sha256()
class S:
    def write(self, b):
        h.update(b); return len(b)
compress_stream(iter([data[i:i + 300000] for i in range(0, len(data), 300000)]), S(),
                Compression("gzip", 1, huffman=True), lambda c: None)
deflate.gzip_compress(data[:100000], 6)   # so libdeflate has probed the CPU: its view, printed
print(h.hexdigest(), hex(ctypes.c_uint32.in_dll(ctypes.CDLL(deflate._deflate.__file__), "libdeflate_x86_cpu_features").value))
"""


@pytest.mark.qemu
@pytest.mark.skipif(platform.machine() != "x86_64", reason="x86 SIMD levels: the child is this machine's Python, "
                    "which qemu-x86_64 runs only on an x86-64 host")
@pytest.mark.skipif(_QEMU_X86 is None, reason="qemu-x86_64-static is not installed (scripts/setup installs qemu-user-static)")
def test_huffman_gzip_bytes_are_the_same_at_every_x86_simd_level(tmp_path: Path) -> None:
    """zlib-ng picks its vector code at run time from CPUID and exports nothing to force, so
    the child runs under qemu's x86-64 emulation with CPU models that report less: qemu64
    (SSE2 only, as the first x86-64s) and Haswell (AVX2), and natively (this CPU's best).
    libdeflate's probe of the same process shows the three really saw other CPUs."""
    data = tmp_path / "data"
    x, y, z = (int.from_bytes(hashlib.shake_256(k).digest(2 * GZIP_BLOCK), "big") for k in (b"x", b"y", b"z"))
    data.write_bytes(((x & y) | z).to_bytes(2 * GZIP_BLOCK, "big") + _sample(GZIP_BLOCK + 777, seed=4))
    outs = {}
    for cpu in ("native", "qemu64", "Haswell"):
        argv = [sys.executable, "-c", _HUFFMAN_CHILD, str(data)]
        if cpu != "native":
            argv = [_QEMU_X86, "-cpu", cpu, *argv]
        r = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=REPO, timeout=600)
        outs[cpu] = r.stdout.split()
    assert len({features for _, features in outs.values()}) == 3, outs
    assert outs["qemu64"][1] == "0x80000001", "qemu64 should show no vector feature beyond SSE2"
    assert len({digest for digest, _ in outs.values()}) == 1, outs


def test_zstd_and_none_are_the_same_on_every_run() -> None:
    data = _sample(3 * GZIP_BLOCK, seed=3)
    for codec in ("zstd", "none"):
        digests = set()
        for step in (1 << 20, 123457):
            out = io.BytesIO()
            compress_stream(iter([data[i:i + step] for i in range(0, len(data), step)]), out,
                            Compression.parse(codec), lambda c: None)
            digests.add(hashlib.sha256(out.getvalue()).hexdigest())
        assert len(digests) == 1, codec


def test_every_codec_gives_one_digest_across_fresh_processes_and_shifted_heaps() -> None:
    """The small CI version of scripts/repro-codecs (the full run: 200 processes x 512 MiB,
    docs/reproducibility.md): fresh processes, ASLR on, every other one with its heap
    shifted by k x 64 KiB first; one digest per codec."""
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "repro-codecs"), "--processes", "10",
                        "--mib", "24"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith(("gzip:", "gzip-huffman:", "zstd:", "none:"))]
    assert len(lines) == 4 and all("one digest" in line for line in lines), r.stdout
