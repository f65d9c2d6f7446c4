"""Which host ids the image's users and groups are in the run's user namespace.

The image's root is never the host's root:

* Run by root: ids 0 to 65535 of the image are host ids ``ROOT_BASE`` + 0 … 65535, an
  unprivileged range (root's own ``/etc/subuid``/``/etc/subgid`` entry is used instead
  when it has one, as podman's ``--userns=auto`` does). Every run by root shares it.
* Run by another user: the image's root is that user, and ids 1 … N are the user's
  subordinate ids from ``/etc/subuid`` and ``/etc/subgid`` (written by the set-user-ID
  helpers ``newuidmap``/``newgidmap``, package ``uidmap``), as rootless podman does.
  Without them only the image's root exists: files owned by other ids unpack as root's,
  and a program that switches to another user (nginx to ``www-data``) fails.

The map also names the unpacked rootfs in the cache (``key``): the same layers unpacked
for another map have other owners on the host.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import RunError

__all__ = ["IdMap", "IdRange", "ROOT_BASE", "RANGE_SIZE", "host_idmap", "check_userns"]

#: Where the image's ids start on the host when root runs it without a subordinate range of its
#: own: inside systemd's range for container ids (524288 … 1879048191, "Users, Groups, UIDs and
#: GIDs on systemd Systems"), far above any login account.
ROOT_BASE = 1_000_000_000
#: How many ids an image gets: 0 … 65535, what Debian's packages and podman assume.
RANGE_SIZE = 65536


@dataclass(frozen=True)
class IdRange:
    """``count`` ids from ``inside`` in the namespace are host ids from ``outside``."""

    inside: int
    outside: int
    count: int


@dataclass(frozen=True)
class IdMap:
    """The uid and gid maps of a run's user namespace, and who writes them."""

    uids: tuple[IdRange, ...]
    gids: tuple[IdRange, ...]
    #: Root writes the maps itself; another user needs newuidmap/newgidmap for more than its own id.
    privileged: bool

    @property
    def key(self) -> str:
        """A name for this map, safe in a path: the rootfs unpacked for it lives under it."""
        def part(ranges: tuple[IdRange, ...]) -> str:
            return "_".join(f"{r.inside}-{r.outside}-{r.count}" for r in ranges)
        return f"u{part(self.uids)}.g{part(self.gids)}"

    def host_uid(self, uid: int) -> int | None:
        """The host uid of the image's ``uid`` (None when the map leaves it out)."""
        return _lookup(self.uids, uid)

    def host_gid(self, gid: int) -> int | None:
        return _lookup(self.gids, gid)

    def write(self, pid: int) -> None:
        """Write the maps of process ``pid``'s (new, empty) user namespace.

        Raises RunError when the kernel or newuidmap/newgidmap refuse.
        """
        if self.privileged or (len(self.uids) == 1 and len(self.gids) == 1):
            # root may write any map; anyone may map their own id alone, once setgroups is denied
            try:
                if not self.privileged:
                    Path(f"/proc/{pid}/setgroups").write_text("deny")
                Path(f"/proc/{pid}/uid_map").write_text(_lines(self.uids))
                Path(f"/proc/{pid}/gid_map").write_text(_lines(self.gids))
            except OSError as exc:
                raise RunError(f"cannot write the user namespace's id map: {exc.strerror}") from None
            return
        for tool, ranges in (("newuidmap", self.uids), ("newgidmap", self.gids)):
            args = [str(n) for r in ranges for n in (r.inside, r.outside, r.count)]
            r = subprocess.run([tool, str(pid), *args], capture_output=True, text=True, check=False)
            if r.returncode != 0:
                raise RunError(f"{tool} refused the run's id map ({r.stderr.strip() or f'status {r.returncode}'}); "
                               f"check this user's lines in /etc/subuid and /etc/subgid")


def _lookup(ranges: tuple[IdRange, ...], n: int) -> int | None:
    for r in ranges:
        if r.inside <= n < r.inside + r.count:
            return r.outside + n - r.inside
    return None


def _lines(ranges: tuple[IdRange, ...]) -> str:
    return "".join(f"{r.inside} {r.outside} {r.count}\n" for r in ranges)


def _subordinate(path: Path, name: str, own: int) -> tuple[int, int] | None:
    """The first ``name:start:count`` (or ``uid:start:count``) line of ``path`` (``/etc/subuid``)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[0] in (name, str(own)):
            try:
                start, count = int(fields[1]), int(fields[2])
            except ValueError:
                continue
            if count > 0:
                return start, count
    return None


def host_idmap(*, etc: Path = Path("/etc")) -> IdMap:
    """The map for a run by this process's user (see the module docstring).

    Example::

        idmap = host_idmap()
        idmap.host_uid(33)  # where www-data is on the host
    """
    uid, gid = os.geteuid(), os.getegid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    sub_u = _subordinate(etc / "subuid", name, uid)
    sub_g = _subordinate(etc / "subgid", name, uid)
    if uid == 0:
        su = sub_u or (ROOT_BASE, RANGE_SIZE)
        sg = sub_g or (ROOT_BASE, RANGE_SIZE)
        size_u, size_g = min(su[1], RANGE_SIZE), min(sg[1], RANGE_SIZE)
        return IdMap((IdRange(0, su[0], size_u),), (IdRange(0, sg[0], size_g),), privileged=True)
    own_u, own_g = (IdRange(0, uid, 1),), (IdRange(0, gid, 1),)
    if sub_u and sub_g and shutil.which("newuidmap") and shutil.which("newgidmap"):
        return IdMap(own_u + (IdRange(1, sub_u[0], min(sub_u[1], RANGE_SIZE - 1)),),
                     own_g + (IdRange(1, sub_g[0], min(sub_g[1], RANGE_SIZE - 1)),), privileged=False)
    return IdMap(own_u, own_g, privileged=False)


def check_userns(sysctl: Path = Path("/proc/sys")) -> None:
    """Raise RunError when this kernel does not let us make a user namespace (``sysctl``: another /proc/sys in tests)."""
    try:
        if int((sysctl / "user/max_user_namespaces").read_text()) <= 0:
            raise RunError("ociassemble run needs user namespaces, disabled on this machine "
                           "(sysctl user.max_user_namespaces is 0): raise it")
    except (OSError, ValueError):
        pass
    if os.geteuid() != 0:
        try:
            if (sysctl / "kernel/unprivileged_userns_clone").read_text().strip() == "0":
                raise RunError("ociassemble run by a user other than root needs unprivileged user namespaces "
                               "(sysctl kernel.unprivileged_userns_clone=1), or run it as root")
        except OSError:
            pass
