"""``ociassemble run`` of another architecture's image through qemu user emulation, and
``run --platform`` picking one image of a multi-platform one.

Runs on an amd64 or an arm64 machine (``tests.hostarch``): the native image is this machine's
(``HOST``, on ``debian_base``), the foreign one is the other of the two (``FOREIGN``: linux/arm64
on x86-64, linux/amd64 on aarch64; on ``foreign_base``, ``make-base --platform FOREIGN`` made once
into the shared test cache). Needs root, bubblewrap and qemu-user-static with binfmt-support
(scripts/setup installs them; ``run`` mounts binfmt_misc and enables the handler itself).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from ociassemble.image.assemble import Image, ImageBuilder
from ociassemble.image.cache import BlobCache
from ociassemble.image.imageindex import ImageIndex
from ociassemble.image.layer import LayerSource, build_layer
from ociassemble.image.platform import parse_platform
from ociassemble.inputs.base import load_base
from ociassemble.transport.layout import write_layout
from tests.conftest import free_port, run_cli
from tests.hostarch import FOREIGN, FOREIGN_ARCH, FOREIGN_MACHINE, FOREIGN_NAME, HOST, HOST_MACHINE, HOST_NAME

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="ociassemble run needs root"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed"),
    pytest.mark.skipif(HOST_MACHINE not in ("x86_64", "aarch64"),
                       reason="emulates arm64 on an x86-64 machine or amd64 on an aarch64 one"),
]

#: Prints the machine as the kernel and as Python see it (both ``FOREIGN_MACHINE`` under qemu).
MACHINE = ("/bin/sh", "-c", "uname -m; exec python3 -c 'import platform; print(platform.machine())'")


@pytest.fixture(scope="module")
def foreign_server(foreign_base: str, shared_cache: BlobCache, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``FOREIGN`` image built by the CLI: writes ``uname -m`` to /srv, then serves /srv on 5001."""
    work = tmp_path_factory.mktemp("foreign-server")
    (work / "srv").mkdir()
    (work / "srv" / "hello.txt").write_text(f"hello from {FOREIGN_ARCH}\n")
    script = ("uname -m > /srv/machine.txt && python3 -c 'import platform; print(platform.machine())' "
              "> /srv/python.txt && exec python3 -m http.server 5001 --bind 127.0.0.1 -d /srv")
    proc = run_cli("build", "--plain", "--base", foreign_base, "--platform", FOREIGN_NAME,
                   "--layer", f"{work / 'srv'}:/srv", "--cmd", json.dumps(["/bin/sh", "-c", script]),
                   "-o", f"oci:{work / 'image'}:latest", "--json", "--cache-dir", str(shared_cache.root))
    assert proc.returncode == 0, proc.stderr
    assert [p["platform"] for p in json.loads(proc.stdout)["platforms"]] == [str(FOREIGN)]
    return work / "image"


def _image(cache: BlobCache, base: str, platform_: str, srv: Path) -> Image:
    b = ImageBuilder(cache, load_base(base, cache, platform=parse_platform(platform_)))
    b.add_layer(build_layer(cache, [LayerSource(srv, "/srv")], epoch=0), "COPY srv /srv")
    b.config = replace(b.config, cmd=MACHINE)
    return b.build(0)


@pytest.fixture(scope="module")
def two_platforms(debian_base: str, foreign_base: str, shared_cache: BlobCache,
                  tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OCI layout of a linux/amd64 + linux/arm64 index (in that order on either host, so this
    machine's image is not always the first), each image printing its machine."""
    work = tmp_path_factory.mktemp("two-platforms")
    (work / "srv").mkdir()
    (work / "srv" / "hello.txt").write_text("hello\n")
    bases = {HOST_NAME: debian_base, FOREIGN_NAME: foreign_base}
    index = ImageIndex.of([_image(shared_cache, bases[name], name, work / "srv")
                           for name in ("linux/amd64", "linux/arm64")])
    write_layout(index, shared_cache, work / "index", "latest")
    return work / "index"


def _run(image: Path, cache: BlobCache, *flags: str) -> subprocess.CompletedProcess[str]:
    return run_cli("run", f"oci:{image}", *flags, "--cache-dir", str(cache.root))


def test_a_foreign_image_serves_through_qemu(foreign_server: Path, shared_cache: BlobCache) -> None:
    """Built and run on this machine: its programs are ``FOREIGN_MACHINE`` ones; its port answers
    once ``run`` says it is ready (run's own readiness wait, longer under emulation)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ociassemble.cli", "run", f"oci:{foreign_server}",
                             "--publish", f"127.0.0.1:{port}:5001", "--cache-dir", str(shared_cache.root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # ends when run exits: it fails the test below
            log.append(line)
            if line.startswith("ociassemble: running "):
                break
        assert log and f"({FOREIGN}, emulated by qemu)" in log[-1], "".join(log)
        assert any("qemu user emulation" in line for line in log)
        for name in ("machine.txt", "python.txt"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/{name}", timeout=30) as resp:
                assert resp.read() == f"{FOREIGN_MACHINE}\n".encode()
    finally:
        proc.send_signal(signal.SIGTERM)  # as `kill <run's pid>` would
        try:
            rest = proc.communicate(timeout=60)[1]
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 128 + signal.SIGTERM, "".join(log) + rest


def test_run_platform_picks_the_image_of_an_index(two_platforms: Path, shared_cache: BlobCache) -> None:
    native = _run(two_platforms, shared_cache)
    assert native.returncode == 0 and native.stdout == f"{HOST_MACHINE}\n" * 2, native.stderr
    assert "emulated" not in native.stderr
    foreign = _run(two_platforms, shared_cache, "--platform", FOREIGN_NAME)
    assert foreign.returncode == 0 and foreign.stdout == f"{FOREIGN_MACHINE}\n" * 2, foreign.stderr
    assert f"({FOREIGN}, emulated by qemu)" in foreign.stderr


def test_run_of_a_platform_the_image_lacks_names_what_it_has(two_platforms: Path, foreign_server: Path,
                                                             shared_cache: BlobCache) -> None:
    proc = _run(two_platforms, shared_cache, "--platform", "linux/s390x")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "has no image for linux/s390x; it has linux/amd64, linux/arm64/v8" in proc.stderr
    proc = _run(foreign_server, shared_cache, "--platform", HOST_NAME)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"has no image for {HOST}; it has {FOREIGN} (run it with --platform {FOREIGN}" in proc.stderr
    proc = _run(foreign_server, shared_cache, "--platform", "all")
    assert proc.returncode == 1 and "a run is of one image" in proc.stderr


def test_run_without_emulation_is_a_run_error_before_unpacking(foreign_server: Path, shared_cache: BlobCache,
                                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host with no binfmt_misc (here: an empty folder standing for /proc/sys/fs/binfmt_misc,
    and no update-binfmts to set it up) fails at start, naming what to do, with nothing unpacked."""
    from ociassemble.errors import RunError
    from ociassemble.imageio import load_image
    from ociassemble.run.container import RunningImage

    which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "update-binfmts" else which(name, *a, **k))
    image = load_image(f"oci:{foreign_server}", shared_cache)
    cache = BlobCache(tmp_path / "cache")
    running = RunningImage(image, cache, binfmt=tmp_path / "binfmt_misc")
    with pytest.raises(RunError, match=re.escape(f"running a {FOREIGN} image needs to run {FOREIGN_ARCH} programs "
                                                 f"on this {HOST_MACHINE} machine: binfmt_misc is not mounted")):
        running.start()
    assert running.pid is None and not (cache.root / "rootfs").exists()
