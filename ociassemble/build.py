"""One build from a project: the AzureML scoring image by the recipe, or a plain image of a base and layers.

This is what ``ociassemble build``, ``push`` and ``verify`` run before they write, push
or compare, and what a program calls to do the same (docs/library.md)::

    project = project_with(Path("examples/sklearn-model"), base="oci:./base")
    built = build_image(project, BlobCache(default_cache_dir()))
    write_image(built.image, built.cache, "oci:./image")

Nothing is written outside the blob cache; the result names what each layer cost (made,
reused, taken from the registry cache) and what an SBOM of the image needs.

For several platforms, ``build_images`` builds one image per platform, each on that
platform's base, and puts them under one index. The layers that do not depend on the
platform (configs, app, models, source) are the same bytes for every platform, so the
second platform finds them in the cache: only its base and its deps layer are its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .azureml.project import Project
from .errors import UsageError
from .image.assemble import Image, ImageBuilder
from .image.cache import BlobCache
from .image.compress import Compression
from .image.layer import BuiltLayer, Entry, LayerSource, build_in_parallel, build_layer, scan_sources, source_date_epoch
from .image.imageindex import ImageIndex, Target
from .image.oci import Descriptor, Platform
from .image.platform import normalize, parse_platforms
from .inputs.base import load_base
from .inputs.context import check_secrets

__all__ = ["Built", "BuiltSet", "build_image", "build_images", "image_sbom", "uses_recipe"]


@dataclass
class Built:
    """What a build produced, and what its SBOM needs."""

    image: Image
    layers: list[tuple[str, BuiltLayer]]
    project: Project
    cache: BlobCache
    deps_site: Path | None = None  # the recipe's pex site-packages
    scan_layers: list[Descriptor] | None = None  # the layers whose dpkg status (and dist-infos) the SBOM reads
    pex_ran: bool = False  # the recipe ran pex (its deps were in no cache)
    layer_cache: Any = None  # the registry layer cache (registry.layercache), if on
    locked: bool = False  # ociassemble.lock gave the base's digest and the Python files


def uses_recipe(project: Project, extra_layers: Sequence[LayerSource] = ()) -> bool:
    """Whether a project with nothing else said is a scoring image: a config file or an Azure
    ML inference config, or a score.py in its folder and no extra layers."""
    if project.config_file is not None or project.inference_config is not None:
        return True
    return not extra_layers and (project.root / "score.py").is_file()


def _command(value: str | Sequence[str]) -> tuple[str, ...]:
    """A Cmd/Entrypoint: a JSON array or a space-separated string (as the flags give them), or a list."""
    if isinstance(value, str):
        return tuple(json.loads(value)) if value.startswith("[") else tuple(value.split())
    return tuple(value)


def build_image(project: Project, cache: BlobCache, *, recipe: bool | None = None,
                extra_layers: Sequence[LayerSource] = (), cmd: str | Sequence[str] | None = None,
                entrypoint: str | Sequence[str] | None = None, ports: Sequence[str] = (),
                workdir: str | None = None, registry_options: Any = None, layer_cache: Any = None,
                allow_secrets: bool = False, log: Callable[[str], None] = lambda _: None,
                on_bytes: Callable[[int], None] | None = None, debug: bool = False,
                platform: Platform | None = None, lock_mode: str = "use", uploader: Any = None) -> Built:
    """Build the image ``project`` describes into ``cache``, for ``platform`` (default: the base's).

    ``recipe``: True the AzureML recipe, False a plain image (``project.base`` plus
    ``extra_layers``), None decides by ``uses_recipe``. ``cmd``, ``entrypoint``, ``ports``
    (``PORT[/PROTO]``) and ``workdir`` set a plain image's config. ``registry_options``
    is for a registry base; ``layer_cache`` a ``registry.layercache.RegistryLayerCache``.
    ``lock_mode`` (the recipe): "use" ``ociassemble.lock`` when it holds, "locked" (a stale
    lock is an error: CI's ``--locked``), "off" (``azureml.locking``). ``uploader`` (a push
    that builds: ``registry.speculative.SpeculativeUploader``) sends each new layer held by
    reference to the registry as it is hashed (``layer.build_layer``).
    Raises UsageError when a plain build has nothing to build.
    """
    extra = list(extra_layers)
    if recipe is None:
        recipe = uses_recipe(project, extra)
    if recipe:
        from .azureml.recipe import build_azureml_image

        res = build_azureml_image(project, cache, extra_layers=extra, log=log, registry_options=registry_options,
                                  on_bytes=on_bytes, allow_secrets=allow_secrets, layer_cache=layer_cache, debug=debug,
                                  platform=platform, lock_mode=lock_mode, uploader=uploader)  # type: ignore[arg-type]
        image, layers = res.image, res.layers
        scan = list(image.manifest.layers[:len(image.manifest.layers) - len(layers)])
        # the Debian packages layer holds the dpkg status with the base's and its own packages
        scan += [l.descriptor for kind, l in layers if kind == "debian-packages"]
        if res.deps_site is None:  # the deps layer came from the registry cache: the SBOM reads its dist-infos
            scan += [l.descriptor for kind, l in layers if kind == "python-deps"]
        return Built(image, layers, project, cache, res.deps_site, scan, res.pex_ran, layer_cache, res.locked)
    if not project.base and not extra and not project.apt:
        raise UsageError("nothing to build: give --base and/or --layer SRC:DEST, or a score.py (see 'ociassemble build --help')")
    scanned = [scan_sources([src]) for src in extra]  # once: checked here, built below
    check_secrets([e for entries in scanned for e in entries], allow=allow_secrets, warn=log)
    # "scratch" is the empty base, as in a Dockerfile's FROM scratch (never Docker Hub's library/scratch)
    base = (load_base(project.base, cache, registry_options=registry_options, platform=platform)
            if project.base not in (None, "", "scratch") else None)
    b = ImageBuilder(cache, base, **({"platform": normalize(platform)} if platform is not None else {}))
    compression = Compression.parse(project.compression, project.compression_level)
    layers = []
    if project.apt:
        if base is None:
            raise UsageError("apt packages need a Debian-based --base to take them from (scratch has no release); "
                             "give --base")
        from .azureml.aptlayer import debian_layer

        added = debian_layer(project, cache, base, str(project.base), [], compression, source_date_epoch(), log)
        if added is not None:
            log("layer debian-packages")
            b.add_layer(added.layer, added.created_by())
            layers.append(("debian-packages", added.layer))
    def one(src: LayerSource, entries: list[Entry]) -> BuiltLayer:
        log(f"layer {src.src} -> {src.dest}")
        return build_layer(cache, [src], compression=compression, entries=entries, on_bytes=on_bytes,
                           remote=layer_cache, uploader=uploader)

    if uploader is not None and b.base is not None:  # the base's layers go up beside the new ones
        uploader.push_early(b.build(source_date_epoch()), cache)
    for src, layer in zip(extra, build_in_parallel(one, list(zip(extra, scanned)), uploader)):
        b.add_layer(layer, src.created_by())
        layers.append((f"{src.dest}", layer))
    cfg = b.config.with_env(project.env)
    if project.labels:
        cfg = replace(cfg, labels={**cfg.labels, **project.labels})
    if cmd is not None:
        cfg = replace(cfg, cmd=_command(cmd))
    if entrypoint is not None:
        cfg = replace(cfg, entrypoint=_command(entrypoint))
    if ports:
        cfg = replace(cfg, exposed_ports=tuple(sorted(set(cfg.exposed_ports) | {p if "/" in p else f"{p}/tcp" for p in ports})))
    if workdir:
        cfg = replace(cfg, working_dir=workdir)
    b.config = cfg
    return Built(b.build(created=source_date_epoch()), layers, project, cache, layer_cache=layer_cache)


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
    def project(self) -> Project:
        return self.builds[0].project

    @property
    def layer_cache(self) -> Any:
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


def build_images(project: Project, cache: BlobCache, *, platforms: str | Sequence[str] | Sequence[Platform] | None = None,
                 log: Callable[[str], None] = lambda _: None, **kw: Any) -> BuiltSet:
    """Build ``project`` for each of ``platforms`` (default: the project's ``platform``, else
    one image for the base's own): ``build_image`` per platform, and an index when there are
    two or more. ``kw`` are ``build_image``'s.

    Raises UsageError for a platform that is not ``os/arch[/variant]``.
    """
    wanted = platforms if platforms is not None else project.platform
    if not wanted:
        return BuiltSet([build_image(project, cache, log=log, **kw)])
    parsed = parse_platforms(wanted)
    recipe = kw.get("recipe")
    if project.base is None and (recipe if recipe is not None else uses_recipe(project, kw.get("extra_layers", ()))):
        from .azureml.debianbase import require_default_bases
        from .azureml.recipe import wanted_python

        # every platform's, before any platform is built
        require_default_bases(cache, parsed, wanted_python(project))
    builds = []
    for p in parsed:
        if len(parsed) > 1:
            log(f"platform {p}")
        builds.append(build_image(project, cache, log=log, platform=p, **kw))
    if len(builds) == 1:
        return BuiltSet(builds)
    return BuiltSet(builds, ImageIndex.of([b.image for b in builds]))


def image_sbom(image: Image, cache: BlobCache, *, name: str, repository: str | None = None,
               site: Path | None = None, scan: Sequence[Descriptor] | None = None) -> bytes:
    """The image's SPDX SBOM bytes (``image.sbom``), dated by ``SOURCE_DATE_EPOCH`` as the image is.

    ``site`` and ``scan`` are a build's ``deps_site`` and ``scan_layers`` (None: read every layer).
    """
    from .image.sbom import image_packages, sbom_bytes, spdx_document

    packages = image_packages(image, cache, site=site, layers=scan)
    return sbom_bytes(spdx_document(image, packages, name=name, created=source_date_epoch(), repository=repository))
