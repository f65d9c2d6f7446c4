"""Each run's own writable root filesystem, over the image's cached read-only one.

``unpack.unpack_image`` unpacks the image once into the cache (read-only from then
on). Each run gets ``<cache>/run/<pid>-<random>/`` holding an overlayfs upper and work
dir, mounted over the cached rootfs inside a private mount namespace (``unshare
--mount``), so the mount vanishes with the run and nothing a run writes (nginx's
``/var/lib/nginx``, logs, ``__pycache__``) reaches the cache or the next run. Where
overlayfs is missing, the rootfs is copied instead (``cp -a --reflink=auto``). The run
directory is removed when the run stops; those of dead processes by the next run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ..errors import RunError
from ..image.assemble import Image
from ..image.cache import BlobCache
from .unpack import DEFAULT_LIMITS, UnpackLimits, unpack_image

__all__ = ["RunRootfs"]

#: Characters overlayfs's mount options cannot carry in a path.
_OVERLAY_UNSAFE = ",:\\"

_overlay_ok: bool | None = None


def _overlay_supported(run_root: Path, unshare: str) -> bool:
    """Whether overlayfs can be mounted here (probed once per process on a scratch dir)."""
    global _overlay_ok
    if _overlay_ok is None:
        probe = run_root / f".probe-{os.getpid()}-{os.urandom(4).hex()}"
        try:
            for d in ("lower", "upper", "work", "merged"):
                (probe / d).mkdir(parents=True)
            opts = f"lowerdir={probe}/lower,upperdir={probe}/upper,workdir={probe}/work"
            r = subprocess.run([unshare, "--mount", "--propagation", "private", "mount", "-t", "overlay", "overlay",
                                "-o", opts, str(probe / "merged")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               check=False)
            _overlay_ok = r.returncode == 0
        finally:
            shutil.rmtree(probe, ignore_errors=True)
    return _overlay_ok


class RunRootfs:
    """One run's root: ``merged`` once ``prepare`` returns (for an overlay, once ``wrap``'s command mounts it).

    Example::

        rootfs = RunRootfs(image, cache, shutil.which("unshare"))
        rootfs.prepare()
        subprocess.run(rootfs.wrap(["bwrap", "--bind", str(rootfs.merged), "/", ...]))
        rootfs.remove()
    """

    def __init__(self, image: Image, cache: BlobCache, unshare: str | None, *,
                 limits: UnpackLimits = DEFAULT_LIMITS) -> None:
        self.image = image
        self.cache = cache
        self._unshare = unshare
        self._limits = limits
        self._overlay_opts: str | None = None
        self._run_dir: Path | None = None
        #: The image's cached, read-only rootfs (set by ``prepare``).
        self.lower = Path()
        #: Where the run's root is (set by ``prepare``).
        self.merged = Path()

    def prepare(self) -> None:
        """Unpack the image (once), make the run directory and, without overlayfs, copy the rootfs.

        Raises ArchiveError and DiskFullError from unpacking, RunError when the copy fails.
        """
        self.lower = rootfs = unpack_image(self.image, self.cache, limits=self._limits)
        runs = self.cache.root / "run"
        runs.mkdir(mode=0o700, exist_ok=True)
        for stale in runs.glob("[0-9]*-*"):
            if not Path(f"/proc/{stale.name.split('-')[0]}").exists():
                shutil.rmtree(stale, ignore_errors=True)
        self._run_dir = run_dir = runs / f"{os.getpid()}-{os.urandom(4).hex()}"
        run_dir.mkdir(mode=0o700)
        self.merged = merged = run_dir / "rootfs"
        merged.mkdir()
        unshare = self._unshare
        if (unshare is not None and not any(c in str(p) for p in (rootfs, run_dir) for c in _OVERLAY_UNSAFE)
                and _overlay_supported(runs, unshare)):
            (run_dir / "upper").mkdir()
            (run_dir / "work").mkdir()
            self._overlay_opts = f"lowerdir={rootfs},upperdir={run_dir / 'upper'},workdir={run_dir / 'work'}"
            return
        r = subprocess.run(["cp", "-a", "--reflink=auto", f"{rootfs}/.", f"{merged}/"],
                           stderr=subprocess.PIPE, text=True, check=False)
        if r.returncode != 0:
            raise RunError(f"cannot copy the rootfs into {run_dir}: {r.stderr.strip()}")

    def wrap(self, cmd: list[str]) -> list[str]:
        """``cmd`` run where ``merged`` is the run's root: inside a private mount namespace with the overlay mounted."""
        if self._overlay_opts is None:
            return cmd
        assert self._unshare is not None
        return [self._unshare, "--mount", "--propagation", "private", "--", "/bin/sh", "-ec",
                'mount -t overlay overlay -o "$1" "$2"; shift 2; exec "$@"', "sh", self._overlay_opts,
                str(self.merged), *cmd]

    def remove(self) -> None:
        """Remove the run directory (the overlay upper or the copy); idempotent."""
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None
