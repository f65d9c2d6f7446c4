"""Run a command as root of a new user namespace whose id map the parent writes (a script, run by path).

``python3 -I -S userns_exec.py SYNC_IN SYNC_OUT ROOTFS_SPEC -- COMMAND...``

Why a separate process: a thread cannot make a user namespace (``unshare(CLONE_NEWUSER)``
needs a single-threaded process), and the map must be written by the parent, from
outside (only it may map more than its own id, through newuidmap or as root). So this
script, which imports nothing of ociassemble and starts in a few milliseconds:

1. with a ROOTFS_SPEC and run by root: makes a private mount namespace and mounts the
   run's root there (an overlay over the cached rootfs, or a bind of its copy) at
   ``/tmp/ociassemble-rootfs`` on a tmpfs of its own over ``/tmp``: a path the image's
   root, an unprivileged host id, can reach (the cache may sit under ``/root``, 0700;
   the folders are named to the mount through ``/proc/self/fd``, as the tmpfs may hide
   them);
2. makes the user namespace, says so on SYNC_OUT, and waits on SYNC_IN while the parent
   writes the map (anything but ``g`` there, or end of file, and it exits 1);
3. becomes uid and gid 0 in it (with the capabilities root has there, none on the host);
4. run by another user: makes the private mount namespace and the mount of 1. now
   (overlayfs may be mounted in a user namespace since Linux 5.11);
5. executes COMMAND (bwrap, or the unpacker), which inherits no other descriptor of ours.

ROOTFS_SPEC is ``-`` (no mount), ``overlay:LOWER:UPPER:WORK`` or ``bind:DIR`` (paths may
not contain ``:``). Errors are one line on stderr and exit status 1.
"""

import ctypes
import os
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_NOSUID = 0x2
MS_NODEV = 0x4
#: Where the run's root is mounted in the private mount namespace.
TARGET = "/tmp/ociassemble-rootfs"

libc = ctypes.CDLL(None, use_errno=True)


def fail(what: str) -> None:
    err = ctypes.get_errno()
    sys.stderr.write(f"ociassemble run: {what}: {os.strerror(err) if err else 'failed'}\n")
    sys.exit(1)


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    if libc.mount(source.encode() if source else None, target.encode(), fstype.encode() if fstype else None,
                  flags, data.encode() if data else None) != 0:
        fail(f"cannot mount {fstype or 'a bind'} on {target}")


def mount_rootfs(spec: str) -> None:
    kind, _, rest = spec.partition(":")
    if libc.unshare(CLONE_NEWNS) != 0:
        fail("cannot make a private mount namespace")
    mount("none", "/", None, MS_REC | MS_PRIVATE, None)
    # the folders are opened (in this mount namespace) and named through /proc/self/fd:
    # the tmpfs below may hide them
    fds = [os.open(p, os.O_RDONLY | os.O_DIRECTORY) for p in (rest.split(":") if kind == "overlay" else [rest])]
    named = [f"/proc/self/fd/{fd}" for fd in fds]
    mount("ociassemble", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k")
    os.mkdir(TARGET, 0o755)
    if kind == "overlay":
        lower, upper, work = named
        mount("overlay", TARGET, "overlay", 0, f"lowerdir={lower},upperdir={upper},workdir={work}")
    else:
        mount(named[0], TARGET, None, MS_BIND | MS_REC, None)
    for fd in fds:
        os.close(fd)


def find(program: str) -> str:
    """``program``'s path, looked up in PATH now: once we are the image's root, this Python's own
    files (under ``/root`` for a pyenv build) may be out of reach, and ``os.execvp`` imports."""
    if "/" in program:
        return program
    for folder in os.environ.get("PATH", "/usr/bin:/bin").split(":"):
        path = os.path.join(folder or ".", program)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    return program


def main(argv: list[str]) -> None:
    sync_in, sync_out, spec = int(argv[1]), int(argv[2]), argv[3]
    command = argv[5:]
    program = find(command[0])
    privileged = os.geteuid() == 0
    if spec != "-" and privileged:
        mount_rootfs(spec)
    if libc.unshare(CLONE_NEWUSER) != 0:
        fail("cannot make a user namespace")
    os.write(sync_out, b"u")
    if os.read(sync_in, 1) != b"g":
        sys.exit(1)  # the parent could not write the map and says why
    os.close(sync_in)
    os.close(sync_out)
    os.setresgid(0, 0, 0)
    try:
        os.setgroups([])
    except PermissionError:
        pass  # a single-id map: setgroups is denied, and we have no other group anyway
    os.setresuid(0, 0, 0)
    if spec != "-" and not privileged:
        mount_rootfs(spec)
    try:
        os.execv(program, command)
    except OSError as exc:
        sys.stderr.write(f"ociassemble run: cannot start {command[0]}: {exc.strerror}\n")
        sys.exit(1)


if __name__ == "__main__":
    try:
        main(sys.argv)
    except OSError as exc:  # a folder of the spec gone, a uid the map lacks: one line, not a traceback
        sys.stderr.write(f"ociassemble run: cannot set up the run's namespaces: {exc}\n")
        sys.exit(1)
