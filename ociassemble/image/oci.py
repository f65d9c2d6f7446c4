"""The OCI image spec's types as plain dataclasses, its media types, and canonical JSON.

Imports nothing from the rest of ociassemble but ``digest`` and ``errors``: every
other module speaks these types. Docker's v2 schema2 media types are accepted when
reading and translated to their OCI equivalents; ociassemble only writes OCI.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import ArchiveError

__all__ = [
    "MediaType",
    "Platform",
    "Descriptor",
    "Manifest",
    "Index",
    "History",
    "ImageConfig",
    "canonical_json",
    "parse_json",
    "LAYER_MEDIA_TYPES",
    "MANIFEST_MAX",
    "CONFIG_MAX",
]

#: The largest manifest or index read (distribution's own limit; also an OCI layout's index.json
#: and a docker-archive's manifest.json): a bigger one, from a registry or in a layout or an
#: archive, is refused before its bytes are read, so a hostile image cannot fill the memory.
MANIFEST_MAX = 4 << 20
#: The largest image config read (a real one is a few KiB; a long history, some hundreds).
CONFIG_MAX = 8 << 20


class MediaType:
    """Media type strings (constants, not an Enum: they travel as plain strings)."""

    MANIFEST = "application/vnd.oci.image.manifest.v1+json"
    INDEX = "application/vnd.oci.image.index.v1+json"
    CONFIG = "application/vnd.oci.image.config.v1+json"
    LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
    LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
    LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
    EMPTY = "application/vnd.oci.empty.v1+json"

    DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
    DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
    DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
    DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

    MANIFESTS = (MANIFEST, DOCKER_MANIFEST)
    IMAGE_CONFIGS = (CONFIG, DOCKER_CONFIG)
    INDEXES = (INDEX, DOCKER_LIST)

    @staticmethod
    def to_oci(media_type: str) -> str:
        """The OCI name of a docker schema2 media type (OCI names pass through)."""
        return {
            MediaType.DOCKER_MANIFEST: MediaType.MANIFEST,
            MediaType.DOCKER_LIST: MediaType.INDEX,
            MediaType.DOCKER_CONFIG: MediaType.CONFIG,
            MediaType.DOCKER_LAYER_GZIP: MediaType.LAYER_GZIP,
            MediaType.DOCKER_FOREIGN_LAYER: MediaType.LAYER_GZIP,
        }.get(media_type, media_type)


LAYER_MEDIA_TYPES = (MediaType.LAYER_TAR, MediaType.LAYER_GZIP, MediaType.LAYER_ZSTD)


def canonical_json(obj: Any) -> bytes:
    """The one place JSON is serialised for hashing: sorted keys, no spaces, UTF-8.

    Every manifest, config and index ociassemble writes goes through here, so the
    same value always has the same bytes and so the same digest.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


#: How deep a JSON document read from elsewhere (a registry, an archive) may nest. OCI
#: manifests, indexes and configs go 4-6 levels deep; 100 leaves room for any annotation
#: and keeps everything that walks the value later (canonical_json, comparisons) far
#: from Python's recursion limit.
MAX_JSON_DEPTH = 100


def parse_json(data: bytes | str) -> Any:
    """``json.loads`` for a document from elsewhere: too deep a nesting is a ValueError like any
    other bad JSON (not a RecursionError), so a registry's 100,000 nested arrays are one error line.

    Raises ValueError (json.JSONDecodeError for malformed JSON).
    """
    try:
        value = json.loads(data)
    except RecursionError:
        raise ValueError(f"JSON nested more than {MAX_JSON_DEPTH} levels deep") from None
    # iterative, not recursive: the check must not be what overflows
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"JSON nested more than {MAX_JSON_DEPTH} levels deep")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, (dict, list)))
    return value


def _req(d: dict[str, Any], key: str, what: str) -> Any:
    try:
        return d[key]
    except (KeyError, TypeError):
        raise ArchiveError(f"{what} has no {key!r}: not an OCI/Docker image document") from None


@dataclass(frozen=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Platform":
        return cls(os=d.get("os", "linux"), architecture=d.get("architecture", "amd64"), variant=d.get("variant"))

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] | None = None
    platform: Platform | None = None
    artifact_type: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform:
            out["platform"] = self.platform.to_json()
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Descriptor":
        size = _req(d, "size", "descriptor")
        if not isinstance(size, int) or size < 0:
            raise ArchiveError(f"descriptor size {size!r} is not a non-negative integer")
        from .digest import Digest

        digest = str(Digest(_req(d, "digest", "descriptor")))
        return cls(
            media_type=MediaType.to_oci(d.get("mediaType", "")),
            digest=digest,
            size=size,
            annotations=d.get("annotations") or None,
            platform=Platform.from_json(d["platform"]) if d.get("platform") else None,
            artifact_type=d.get("artifactType"),
        )


