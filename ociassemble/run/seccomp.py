"""The seccomp filter an image's process runs under: the system calls podman's default profile refuses.

A classic BPF program assembled here, byte for byte the same on every run (no library:
libseccomp's Python binding is not on PyPI as a maintained wheel, and the program is
small enough to read; ``tests/unit/test_seccomp.py`` checks the numbers against the
kernel headers and runs the program through the kernel). bwrap loads it (``--seccomp``)
just before it executes the image's command, after ``no_new_privs``.

What it refuses, with ``EPERM`` as Docker and podman do, are the calls their default
profile allows only with a capability the image never gets (``CAP_SYS_ADMIN``,
``CAP_SYS_MODULE``, ``CAP_SYS_PTRACE``, ``CAP_SYS_TIME``, ``CAP_SYS_BOOT``…): the kernel
keyring (``keyctl``, ``add_key``, ``request_key``), mounting (``mount``, ``umount2``,
``pivot_root`` and the new mount API), new namespaces (``unshare``, ``setns``, ``clone``
with a ``CLONE_NEW*`` flag; ``clone3`` answers ``ENOSYS`` so the C library falls back to
``clone``, whose flags a filter can read), ``ptrace`` and reading other processes'
memory, kernel modules, ``kexec``, ``bpf``, ``perf_event_open``, ``open_by_handle_at``,
``userfaultfd``, ``io_uring``, the clock, swap, reboot, quotas and ``syslog``.
Everything else is allowed: a deny list, where podman's profile is an allow list, so
a new kernel call reaches the kernel (the capabilities and the user namespace still
stand in its way).

Only the host's own system call ABI is allowed: on x86-64, 32-bit (``int 0x80``) and x32
calls are refused, closing the usual way around a filter written for one table.
An image of another architecture run through qemu-user is covered too: qemu translates
the image's calls into the host's, which this filter then sees.
"""

from __future__ import annotations

import errno
import platform
import struct

from ..errors import RunError

__all__ = ["seccomp_program", "DENIED", "AUDIT_ARCH", "SYSCALLS"]

#: ``AUDIT_ARCH_*`` from <linux/audit.h>, by ``platform.machine()``.
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}

#: Calls refused with EPERM (podman's default profile allows none of them without a capability).
DENIED = (
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module", "delete_module",
    "finit_module", "fsconfig", "fsmount", "fsopen", "fspick", "get_kernel_syms", "init_module",
    "io_uring_enter", "io_uring_register", "io_uring_setup", "ioperm", "iopl", "kcmp", "kexec_file_load",
    "kexec_load", "keyctl", "lookup_dcookie", "mbind", "migrate_pages", "modify_ldt", "mount",
    "mount_setattr", "move_mount", "move_pages", "name_to_handle_at", "nfsservctl", "open_by_handle_at",
    "open_tree", "perf_event_open", "pidfd_getfd", "pivot_root", "process_vm_readv", "process_vm_writev",
    "ptrace", "query_module", "quotactl", "quotactl_fd", "reboot", "request_key", "set_mempolicy",
    "setdomainname", "sethostname", "setns", "settimeofday", "swapoff", "swapon", "syslog", "sysfs",
    "_sysctl", "umount2", "unshare", "uselib", "userfaultfd", "ustat", "vhangup",
)

