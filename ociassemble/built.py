"""What a build produced: one ``Built`` per platform (the recipe's and a plain build's alike), ``BuiltSet`` for them all,
and their JSON (``layers``, ``work``, ``registry_cache``: docs/json.md).

The recipe (``azureml.recipe``) fills a ``Built`` as it adds layers; ``build`` adds the
settings it ran on. What an SBOM of the image needs is here too: the layers whose dpkg
status and dist-infos it reads (``scan_layers``) and the deps layer's site-packages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .image.assemble import Image
from .image.cache import BlobCache
from .image.imageindex import ImageIndex, Target
from .image.layer import BuiltLayer
from .image.oci import Descriptor
from .modelspec import ModelSpec
from .settings import Settings

if TYPE_CHECKING:
    from .registry.layercache import RegistryLayerCache

__all__ = ["BuildInputs", "Built", "BuiltSet", "layers_json", "platform_json", "work_json", "work_line"]


class BuildInputs(Protocol):
    """What a build was made from, as the provenance and SBOM read it: ``Settings`` for a plain
    build, the recipe's ``azureml.project.Project`` (the settings with the v1 files read over them),
    which this layer may not name."""

    @property
    def root(self) -> Path: ...
    @property
    def config_file(self) -> Path | None: ...
    @property
    def base(self) -> str | None: ...
    @property
    def epoch(self) -> int: ...
    @property
    def models(self) -> Sequence[ModelSpec]: ...
    @property
    def requirements(self) -> Path | None: ...
    @property
    def conda_file(self) -> Path | None: ...
    @property
    def env(self) -> Mapping[str, str]: ...
    @property
    def labels(self) -> Mapping[str, str]: ...


@dataclass
class Built:
    """One image a build made, the layers it added (kind, layer) and what its SBOM needs."""

    image: Image
    cache: BlobCache
    layers: list[tuple[str, BuiltLayer]] = field(default_factory=list)
    settings: Settings | None = None
    #: the recipe's view of the settings (``azureml.project.Project``); None for a plain build
    project: BuildInputs | None = None
    #: the recipe's base image's layers (the SBOM reads their dpkg status); None: a plain build's SBOM reads every layer
    base_layers: tuple[Descriptor, ...] | None = None
    deps_site: Path | None = None  # the recipe's pex site-packages (None: the deps layer came from the registry cache)
    pex_ran: bool = False  # the recipe ran pex (its deps were in no cache)
    layer_cache: RegistryLayerCache | None = None  # the registry layer cache, if on
    locked: bool = False  # ociassemble.lock gave the base's digest and the Python files
    notes: list[str] = field(default_factory=list)

    @property
    def inputs(self) -> BuildInputs:
        """What the build was made from, by the settings' names: the recipe's project, else the settings."""
        inputs = self.project if self.project is not None else self.settings
        assert inputs is not None, "build.build_image gives every Built its settings"
        return inputs

    @property
    def scan_layers(self) -> list[Descriptor] | None:
        """The layers whose dpkg status (and dist-infos) the SBOM reads: the base's, the Debian packages
        layer (the base's and its own packages), and the deps layer when it came from the registry cache."""
        if self.base_layers is None:
            return None
        scan = list(self.base_layers) + [l.descriptor for kind, l in self.layers if kind == "debian-packages"]
        if self.deps_site is None:
            scan += [l.descriptor for kind, l in self.layers if kind == "python-deps"]
        return scan


@dataclass
class BuiltSet:
    """What a build for one or several platforms produced: one ``Built`` per platform, and
    what to write or push (``target``: the one image, or the index of them all)."""

    builds: list[Built]
    index: ImageIndex | None = None  # two or more platforms

    @property
    def target(self) -> Target:
        return self.index if self.index is not None else self.builds[0].image

    @property
    def cache(self) -> BlobCache:
        return self.builds[0].cache

    @property
    def project(self) -> BuildInputs:
        """The first platform's ``Built.inputs`` (every platform's are the same)."""
        return self.builds[0].inputs

    @property
    def layer_cache(self) -> RegistryLayerCache | None:
        return self.builds[0].layer_cache

    @property
    def layers(self) -> list[tuple[str, BuiltLayer]]:
        """Every platform's new layers (a layer shared by two is there twice: reused the second time)."""
        return [pair for b in self.builds for pair in b.layers]

    @property
    def pex_ran(self) -> bool:
        return any(b.pex_ran for b in self.builds)

    @property
    def locked(self) -> bool:
        return all(b.locked for b in self.builds)


# -- the JSON of a build (docs/json.md: ``layers``, ``work``, ``registry_cache``) ---------------------


def layers_json(layers: list[tuple[str, BuiltLayer]]) -> list[dict[str, Any]]:
    return [{"what": kind, "digest": l.descriptor.digest, "size": l.descriptor.size, "mediaType": l.descriptor.media_type,
             "diffID": l.diff_id, "reused": l.reused, "source": l.outcome} for kind, l in layers]


def platform_json(built: Built) -> dict[str, Any]:
    """One platform's image of a build: its platform, manifest digest and new layers."""
    from .image.platform import normalize

    return {"platform": str(normalize(built.image.platform)), "digest": built.image.digest,
            "config": built.image.manifest.config.digest, "layers": layers_json(built.layers),
            "pex_ran": built.pex_ran}


def _work(built: Built | BuiltSet | None) -> dict[str, Any]:
    layers = [l for _, l in built.layers] if built else []
    return {"layers_compressed": sum(l.outcome == "compressed" for l in layers),
            "layers_held_by_reference": sum(l.outcome == "held" for l in layers),
            "layers_stored_uncompressed": sum(l.outcome == "uncompressed" for l in layers),
            "layers_reused": sum(l.outcome == "reused" for l in layers),
            "layers_from_registry_cache": sum(l.outcome == "registry" for l in layers),
            "pex_ran": bool(built and built.pex_ran), "locked": bool(built and built.locked)}


def work_json(built: Built | BuiltSet | None) -> dict[str, Any]:
    """``work`` and ``registry_cache`` of a build's result: what was compressed, held by
    reference or stored uncompressed, reused, taken from the registry cache, whether pex ran."""
    lc = built.layer_cache if built else None
    return {"work": _work(built), "registry_cache": None if lc is None else
            {"repository": lc.name, "read": lc.read, "write": lc.write_enabled, **lc.stats.to_json()}}


def work_line(built: Built | BuiltSet) -> str:
    """The counts of ``work_json`` for people (a kind this build did not do is left out)."""
    work = _work(built)
    made = [f"{work['layers_compressed']} compressed"]
    if work["layers_held_by_reference"]:
        made.append(f"{work['layers_held_by_reference']} held by reference")
    if work["layers_stored_uncompressed"]:
        made.append(f"{work['layers_stored_uncompressed']} stored uncompressed")
    return (f"layers: {', '.join(made)}, {work['layers_reused']} reused from the local "
            f"index, {work['layers_from_registry_cache']} from the registry cache"
            + ("; pex ran" if work["pex_ran"] else "") + ("; locked" if work["locked"] else ""))