@dataclass(frozen=True)
class Manifest:
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: dict[str, str] | None = None
    subject: Descriptor | None = None
    artifact_type: str | None = None
    media_type: str = MediaType.MANIFEST

    @property
    def kind(self) -> str | None:
        """None for a container image; else what the manifest is (its artifactType, or its
        config's media type): an SBOM, a signature or a cache entry cannot be run or built on."""
        if self.artifact_type:
            return self.artifact_type
        if self.config.media_type not in MediaType.IMAGE_CONFIGS:
            return self.config.media_type
        return None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": self.config.to_json(),
            "layers": [layer.to_json() for layer in self.layers],
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.subject:
            out["subject"] = self.subject.to_json()
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Manifest":
        if d.get("schemaVersion") != 2:
            raise ArchiveError(f"manifest schemaVersion {d.get('schemaVersion')!r} is not 2")
        return cls(
            config=Descriptor.from_json(_req(d, "config", "manifest")),
            layers=tuple(Descriptor.from_json(x) for x in _req(d, "layers", "manifest")),
            annotations=d.get("annotations") or None,
            subject=Descriptor.from_json(d["subject"]) if d.get("subject") else None,
            artifact_type=d.get("artifactType"),
            # kept as written: a docker schema2 manifest must be re-sent under its own type
            media_type=d.get("mediaType") or MediaType.MANIFEST,
        )


@dataclass(frozen=True)
class Index:
    manifests: tuple[Descriptor, ...]
    annotations: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": MediaType.INDEX,
            "manifests": [m.to_json() for m in self.manifests],
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Index":
        return cls(
            manifests=tuple(Descriptor.from_json(x) for x in _req(d, "manifests", "index")),
            annotations=d.get("annotations") or None,
        )


@dataclass(frozen=True)
class History:
    created_by: str
    created: str | None = None
    comment: str | None = None
    empty_layer: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"created_by": self.created_by}
        if self.created:
            out["created"] = self.created
        if self.comment:
            out["comment"] = self.comment
        if self.empty_layer:
            out["empty_layer"] = True
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "History":
        return cls(
            created_by=d.get("created_by", ""),
            created=d.get("created"),
            comment=d.get("comment"),
            empty_layer=bool(d.get("empty_layer", False)),
        )


@dataclass(frozen=True)
class ImageConfig:
    """The image configuration (the config blob), including rootfs.diff_ids and history.

    Unknown fields of a base's config (e.g. Docker's ``container_config``) are kept
    in ``extra`` so rewriting a base does not lose them.
    """

    platform: Platform = field(default_factory=Platform)
    diff_ids: tuple[str, ...] = ()
    history: tuple[History, ...] = ()
    created: str | None = None
    author: str | None = None
    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    exposed_ports: tuple[str, ...] = ()
    working_dir: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    stop_signal: str | None = None
    volumes: tuple[str, ...] = ()
    extra_config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def env_dict(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in self.env:
            key, _, value = item.partition("=")
            out[key] = value
        return out

    def with_env(self, updates: dict[str, str]) -> "ImageConfig":
        """A copy whose Env has ``updates`` applied (existing keys keep their position)."""
        merged = self.env_dict()
        merged.update(updates)
        return replace(self, env=tuple(f"{k}={v}" for k, v in merged.items()))

    def to_json(self) -> dict[str, Any]:
        config: dict[str, Any] = dict(self.extra_config)
        if self.cmd is not None:
            config["Cmd"] = list(self.cmd)
        if self.entrypoint is not None:
            config["Entrypoint"] = list(self.entrypoint)
        if self.env:
            config["Env"] = list(self.env)
        if self.exposed_ports:
            config["ExposedPorts"] = {p: {} for p in self.exposed_ports}
        if self.working_dir:
            config["WorkingDir"] = self.working_dir
        if self.labels:
            config["Labels"] = dict(self.labels)
        if self.user:
            config["User"] = self.user
        if self.stop_signal:
            config["StopSignal"] = self.stop_signal
        if self.volumes:
            config["Volumes"] = {v: {} for v in self.volumes}
        out: dict[str, Any] = dict(self.extra)
        out.update(self.platform.to_json())
        out["config"] = config
        out["rootfs"] = {"type": "layers", "diff_ids": list(self.diff_ids)}
        out["history"] = [h.to_json() for h in self.history]
        if self.created:
            out["created"] = self.created
        if self.author:
            out["author"] = self.author
        return out

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ImageConfig":
        if not isinstance(d, dict):
            raise ArchiveError("image config is not a JSON object")
        rootfs = _req(d, "rootfs", "image config")
        cfg = dict(d.get("config") or {})
        known = {"Cmd", "Entrypoint", "Env", "ExposedPorts", "WorkingDir", "Labels", "User", "StopSignal", "Volumes"}
        extra = {
            k: v
            for k, v in d.items()
            if k not in {"architecture", "os", "variant", "config", "rootfs", "history", "created", "author"}
        }
        return cls(
            platform=Platform.from_json(d),
            diff_ids=tuple(_req(rootfs, "diff_ids", "image config rootfs")),
            history=tuple(History.from_json(h) for h in d.get("history") or ()),
            created=d.get("created"),
            author=d.get("author"),
            cmd=tuple(cfg["Cmd"]) if cfg.get("Cmd") is not None else None,
            entrypoint=tuple(cfg["Entrypoint"]) if cfg.get("Entrypoint") is not None else None,
            env=tuple(cfg.get("Env") or ()),
            exposed_ports=tuple(sorted((cfg.get("ExposedPorts") or {}).keys())),
            working_dir=cfg.get("WorkingDir") or None,
            labels=dict(cfg.get("Labels") or {}),
            user=cfg.get("User") or None,
            stop_signal=cfg.get("StopSignal") or None,
            volumes=tuple(sorted((cfg.get("Volumes") or {}).keys())),
            extra_config={k: v for k, v in cfg.items() if k not in known},
            extra=extra,
        )
