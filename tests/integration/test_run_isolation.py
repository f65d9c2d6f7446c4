"""Attacks from inside an image against the host, through the real ``ociassemble run`` sandbox: all must fail.

Each test runs the Debian base (``test_run``'s fixtures, sharing its unpacked rootfs)
with a command that tries one escape the issue found on main: writing kernel settings
through /proc, reading root's kernel keyring, mounting, reaching the host's root
through /proc/PID/root, and a WorkingDir or symlink leading bwrap out of the image.
The attack's own report (its stdout) is checked, and so is the host.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import subprocess
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Callable

import pytest

from ociassemble.errors import RunError
from ociassemble.image.assemble import Image, ImageBuilder
from ociassemble.image.cache import BlobCache
from ociassemble.image.layer import LayerSource, build_layer
from ociassemble.inputs.base import load_base
from ociassemble.run.container import RunningImage
from ociassemble.run.idmap import host_idmap
from ociassemble.run.seccomp import SYSCALLS
from ociassemble.run.unpack import rootfs_path
from tests.integration.test_run import make_image, run_cache  # noqa: F401 - fixtures

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="runs as root (tests/e2e/test_run_rootless.py covers the rest)"),
    pytest.mark.skipif(not os.path.exists("/usr/bin/bwrap"), reason="bubblewrap is not installed"),
]

#: The attack scripts' shared prelude: ``attempt(name, fn)`` records "ok" or the errno's name.
_PRELUDE = r'''
import ctypes, errno, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
report = {}
def attempt(name, fn):
    try:
        fn()
        report[name] = "ok"
    except OSError as exc:
        report[name] = errno.errorcode.get(exc.errno, str(exc.errno))
def write(path, data):
    with open(path, "w") as f:
        f.write(data)
def check(r):
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r
'''


def _attack(make_image: Callable[..., Image], cache: BlobCache, script: str, **config: object) -> dict[str, object]:
    """Run ``script`` (after the prelude, ending with ``print(json.dumps(report))``) as the image's command."""
    img = make_image(("python3", "-c", _PRELUDE + script + "\nprint(json.dumps(report))"), **config)
    return _run(img, cache)


def _run(img: Image, cache: BlobCache) -> dict[str, object]:
    out = cache.root / f"attack-{uuid.uuid4().hex}.out"
    with open(out, "wb") as f, RunningImage(img, cache, stdout=f) as running:
        status = running.wait(120)
    text = out.read_text()
    out.unlink()
    assert status == 0, text
    return json.loads(text.strip().splitlines()[-1])


def test_proc_kernel_settings_are_out_of_reach(run_cache: BlobCache, make_image: Callable[..., Image]) -> None:
    before = Path("/proc/sys/kernel/core_pattern").read_text()
    seen = _attack(make_image, run_cache, r'''
attempt("core_pattern", lambda: write("/proc/sys/kernel/core_pattern", "|/tmp/pwn %p"))
attempt("sysrq", lambda: write("/proc/sysrq-trigger", "h"))
attempt("hostname_sysctl", lambda: write("/proc/sys/kernel/hostname", "pwned"))
report["kcore"] = open("/proc/kcore", "rb").read(16).hex() if os.access("/proc/kcore", os.R_OK) else "unreadable"
report["uid_map"] = open("/proc/self/uid_map").read().split()
''')
    assert seen["core_pattern"] in ("EROFS", "EACCES", "EPERM"), seen
    # (a kernel without CONFIG_MAGIC_SYSRQ has no such file at all)
    assert seen["sysrq"] in ("EROFS", "EACCES", "EPERM") + (() if Path("/proc/sysrq-trigger").exists() else ("ENOENT",)), seen
    assert seen["hostname_sysctl"] in ("EROFS", "EACCES", "EPERM"), seen
    assert seen["kcore"] in ("", "unreadable"), seen  # masked: /dev/null
    assert Path("/proc/sys/kernel/core_pattern").read_text() == before
    # the image's root is an unprivileged range of host ids, not the host's root
    inside, outside, count = (int(n) for n in seen["uid_map"])  # type: ignore[union-attr]
    assert inside == 0 and outside == host_idmap().host_uid(0) and outside >= 100000 and count == 65536


