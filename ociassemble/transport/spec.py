"""Where images are read from and written to, named as skopeo names them.

``oci:DIR[:TAG]``, ``oci-archive:FILE[:TAG]``, ``docker-archive:FILE[:NAME:TAG]``,
``docker://REF`` (or a bare registry reference, for bases and pushes), and for bases
only ``rootfs:PATH`` (a rootfs tarball or directory, made into one layer). A path given
without a prefix is what its contents say: a layout folder, an oci-archive or a
docker-archive (by the names among its tar headers), else a rootfs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

__all__ = ["ImageSpec", "parse_spec", "is_registry", "OUTPUT_KINDS"]

OUTPUT_KINDS = ("oci", "oci-archive", "docker-archive")
_KINDS = ("oci", "oci-archive", "docker-archive", "docker", "rootfs")


@dataclass(frozen=True)
class ImageSpec:
    kind: str  # oci | oci-archive | docker-archive | docker | rootfs
    path: Path | None = None
    tag: str | None = None  # oci: ref name; docker-archive: NAME:TAG; docker: the reference
    raw: str = ""

    def __str__(self) -> str:
        return self.raw


def _split_tag(rest: str) -> tuple[str, str | None]:
    # DIR[:TAG]: a colon after the last slash starts the tag
    head, sep, tail = rest.rpartition(":")
    if sep and "/" not in tail and head:
        return head, tail or None
    return rest, None


def parse_spec(spec: str, *, for_output: bool = False) -> ImageSpec:
    """Parse an image location; bare paths and references are recognised for bases.

    Raises UsageError naming the accepted forms when the spec fits none.
    """
    forms = "oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG]"
    if not spec:
        raise UsageError(f"empty image location: use one of {forms}")
    kind, sep, rest = spec.partition(":")
    if sep and kind in _KINDS:
        if kind == "docker":
            ref = rest[2:] if rest.startswith("//") else rest
            if not ref:
                raise UsageError(f"{spec!r}: docker:// needs a reference, e.g. docker://registry.example.com/team/app:1.0")
            if for_output:
                raise UsageError(f"{spec!r}: push to a registry with 'ociassemble push {ref}', not --output")
            return ImageSpec("docker", None, ref, spec)
        if not rest:
            raise UsageError(f"{spec!r}: {kind}: needs a path, e.g. {kind}:./out")
        if kind == "rootfs":
            if for_output:
                raise UsageError(f"{spec!r}: rootfs: is for bases only; write one of {forms}")
            return ImageSpec("rootfs", Path(rest), None, spec)
        if kind == "docker-archive":
            path, _, name = rest.partition(":")
            if name and ":" not in name:
                name += ":latest"
            return ImageSpec(kind, Path(path), name or None, spec)
        path, tag = _split_tag(rest)
        return ImageSpec(kind, Path(path), tag, spec)
    if for_output:
        head, colon, _ = spec.partition(":")
        if colon and re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", head):
            raise UsageError(f"--output {spec!r}: say which format: {head}: is none; one of {forms}")
        guess = f"oci-archive:{spec} (or docker-archive:{spec} for 'docker load')" if spec.endswith(".tar") \
            else f"oci:{spec}"
        raise UsageError(f"--output {spec!r}: say which format, e.g. {guess}; one of {forms}")
    # an image given bare: an existing path (or a tarball's name) is a layout, an archive or a
    # rootfs, as its contents say; anything else a registry reference
    p = Path(spec)
    if p.exists() or spec.startswith((".", "/", "~")) or spec.endswith(_TARBALLS):
        p = p.expanduser()
        if p.is_dir() and (p / "index.json").is_file() and (p / "oci-layout").is_file():
            return ImageSpec("oci", p, None, spec)
        return ImageSpec(_tar_kind(p) if p.is_file() else "rootfs", p, None, spec)
    return ImageSpec("docker", None, spec, spec)


#: names that are files, never a registry repository, even when no such file exists (so the
#: error is "no such file", not a lookup on Docker Hub)
_TARBALLS = (".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.xz")
#: what an image archive's members are named (an oci-archive; a docker-archive as ociassemble,
#: skopeo and docker save write one, before and since Docker 25): a tar with a member named
#: otherwise is a rootfs, known at that member (its first, in a real one) without reading on
_ARCHIVE_MEMBER = re.compile(r"index\.json|oci-layout|manifest\.json|repositories|blobs(/\w+(/[0-9a-f]+)?)?"
                             r"|[0-9a-f]{64}|[^/]+\.(json|tar)|[^/]+/(layer\.tar|json|VERSION)")


def _tar_kind(p: Path) -> str:
    """What a bare file given as an image is: an oci-archive (``index.json`` and ``oci-layout`` at
    its top), a docker-archive (``manifest.json``), else a rootfs tarball (a compressed one too:
    image archives are plain tars). Only headers are read (``tarread.walk_headers``), and of a
    rootfs only the first few."""
    from ..image.tarcheck import UnsafeEntry
    from ..image.tarread import walk_headers

    seen: set[str] = set()
    try:
        with open(p, "rb") as f:
            for name in walk_headers(f, 10_000_000):
                name = name.removeprefix("./").rstrip("/")
                if name in ("", "."):
                    continue
                if not _ARCHIVE_MEMBER.fullmatch(name):
                    return "rootfs"
                seen.add(name)
                if {"index.json", "oci-layout"} <= seen:
                    return "oci-archive"
    except (OSError, UnsafeEntry):
        return "rootfs"
    return "docker-archive" if "manifest.json" in seen else "rootfs"


def is_registry(spec: str | None) -> bool:
    """Whether reading ``spec`` talks to a registry (so it needs the registry settings)."""
    return bool(spec) and parse_spec(spec).kind == "docker"