#: System call numbers (from <asm/unistd_64.h> and <asm-generic/unistd.h>); None where the
#: architecture has no such call.
SYSCALLS: dict[str, dict[str, int | None]] = {
    #                       x86_64  aarch64
    "acct":               {"x86_64": 163, "aarch64": 89},
    "add_key":            {"x86_64": 248, "aarch64": 217},
    "bpf":                {"x86_64": 321, "aarch64": 280},
    "clock_adjtime":      {"x86_64": 305, "aarch64": 266},
    "clock_settime":      {"x86_64": 227, "aarch64": 112},
    "clone":              {"x86_64": 56, "aarch64": 220},
    "clone3":             {"x86_64": 435, "aarch64": 435},
    "create_module":      {"x86_64": 174, "aarch64": None},
    "delete_module":      {"x86_64": 176, "aarch64": 106},
    "finit_module":       {"x86_64": 313, "aarch64": 273},
    "fsconfig":           {"x86_64": 431, "aarch64": 431},
    "fsmount":            {"x86_64": 432, "aarch64": 432},
    "fsopen":             {"x86_64": 430, "aarch64": 430},
    "fspick":             {"x86_64": 433, "aarch64": 433},
    "get_kernel_syms":    {"x86_64": 177, "aarch64": None},
    "init_module":        {"x86_64": 175, "aarch64": 105},
    "io_uring_enter":     {"x86_64": 426, "aarch64": 426},
    "io_uring_register":  {"x86_64": 427, "aarch64": 427},
    "io_uring_setup":     {"x86_64": 425, "aarch64": 425},
    "ioperm":             {"x86_64": 173, "aarch64": None},
    "iopl":               {"x86_64": 172, "aarch64": None},
    "kcmp":               {"x86_64": 312, "aarch64": 272},
    "kexec_file_load":    {"x86_64": 320, "aarch64": 294},
    "kexec_load":         {"x86_64": 246, "aarch64": 104},
    "keyctl":             {"x86_64": 250, "aarch64": 219},
    "lookup_dcookie":     {"x86_64": 212, "aarch64": 18},
    "mbind":              {"x86_64": 237, "aarch64": 235},
    "migrate_pages":      {"x86_64": 256, "aarch64": 238},
    "modify_ldt":         {"x86_64": 154, "aarch64": None},
    "mount":              {"x86_64": 165, "aarch64": 40},
    "mount_setattr":      {"x86_64": 442, "aarch64": 442},
    "move_mount":         {"x86_64": 429, "aarch64": 429},
    "move_pages":         {"x86_64": 279, "aarch64": 239},
    "name_to_handle_at":  {"x86_64": 303, "aarch64": 264},
    "nfsservctl":         {"x86_64": 180, "aarch64": 42},
    "open_by_handle_at":  {"x86_64": 304, "aarch64": 265},
    "open_tree":          {"x86_64": 428, "aarch64": 428},
    "perf_event_open":    {"x86_64": 298, "aarch64": 241},
    "pidfd_getfd":        {"x86_64": 438, "aarch64": 438},
    "pivot_root":         {"x86_64": 155, "aarch64": 41},
    "process_vm_readv":   {"x86_64": 310, "aarch64": 270},
    "process_vm_writev":  {"x86_64": 311, "aarch64": 271},
    "ptrace":             {"x86_64": 101, "aarch64": 117},
    "query_module":       {"x86_64": 178, "aarch64": None},
    "quotactl":           {"x86_64": 179, "aarch64": 60},
    "quotactl_fd":        {"x86_64": 443, "aarch64": 443},
    "reboot":             {"x86_64": 169, "aarch64": 142},
    "request_key":        {"x86_64": 249, "aarch64": 218},
    "set_mempolicy":      {"x86_64": 238, "aarch64": 237},
    "setdomainname":      {"x86_64": 171, "aarch64": 162},
    "sethostname":        {"x86_64": 170, "aarch64": 161},
    "setns":              {"x86_64": 308, "aarch64": 268},
    "settimeofday":       {"x86_64": 164, "aarch64": 170},
    "swapoff":            {"x86_64": 168, "aarch64": 225},
    "swapon":             {"x86_64": 167, "aarch64": 224},
    "syslog":             {"x86_64": 103, "aarch64": 116},
    "sysfs":              {"x86_64": 139, "aarch64": None},
    "_sysctl":            {"x86_64": 156, "aarch64": None},
    "umount2":            {"x86_64": 166, "aarch64": 39},
    "unshare":            {"x86_64": 272, "aarch64": 97},
    "uselib":             {"x86_64": 134, "aarch64": None},
    "userfaultfd":        {"x86_64": 323, "aarch64": 282},
    "ustat":              {"x86_64": 136, "aarch64": None},
    "vhangup":            {"x86_64": 153, "aarch64": 58},
}

