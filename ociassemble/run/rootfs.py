"""Each run's own writable root filesystem, over the image's cached read-only one.

``unpack.unpack_image`` unpacks the image once into the cache (read-only from then
on), owned by the image's ids as the run's user namespace maps them (``idmap``). Each
run gets ``<cache>/run/<pid>-<random>/`` (0700, like every folder above it from
``run``) holding an overlayfs upper and work dir, mounted over the cached rootfs in a
private mount namespace by ``userns_exec`` (``spec``), so the mount vanishes with the
run and nothing a run writes (nginx's ``/var/lib/nginx``, logs, ``__pycache__``) reaches
the cache or the next run. Where overlayfs is missing, root copies the rootfs instead
(``cp -a --reflink=auto``; another user gets a RunError: the copy would need the
image's other ids). The run directory is removed when the run stops; those of dead
processes by the next run. It also holds ``ports/``, where the port forwarder's Unix
sockets live.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ..errors import RunError
from ..image.assemble import Image
from ..image.cache import BlobCache
from .idmap import IdMap
from .unpack import DEFAULT_LIMITS, UnpackLimits, private_dir, unpack_image
from .userns import remove_tree, start_in_userns

__all__ = ["RunRootfs"]

#: Characters the rootfs spec (``:``) and overlayfs's mount options (``,``, ``\\``) cannot carry in a path.
_OVERLAY_UNSAFE = ",:\\"

_overlay_ok: bool | None = None


def _overlay_supported(run_root: Path, idmap: IdMap) -> bool:
    """Whether overlayfs can be mounted here as a run mounts it (probed once per process on a scratch dir)."""
    global _overlay_ok
    if _overlay_ok is None:
        probe = run_root / f".probe-{os.getpid()}-{os.urandom(4).hex()}"
        try:
            for d in ("lower", "upper", "work"):
                (probe / d).mkdir(parents=True)
            spec = f"overlay:{probe}/lower:{probe}/upper:{probe}/work"
            proc = start_in_userns(idmap, spec, ["true"], stderr=subprocess.DEVNULL)
            _overlay_ok = proc.wait() == 0
        except RunError:
            _overlay_ok = False
        finally:
            remove_tree(probe, idmap)
    return _overlay_ok


class RunRootfs:
    """One run's root: ``spec`` tells ``userns_exec`` what to mount as the run's ``/`` once ``prepare`` returns.

    Example::

        rootfs = RunRootfs(image, cache, host_idmap())
        rootfs.prepare()
        start_in_userns(idmap, rootfs.spec, ["bwrap", "--bind", ROOTFS_TARGET, "/", ...])
        rootfs.remove()
    """

    def __init__(self, image: Image, cache: BlobCache, idmap: IdMap, *,
                 limits: UnpackLimits = DEFAULT_LIMITS) -> None:
        self.image = image
        self.cache = cache
        self.idmap = idmap
        self._limits = limits
        self._run_dir: Path | None = None
        #: The image's cached, read-only rootfs (set by ``prepare``).
        self.lower = Path()
        #: What ``userns_exec`` mounts (set by ``prepare``).
        self.spec = ""
        #: The folder both the host and the port forwarder in the image's network see (set by ``prepare``).
        self.ports_dir = Path()

    def prepare(self) -> None:
        """Unpack the image (once), make the run directory and, without overlayfs, copy the rootfs.

        Raises ArchiveError and DiskFullError from unpacking, RunError when the copy fails.
        """
        self.lower = rootfs = unpack_image(self.image, self.cache, limits=self._limits, idmap=self.idmap)
        runs = self.cache.root / "run"
        private_dir(runs)
        for stale in runs.glob("[0-9]*-*"):
            if not Path(f"/proc/{stale.name.split('-')[0]}").exists():
                remove_tree(stale, self.idmap)
        self._run_dir = run_dir = runs / f"{os.getpid()}-{os.urandom(4).hex()}"
        run_dir.mkdir(mode=0o700)
        self.ports_dir = run_dir / "ports"
        self.ports_dir.mkdir(mode=0o700)
        root_uid, root_gid = self.idmap.host_uid(0), self.idmap.host_gid(0)
        assert root_uid is not None and root_gid is not None
        if (not any(c in str(p) for p in (rootfs, run_dir) for c in _OVERLAY_UNSAFE)
                and _overlay_supported(runs, self.idmap)):
            # upper's own mode becomes that of the image's "/": 0755, as the image's other users
            # (nginx's www-data) must cross it; the run dir around it is 0700
            for d, mode in (("upper", 0o755), ("work", 0o700)):
                (run_dir / d).mkdir(mode=mode)
                os.chmod(run_dir / d, mode)
                os.chown(run_dir / d, root_uid, root_gid)  # the image's root writes through the overlay
            self.spec = f"overlay:{rootfs}:{run_dir / 'upper'}:{run_dir / 'work'}"
            return
        if not self.idmap.privileged:
            raise RunError("overlayfs cannot be mounted in a user namespace here (Linux 5.11 or later needed), "
                           "and only root can copy the image instead: run it as root")
        merged = run_dir / "rootfs"
        r = subprocess.run(["cp", "-a", "--reflink=auto", str(rootfs), str(merged)],
                           stderr=subprocess.PIPE, text=True, check=False)
        if r.returncode != 0:
            raise RunError(f"cannot copy the rootfs into {run_dir}: {r.stderr.strip()}")
        self.spec = f"bind:{merged}"

    def remove(self) -> None:
        """Remove the run directory (the overlay upper or the copy); idempotent."""
        if self._run_dir is not None:
            remove_tree(self._run_dir, self.idmap)
            self._run_dir = None
