"""Running another CPU architecture's programs on this machine: qemu user emulation through binfmt_misc.

Two things need it: ``make-base --platform linux/arm64`` (mmdebstrap runs the arm64
packages' maintainer scripts) and ``run`` of an arm64 image on an x86 machine (its
gunicorn and nginx). Neither calls qemu itself: the kernel's binfmt_misc hands each
foreign ELF binary to qemu's handler, so a chroot into a foreign rootfs just works, as
long as the handler was registered with the ``F`` flag (the interpreter opened at
registration: it need not exist inside the chroot), which is how Debian's
qemu-user-static registers it.

Building needs none of this: every layer is written by ociassemble, and pex resolves
wheels for a platform by its tags.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from .errors import BuildError

__all__ = ["BINFMT", "SLOWDOWN", "emulation_problem", "ensure_emulation", "needs_emulation", "qemu_name"]

BINFMT = Path("/proc/sys/fs/binfmt_misc")
#: How many times longer a program may take under qemu user emulation than natively: what a
#: wait for it allows (``run``'s readiness wait). Measured on a 2-core x86-64 machine: the
#: example scoring image (nginx, gunicorn, numpy and scikit-learn imports) answers Healthy
#: 19.6 s after ``run`` for linux/arm64 against 3.1 s for linux/amd64 (6.3 times); Python
#: alone in the arm64 base, 6 times (stdlib imports and a loop, 2.76 s against 0.46 s).
SLOWDOWN = 10

#: The OCI architecture → qemu's name for it (its binfmt handler is ``qemu-<name>``).
_QEMU = {"arm64": "aarch64", "amd64": "x86_64", "arm": "arm", "386": "i386", "ppc64le": "ppc64le",
         "s390x": "s390x", "riscv64": "riscv64", "mips64le": "mips64el", "loong64": "loongarch64"}
#: ``uname -m`` → OCI architecture (the machine's own, which needs no emulation).
_HOST = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "ppc64le": "ppc64le",
         "s390x": "s390x", "riscv64": "riscv64"}
_INSTALL = "apt-get install qemu-user-static binfmt-support"


def qemu_name(architecture: str) -> str:
    return _QEMU.get(architecture, architecture)


def needs_emulation(architecture: str) -> bool:
    """Whether this machine's CPU cannot run ``architecture``'s programs itself."""
    host = _HOST.get(os.uname().machine, os.uname().machine)
    return architecture != host and not (host == "amd64" and architecture == "386")


def emulation_problem(architecture: str, binfmt: Path = BINFMT) -> str | None:
    """Why this machine cannot run ``architecture``'s programs (None: it can), as the fix to make."""
    if not needs_emulation(architecture):
        return None
    name = qemu_name(architecture)
    handler = binfmt / f"qemu-{name}"
    if not (binfmt / "status").exists():
        return (f"binfmt_misc is not mounted, so this machine cannot run {architecture} programs: as root, "
                f"'mount -t binfmt_misc binfmt_misc {binfmt}' then 'update-binfmts --enable' "
                f"(after '{_INSTALL}')")
    try:
        text = handler.read_text()
    except OSError:
        return (f"no qemu handler for {architecture} ({handler} is missing): '{_INSTALL}', then "
                f"'update-binfmts --enable qemu-{name}'")
    if not text.startswith("enabled"):
        return f"the qemu handler for {architecture} is disabled: run 'update-binfmts --enable qemu-{name}' as root"
    flags = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("flags:")), "")
    if "F" not in flags:
        return (f"the qemu handler for {architecture} ({handler}) lacks the F flag, so it cannot start programs "
                f"inside another root: use Debian's qemu-user-static ('{_INSTALL}') and 'update-binfmts --enable "
                f"qemu-{name}'")
    return None


def ensure_emulation(architecture: str, *, what: str, binfmt: Path = BINFMT,
                     log: Callable[[str], None] = lambda _: None) -> None:
    """Make this machine run ``architecture``'s programs through qemu, or raise BuildError saying how.

    Where qemu-user-static and binfmt-support are installed and this is root, it mounts
    binfmt_misc and enables qemu's handler itself (what their packages do on a machine that
    booted with them; a container often did not). ``what`` names the command that needs it.
    """
    problem = emulation_problem(architecture, binfmt)
    if problem is None:
        return
    name = qemu_name(architecture)
    can_fix = (os.geteuid() == 0 and shutil.which("update-binfmts") is not None
               and Path(f"/usr/bin/qemu-{name}-static").exists())
    if can_fix:
        if not (binfmt / "status").exists():
            log(f"mounting binfmt_misc on {binfmt} (to run {architecture} programs through qemu)")
            subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)], capture_output=True)
        log(f"enabling qemu's {architecture} handler (update-binfmts --enable qemu-{name})")
        subprocess.run(["update-binfmts", "--enable", f"qemu-{name}"], capture_output=True)
        problem = emulation_problem(architecture, binfmt)
        if problem is None:
            return
    raise BuildError(f"{what} needs to run {architecture} programs on this {os.uname().machine} machine: {problem}")