#: The ``CLONE_NEW*`` flags (mount, cgroup, UTS, IPC, user, PID, network): a ``clone`` with any is refused.
CLONE_NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
#: x32 system calls on x86-64 have this bit set in their number.
_X32_SYSCALL_BIT = 0x40000000

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6];
_OFF_NR, _OFF_ARCH, _OFF_ARG0_LOW = 0, 4, 16
# BPF opcodes (<linux/filter.h>)
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
# seccomp return values (<linux/seccomp.h>)
_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000
#: BPF jump offsets are 8 bits.
_MAX_JUMP = 255


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def seccomp_program(machine: str | None = None) -> bytes:
    """The filter for ``machine`` (default: this host's ``platform.machine()``) as bwrap's ``--seccomp`` reads it.

    Example::

        os.write(w, seccomp_program())  # then: bwrap --seccomp <r> ...

    Raises RunError on an architecture it has no system call table for.
    """
    machine = machine or platform.machine()
    if machine not in AUDIT_ARCH:
        raise RunError(f"ociassemble run has no seccomp filter for {machine} hosts (only x86_64 and aarch64)")
    denied = sorted({n for name in DENIED if (n := SYSCALLS[name][machine]) is not None})
    body: list[tuple[str, int]] = []  # (target label, number) for each JEQ, laid out below
    body += [("eperm", nr) for nr in denied]
    body.append(("enosys", SYSCALLS["clone3"][machine] or 0))
    body.append(("clone", SYSCALLS["clone"][machine] or 0))
    x32 = machine == "x86_64"
    # labels, as instruction indexes: the head (load arch, check it, refuse, load nr[, x32 check]),
    # one JEQ per call, ALLOW, the clone flag test (load flags, JSET, ALLOW), ERRNO(EPERM),
    # ERRNO(ENOSYS): BPF jumps only forward
    allow = 4 + (1 if x32 else 0) + len(body)
    labels = {"allow": allow, "clone": allow + 1, "allow2": allow + 3, "eperm": allow + 4, "enosys": allow + 5}
    if labels["enosys"] > _MAX_JUMP:
        raise AssertionError("the seccomp program outgrew BPF's 8-bit jumps")
    prog: list[bytes] = []

    def jump(label: str) -> int:
        return labels[label] - len(prog) - 1

    prog.append(_insn(_LD_W_ABS, _OFF_ARCH))
    prog.append(_insn(_JEQ_K, AUDIT_ARCH[machine], jt=1, jf=0))  # another ABI (i386 on x86_64) …
    prog.append(_insn(_RET_K, _ERRNO | errno.EPERM))            # … is refused whole
    prog.append(_insn(_LD_W_ABS, _OFF_NR))
    if x32:
        prog.append(_insn(_JGE_K, _X32_SYSCALL_BIT, jt=jump("eperm"), jf=0))
    for label, nr in body:
        prog.append(_insn(_JEQ_K, nr, jt=jump(label), jf=0))
    assert len(prog) == labels["allow"]
    prog.append(_insn(_RET_K, _ALLOW))
    prog.append(_insn(_LD_W_ABS, _OFF_ARG0_LOW))
    prog.append(_insn(_JSET_K, CLONE_NAMESPACE_FLAGS, jt=jump("eperm"), jf=jump("allow2")))
    prog.append(_insn(_RET_K, _ALLOW))
    prog.append(_insn(_RET_K, _ERRNO | errno.EPERM))
    prog.append(_insn(_RET_K, _ERRNO | errno.ENOSYS))
    assert len(prog) == labels["enosys"] + 1
    return b"".join(prog)