_KEY_SPEC_SESSION, _KEY_SPEC_USER = -3, -4


def _add_key(description: bytes, secret: bytes, keyring: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    nr = SYSCALLS["add_key"][platform.machine()]
    serial = libc.syscall(nr, b"user", description, secret, len(secret), keyring)
    if serial < 0:
        pytest.skip(f"cannot add a key to the host's keyring here: {os.strerror(ctypes.get_errno())}")
    return int(serial)


def _revoke(serial: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall(SYSCALLS["keyctl"][platform.machine()], 3, serial)  # KEYCTL_REVOKE


def test_roots_keyring_is_out_of_reach(run_cache: BlobCache, make_image: Callable[..., Image]) -> None:
    description = f"ociassemble-isolation-{uuid.uuid4().hex}".encode()
    secret = uuid.uuid4().hex.encode()
    serials = [_add_key(description, secret, _KEY_SPEC_SESSION), _add_key(description, secret, _KEY_SPEC_USER)]
    try:
        keyctl = SYSCALLS["keyctl"][platform.machine()]
        seen = _attack(make_image, run_cache, rf'''
desc = {description!r}
for ring, spec in (("session", -3), ("user", -4)):
    def search(spec=spec):
        serial = check(libc.syscall({keyctl}, 10, spec, b"user", desc, 0))   # KEYCTL_SEARCH
        buf = ctypes.create_string_buffer(256)
        n = check(libc.syscall({keyctl}, 11, serial, buf, 256))             # KEYCTL_READ
        report["secret"] = buf.raw[:n].decode()
    attempt("search_" + ring, search)
attempt("add_key", lambda: check(libc.syscall({SYSCALLS["add_key"][platform.machine()]}, b"user", b"x", b"y", 1, -3)))
try:
    report["proc_keys"] = open("/proc/keys").read()
except OSError as exc:
    report["proc_keys"] = errno.errorcode[exc.errno]
''')
    finally:
        for serial in serials:
            _revoke(serial)
    assert seen["search_session"] == "EPERM" and seen["search_user"] == "EPERM", seen
    assert seen["add_key"] == "EPERM", seen
    assert "secret" not in seen
    assert seen["proc_keys"] in ("", "EACCES", "ENOENT"), seen  # masked by /dev/null


def test_mount_and_new_namespaces_are_refused(run_cache: BlobCache, make_image: Callable[..., Image]) -> None:
    machine = platform.machine()
    seen = _attack(make_image, run_cache, rf'''
attempt("mount", lambda: check(libc.mount(b"none", b"/mnt", b"tmpfs", 0, None)))
attempt("bind_proc", lambda: check(libc.mount(b"/proc", b"/mnt", None, 0x1000, None)))
attempt("umount_proc", lambda: check(libc.umount2(b"/proc/sys", 2)))
attempt("unshare_user", lambda: check(libc.unshare(0x10000000)))
attempt("unshare_mount", lambda: check(libc.unshare(0x00020000)))
attempt("ptrace", lambda: check(libc.syscall({SYSCALLS["ptrace"][machine]}, 16, 1, 0, 0)))   # PTRACE_ATTACH pid 1
attempt("open_by_handle_at", lambda: check(libc.syscall({SYSCALLS["open_by_handle_at"][machine]}, -100, None, 0)))
attempt("bpf", lambda: check(libc.syscall({SYSCALLS["bpf"][machine]}, 0, None, 0)))
report["cap_eff"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0]
''')
    for call in ("mount", "bind_proc", "umount_proc", "unshare_user", "unshare_mount", "ptrace",
                 "open_by_handle_at", "bpf"):
        assert seen[call] == "EPERM", (call, seen)
    cap_sys_admin = 1 << 21
    assert not int(str(seen["cap_eff"]), 16) & cap_sys_admin


def test_host_root_is_not_reachable_through_proc(run_cache: BlobCache, make_image: Callable[..., Image]) -> None:
    marker = Path("/var/tmp") / f"ociassemble-host-marker-{uuid.uuid4().hex}"
    marker.write_text("host only")
    try:
        seen = _attack(make_image, run_cache, rf'''
marker = {str(marker)!r}
pids = [p for p in os.listdir("/proc") if p.isdigit()]
report["pids"] = sorted(map(int, pids))
report["reached"] = [p for p in pids for path in (f"/proc/{{p}}/root" + marker, f"/proc/{{p}}/cwd/../../../.." + marker)
                     if os.path.exists(path)]
report["oldroot"] = os.path.exists("/oldroot") or os.path.exists("/proc/1/root/oldroot" + marker)
attempt("chroot_escape", lambda: os.chroot("/proc/1/root"))
report["after_chroot"] = os.path.exists(marker)
''')
    finally:
        marker.unlink()
    assert seen["reached"] == [] and seen["oldroot"] is False and seen["after_chroot"] is False, seen
    assert max(seen["pids"]) < 100  # type: ignore[arg-type] - the image's own PID namespace, no host PIDs


def test_working_dir_cannot_leave_the_image(run_cache: BlobCache, make_image: Callable[..., Image],
                                           debian_base: str, tmp_path: Path) -> None:
    name = f"ociassemble-escape-{uuid.uuid4().hex}"
    host_dir = Path("/var/tmp") / name
    seen = _attack(make_image, run_cache, 'report["cwd"] = os.getcwd()', working_dir=f"/../oldroot/var/tmp/{name}/x")
    assert seen["cwd"] == f"/oldroot/var/tmp/{name}/x"  # made inside the image, not on the host
    assert not host_dir.exists()

    # a symlink in the image pointing at the host's root as bwrap mounts it
    base = load_base(debian_base, run_cache)
    src = tmp_path / "srv"
    src.mkdir()
    os.symlink(f"/oldroot/var/tmp/{name}", src / "escape")
    os.symlink("/srv/../../../../oldroot/var/tmp", src / "climbing")  # `..` past the root stays at the root
    layer = build_layer(run_cache, [LayerSource(src, "/srv")], epoch=0)
    for workdir in ("/srv/escape/made-by-image", f"/srv/climbing/{name}/made-by-image"):
        b = ImageBuilder(run_cache, base)
        b.add_layer(layer, "COPY srv /srv")
        b.config = replace(b.config, cmd=("python3", "-c", _PRELUDE + 'report["cwd"] = os.getcwd()\n'
                                          'print(json.dumps(report))'), working_dir=workdir)
        seen = _run(b.build(), run_cache)
        assert seen["cwd"] == f"/oldroot/var/tmp/{name}/made-by-image", seen
        assert not host_dir.exists(), f"{workdir} created {host_dir} on the host"


def test_cache_folders_are_private(run_cache: BlobCache, make_image: Callable[..., Image], tmp_path: Path) -> None:
    img = make_image(("sleep", "60"))
    with RunningImage(img, run_cache) as running:
        rootfs = rootfs_path(run_cache, img, host_idmap())
        for folder in (run_cache.root / "rootfs", rootfs.parent.parent, rootfs.parent, run_cache.root / "run",
                       *(run_cache.root / "run").glob("[0-9]*")):
            st = folder.lstat()
            assert st.st_mode & 0o777 == 0o700 and st.st_uid == 0, folder
        # the image's files belong to its ids as the host numbers them, not to root
        assert rootfs.stat().st_uid == host_idmap().host_uid(0)
        assert running.pids()

    # a rootfs folder planted by another user in a shared cache is refused, not used
    shared = BlobCache(tmp_path / "shared-cache")
    (shared.root / "rootfs").mkdir()
    os.chown(shared.root / "rootfs", 4242, 4242)
    with pytest.raises(RunError, match="belongs to uid 4242"):
        RunningImage(img, shared, stderr=subprocess.DEVNULL).start()
