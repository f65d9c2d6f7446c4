"""The default base made from Debian's .debs, the distroless way: no mmdebstrap, no root, no qemu.

The release's ``Essential: yes`` packages (a shell and the tools the runit scripts use),
``usr-is-merged``, and python3, nginx-light, runit and ca-certificates, resolved and
unpacked into one layer by ``ociassemble.debian`` for any architecture, without
running a program of that architecture. Same archive state, same digest.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Sequence
from pathlib import Path

from ..debian.install import packages_layer
from ..debian.repository import Target, debian_arch, open_repository
from ..image.assemble import ImageBuilder
from ..image.cache import BlobCache
from ..image.compress import Compression
from ..image.oci import Platform
from ..image.platform import host_platform, normalize
from ..transport.layout import write_layout

__all__ = ["make_base_from_debs", "BASE_PACKAGES", "BASE_ENV"]

#: what the scoring image needs beyond the essential set (libstdc++6: the C++ runtime manylinux wheels such
#: as numpy's load from the system, which mmdebstrap's minbase has through apt); usr-is-merged says the root is
#: merged-/usr (what init-system-helpers asks for), as the layer lays it out
BASE_PACKAGES = ("usr-is-merged", "python3", "nginx-light", "runit", "ca-certificates", "libstdc++6")
#: the environment Debian's images set (debuerreotype's PATH)
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


def make_base_from_debs(cache: BlobCache, target: Path, *, release: str = "bookworm",
                        platform: Platform | None = None, packages: Sequence[str] = BASE_PACKAGES,
                        apt_mirror: str | None = None, keyring: Path | None = None,
                        log: Callable[[str], None] = lambda _: None, replace: bool = True, epoch: int = 0) -> Path:
    """Write the base for ``platform`` as an OCI layout at ``target`` (replacing it); returns it.
    ``epoch``: every timestamp in it (``Settings.epoch``: ``$SOURCE_DATE_EPOCH``, default 0).

    ``replace=False``: a base already at ``target`` once the lock is held (another process made
    it meanwhile) is kept and returned.

    Raises InputError/PackageError/MirrorError (see ``debian.repository.open_repository``).
    """
    plat = normalize(platform or host_platform())
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not replace and (target / "index.json").is_file():
            return target
        arch = debian_arch(plat.architecture, plat.variant)
        repo = open_repository(cache, Target("debian", release, arch), apt_mirror=apt_mirror, keyring=keyring)
        # usr-is-merged exists from bookworm on; bullseye's essential set asks for no merge
        wanted = repo.essential() + [p for p in packages if p != "usr-is-merged" or repo.index.versions(p)]
        chosen = repo.resolve(wanted)
        log(f"making the {release} {plat} base from {len(chosen)} Debian packages (no mmdebstrap, no emulation)")
        made = packages_layer(cache, repo.fetcher, chosen, new_root=True, merged_usr=True,
                              compression=Compression("gzip"), epoch=epoch, log=log)
        for note in made.notes:
            if "postinst was not run" in note:
                log(note)
        b = ImageBuilder(cache, None, platform=plat)
        b.add_layer(made.layer, made.created_by(f"debian {release} base:"))
        b.config = b.config.with_env(BASE_ENV)
        write_layout(b.build(epoch), cache, target, "latest")
    return target
