"""What a base image holds that the recipe needs: Python's version, the platform, and
whether python3, nginx and runsvdir are there.

Read from the base's layers (tar headers and dpkg's status file), never from the
build machine: the image's Python decides which wheels pex must pick. The answer
is cached by the base's config digest, so a base is scanned once.
"""

from __future__ import annotations

import json
import re
import tarfile
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import BuildError
from ..image.assemble import Image
from ..image.cache import BlobCache
from ..image.oci import MediaType
from ..image.tarread import entries_of, read_small, stream_tar

if TYPE_CHECKING:
    from ..registry.layercache import RegistryLayerCache

__all__ = ["BaseInfo", "BaseDebian", "base_debian", "inspect_base"]

_PY_RE = re.compile(r"^(?:usr/(?:local/)?bin)/python(3\.\d+)$")
_NEEDED = {
    "python3": ("usr/bin/python3", "usr/local/bin/python3"),
    "nginx": ("usr/sbin/nginx", "usr/bin/nginx", "usr/local/sbin/nginx"),
    "runsvdir": ("usr/bin/runsvdir", "usr/sbin/runsvdir", "sbin/runsvdir", "bin/runsvdir"),
}
#: the paths whose presence (or link target) base info reads
_WATCHED = frozenset(p for paths in _NEEDED.values() for p in paths)


@dataclass(frozen=True)
class BaseInfo:
    python: str  # "3.11"
    python_full: str  # "3.11.2"
    glibc: str | None  # "2.36"
    architecture: str  # "amd64"
    has: tuple[str, ...]  # which of python3/nginx/runsvdir exist
    #: what dpkg says its packages are built for ("arm64"), None where it does not say: a base
    #: labelled for one platform and made for another is refused before pex picks wheels for it
    dpkg_architecture: str | None = None

    @property
    def machine(self) -> str:
        return {"amd64": "x86_64", "arm64": "aarch64"}.get(self.architecture, self.architecture)

    def missing(self) -> list[str]:
        return [n for n in _NEEDED if n not in self.has]


def _open_layer(cache: BlobCache, media_type: str, digest: str) -> BinaryIO:
    f = cache.open(digest)
    if media_type == MediaType.LAYER_GZIP:
        from isal import igzip_threaded

        return igzip_threaded.open(f, "rb")  # type: ignore[return-value]
    if media_type == MediaType.LAYER_ZSTD:
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(f, closefd=True)  # type: ignore[return-value]
    return f


def _dpkg_architecture(text: str) -> str | None:
    """The architecture of the C library's package (``all`` packages say nothing)."""
    for para in text.split("\n\n"):
        if re.search(r"^Package: libc6$", para, re.M):
            arch = re.search(r"^Architecture: (\S+)", para, re.M)
            return arch.group(1) if arch else None
    return None


