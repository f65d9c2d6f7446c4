"""The seccomp program: its numbers match the kernel headers, and the kernel enforces it as meant."""

from __future__ import annotations

import errno
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ociassemble.errors import RunError
from ociassemble.run.seccomp import DENIED, SYSCALLS, seccomp_program

_HEADERS = {"x86_64": Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
            "aarch64": Path("/usr/include/asm-generic/unistd.h")}


@pytest.mark.parametrize("machine", sorted(_HEADERS))
def test_numbers_match_the_kernel_headers(machine: str) -> None:
    header = _HEADERS[machine]
    if not header.is_file():
        pytest.skip(f"{header} is not installed (linux-libc-dev)")
    table = {m[1]: int(m[2]) for m in re.finditer(r"#define __NR(?:3264)?_(\w+)\s+(\d+)", header.read_text())}
    for name, numbers in SYSCALLS.items():
        assert numbers[machine] == table.get(name), name


def test_the_program_is_deterministic_and_refuses_unknown_hosts() -> None:
    assert seccomp_program("x86_64") == seccomp_program("x86_64")
    assert seccomp_program("aarch64") != seccomp_program("x86_64")
    assert {"keyctl", "add_key", "request_key", "mount", "umount2", "ptrace", "open_by_handle_at",
            "kexec_load", "bpf", "perf_event_open", "unshare", "setns"} <= set(DENIED)
    with pytest.raises(RunError, match="no seccomp filter for riscv64"):
        seccomp_program("riscv64")


_CHILD = r'''
import ctypes, os, sys, threading
prog = sys.stdin.buffer.read()
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(prog, len(prog))
class fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
fp = fprog(len(prog) // 8, ctypes.addressof(buf))
assert libc.prctl(38, 1, 0, 0, 0) == 0                          # PR_SET_NO_NEW_PRIVS
assert libc.prctl(22, 2, ctypes.byref(fp), 0, 0) == 0, ctypes.get_errno()  # PR_SET_SECCOMP, FILTER
def call(name, *args):
    r = libc.syscall(*args)
    return name, (0 if r >= 0 else ctypes.get_errno())
N = dict(x86_64=dict(keyctl=250, mount=165, unshare=272, ptrace=101, clone=56, clone3=435, getpid=39),
         aarch64=dict(keyctl=219, mount=40, unshare=97, ptrace=117, clone=220, clone3=435, getpid=172))[os.uname().machine]
out = dict([call("keyctl", N["keyctl"], 0, 0, 0, 0, 0),        # KEYCTL_GET_KEYRING_ID
            call("mount", N["mount"], b"none", b"/tmp", b"tmpfs", 0, 0),
            call("unshare", N["unshare"], 0x10000000),
            call("ptrace", N["ptrace"], 0, 0, 0, 0),          # PTRACE_TRACEME
            call("clone3", N["clone3"], 0, 0),
            call("clone_newuser", N["clone"], 0x10000000 | 17, 0, 0, 0, 0),
            call("getpid", N["getpid"])])
pid = os.fork()  # clone without namespace flags still works
if pid == 0:
    os._exit(7)
out["fork"] = os.waitpid(pid, 0)[1] >> 8
t = threading.Thread(target=lambda: None); t.start(); t.join()
out["thread"] = 0
print(out)
'''


@pytest.mark.skipif(platform.machine() not in ("x86_64", "aarch64"), reason="no filter for this host")
def test_the_kernel_enforces_it() -> None:
    r = subprocess.run([sys.executable, "-c", _CHILD], input=seccomp_program(), capture_output=True, check=False)
    assert r.returncode == 0, r.stderr.decode()
    seen = eval(r.stdout.decode())  # noqa: S307 - our own child's dict literal
    assert seen == {"keyctl": errno.EPERM, "mount": errno.EPERM, "unshare": errno.EPERM, "ptrace": errno.EPERM,
                    "clone3": errno.ENOSYS, "clone_newuser": errno.EPERM, "getpid": 0, "fork": 7, "thread": 0}