def _dpkg_versions(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for para in text.split("\n\n"):
        pkg = re.search(r"^Package: (\S+)", para, re.M)
        ver = re.search(r"^Version: (\S+)", para, re.M)
        if pkg and ver:
            out[pkg.group(1)] = ver.group(1)
    return out


def _from_doc(doc: Any) -> BaseInfo:
    """A BaseInfo from its JSON (``asdict``); raises ValueError/TypeError/KeyError for anything else."""
    return BaseInfo(**{**doc, "has": tuple(doc["has"])})


def inspect_base(image: Image, cache: BlobCache, remote: RegistryLayerCache | None = None) -> BaseInfo:
    """Scan the base's layers (bottom to top; later layers and whiteouts win).

    The answer is kept per config digest in the cache and, with ``remote`` (a
    ``registry.layercache.RegistryLayerCache``), read from and noted for the registry
    cache, so a fresh runner with a registry base downloads no base layer to learn it.
    """
    config_digest = image.manifest.config.digest
    memo = cache.root / "baseinfo" / (config_digest.split(":")[1] + ".json")
    try:
        info = _from_doc(json.loads(memo.read_text()))
    except (OSError, ValueError, TypeError, KeyError):
        pass
    else:
        if remote is not None:
            remote.note_baseinfo(config_digest, asdict(info))
        return info
    if remote is not None:
        doc = remote.find_baseinfo(config_digest)
        if doc is not None:
            try:
                info = _from_doc(doc)
            except (ValueError, TypeError, KeyError):
                remote.warning(f"registry cache base info for {config_digest} is unusable; reading the base")
            else:
                memo.parent.mkdir(parents=True, exist_ok=True)
                memo.write_text(json.dumps(asdict(info)))
                return info
    image.ensure_blobs(cache)
    present: dict[str, str] = {}  # path -> linkname ("" for files)
    dpkg = ""
    for desc in image.manifest.layers:
        with _open_layer(cache, desc.media_type, desc.digest) as raw:
            try:
                tf = stream_tar(raw)
                for m in entries_of(tf):
                    name = m.name.lstrip("./").lstrip("/")
                    base = name.rsplit("/", 1)[-1]
                    if base.startswith(".wh."):
                        parent = name.rsplit("/", 1)[0] if "/" in name else ""
                        target = (parent + "/" if parent else "") + base[4:]
                        for k in [k for k in present if k == target or k.startswith(target + "/")]:
                            del present[k]
                        continue
                    if (m.isfile() or m.issym() or m.islnk()) and (name in _WATCHED or _PY_RE.match(name)):
                        present[name] = m.linkname if m.issym() else ""  # (only these: flat memory)
                    if name == "var/lib/dpkg/status" and m.isfile():
                        dpkg = read_small(tf, m).decode("utf-8", "replace")
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise BuildError(f"base layer {desc.digest} is not a readable tar ({exc}); use another base") from None
    has = tuple(n for n, paths in _NEEDED.items() if any(p in present for p in paths))
    versions = sorted(
        (m.group(1) for p in present if (m := _PY_RE.match(p))), key=lambda v: tuple(int(x) for x in v.split("."))
    )
    link = present.get("usr/bin/python3") or present.get("usr/local/bin/python3") or ""
    py = link.rsplit("python", 1)[-1] if re.search(r"python3\.\d+$", link) else (versions[-1] if versions else "")
    pkgs = _dpkg_versions(dpkg)
    full = pkgs.get(f"python{py}-minimal") or pkgs.get(f"python{py}") or ""
    full_match = re.match(r"(\d+\.\d+\.\d+)", full)
    libc = re.match(r"(\d+\.\d+)", pkgs.get("libc6", ""))
    info = BaseInfo(
        python=py,
        python_full=full_match.group(1) if full_match else (py + ".0" if py else ""),
        glibc=libc.group(1) if libc else None,
        architecture=image.config.platform.architecture,
        has=has,
        dpkg_architecture=_dpkg_architecture(dpkg),
    )
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(json.dumps(asdict(info)))
    if remote is not None:
        remote.note_baseinfo(config_digest, asdict(info))
    return info


@dataclass(frozen=True)
class BaseDebian:
    """What adding Debian packages to a base needs from it: its os-release, its dpkg status
    (``status`` and distroless' ``status.d/*``), and whether its root is merged-/usr."""

    os_release: str
    status: str
    status_d: tuple[str, ...]
    merged_usr: bool


_DEBIAN_FILES = ("etc/os-release", "usr/lib/os-release", "var/lib/dpkg/status")


def base_debian(image: Image, cache: BlobCache) -> BaseDebian:
    """Read the base's layers for ``BaseDebian`` (whiteouts applied), kept per config digest."""
    memo = cache.root / "baseinfo" / (image.manifest.config.digest.split(":")[1] + ".debian.json")
    try:
        doc = json.loads(memo.read_text())
        return BaseDebian(doc["os_release"], doc["status"], tuple(doc["status_d"]), bool(doc["merged_usr"]))
    except (OSError, ValueError, TypeError, KeyError):
        pass
    image.ensure_blobs(cache)
    files: dict[str, bytes] = {}
    bin_link = False
    for desc in image.manifest.layers:
        with _open_layer(cache, desc.media_type, desc.digest) as raw:
            try:
                tf = stream_tar(raw)
                for m in entries_of(tf):
                    name = m.name.removeprefix("./").lstrip("/").rstrip("/")
                    base = name.rsplit("/", 1)[-1]
                    if base.startswith(".wh."):
                        parent = name[: len(name) - len(base)]
                        target = parent if base == ".wh..wh..opq" else parent + base[4:]
                        for k in [k for k in files if k == target or k.startswith(target.rstrip("/") + "/")]:
                            del files[k]
                        if target in ("bin", ""):
                            bin_link = False
                        continue
                    if name == "bin":
                        bin_link = m.issym()
                    wanted = name in _DEBIAN_FILES or name.startswith("var/lib/dpkg/status.d/")
                    if wanted and m.isreg():
                        files[name] = read_small(tf, m)
                    elif wanted and m.issym() and name.endswith("os-release"):
                        files.pop(name, None)
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise BuildError(f"base layer {desc.digest} is not a readable tar ({exc}); use another base") from None
    text = {k: v.decode("utf-8", "replace") for k, v in files.items()}
    info = BaseDebian(text.get("etc/os-release") or text.get("usr/lib/os-release", ""),
                      text.get("var/lib/dpkg/status", ""),
                      tuple(text[k] for k in sorted(text) if k.startswith("var/lib/dpkg/status.d/")), bin_link)
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(json.dumps(asdict(info)))
    return info
