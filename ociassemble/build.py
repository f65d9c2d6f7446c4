"""One build from settings: the AzureML scoring image by the recipe, or a plain image of a base and layers.

This is what the jobs ``build``, ``push`` and ``verify`` (``ociassemble.jobs``) run before
they write, push or compare::

    settings = Settings.load(Path("examples/sklearn-model"), base="oci:./base")
    built = build_images(settings, settings.blob_cache())

Nothing is written outside the blob cache; the result (``built.Built`` per platform) names
what each layer cost (made, reused, taken from the registry cache) and what an SBOM of the
image needs. A recipe build reads the project's Azure ML v1 files over the settings
(``azureml.project.project_of``); a plain build runs on the settings alone.

For several platforms, ``build_images`` builds one image per platform, each on that
platform's base, and puts them under one index. The layers that do not depend on the
platform (configs, app, models, source) are the same bytes for every platform, so the
second platform finds them in the cache: only its base and its deps layer are its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .azureml.project import Project, project_of
from .built import Built, BuiltSet
from .errors import UsageError
from .events import QUIET, Progress
from .image.assemble import Image, ImageBuilder
from .image.cache import BlobCache
from .image.compress import Compression
from .image.layer import BuiltLayer, Entry, LayerSource, LayerUploader, build_layer, scan_sources
from .image.parallel import build_in_parallel
from .image.imageindex import ImageIndex
from .image.oci import Descriptor, Platform
from .image.platform import normalize
from .inputs.base import load_base
from .inputs.context import check_secrets
from .settings import Settings


if TYPE_CHECKING:
    from .registry.client import RegistryOptions
    from .registry.layercache import RegistryLayerCache

__all__ = ["build_for", "build_image", "build_images", "image_sbom", "open_layer_cache", "uses_recipe", "write_sboms"]


def uses_recipe(settings: Settings) -> bool:
    """Whether the settings build the scoring image: ``recipe`` when said, else a config file or an
    Azure ML inference config, or a score.py in the folder and no extra layers."""
    from .azureml.v1files import INFERENCE_CONFIG_NAMES

    if settings.recipe is not None:
        return settings.recipe
    root = settings.root
    if settings.config_file is not None or settings.inference_config is not None \
            or any((root / n).is_file() for n in INFERENCE_CONFIG_NAMES):
        return True
    return not settings.extra_layers and (root / "score.py").is_file()


def _recipe_image(settings: Settings, project: Project, cache: BlobCache, platform: Platform | None,
                  registry_options: RegistryOptions | None, layer_cache: RegistryLayerCache | None, progress: Progress,
                  uploader: LayerUploader | None = None) -> Built:
    from .azureml.recipe import build_azureml_image

    built = build_azureml_image(project, cache, extra_layers=list(settings.extra_layers), log=progress.log,
                                registry_options=registry_options, on_bytes=progress.layer_bytes,
                                allow_secrets=settings.allow_secrets, layer_cache=layer_cache, debug=settings.debug,
                                platform=platform, lock_mode=settings.lock_mode, uploader=uploader)
    built.settings, built.project, built.layer_cache = settings, project, layer_cache
    return built


def _plain_config(b: ImageBuilder, settings: Settings) -> None:
    """A plain image's config: the base's, with the settings' env, labels, command, ports and workdir."""
    cfg = b.config.with_env(dict(settings.env))
    if settings.labels:
        cfg = replace(cfg, labels={**cfg.labels, **settings.labels})
    if settings.cmd is not None:
        cfg = replace(cfg, cmd=settings.cmd)
    if settings.entrypoint is not None:
        cfg = replace(cfg, entrypoint=settings.entrypoint)
    if settings.ports:
        cfg = replace(cfg, exposed_ports=tuple(sorted(set(cfg.exposed_ports)
                                                      | {p if "/" in p else f"{p}/tcp" for p in settings.ports})))
    if settings.workdir:
        cfg = replace(cfg, working_dir=settings.workdir)
    b.config = cfg


def _plain_image(settings: Settings, cache: BlobCache, platform: Platform | None,
                 registry_options: RegistryOptions | None, layer_cache: RegistryLayerCache | None, progress: Progress, uploader: LayerUploader | None = None) -> Built:
    """``settings.base`` (or nothing) plus the Debian packages and the extra layers."""
    extra = settings.extra_layers
    if not settings.base and not extra and not settings.apt:
        raise UsageError("nothing to build: give --base and/or --layer SRC:DEST, or a score.py (see 'ociassemble build --help')")
    scanned = [scan_sources([src]) for src in extra]  # once: checked here, built below
    check_secrets([e for entries in scanned for e in entries], allow=settings.allow_secrets, warn=progress.log)
    # "scratch" is the empty base, as in a Dockerfile's FROM scratch (never Docker Hub's library/scratch)
    base = (load_base(settings.base, cache, registry_options=registry_options, platform=platform, epoch=settings.epoch)
            if settings.base not in (None, "", "scratch") else None)
    b = ImageBuilder(cache, base, **({"platform": normalize(platform)} if platform is not None else {}))
    compression = Compression.parse(settings.compression, settings.compression_level)
    layers = []
    if settings.apt:
        if base is None:
            raise UsageError("apt packages need a Debian-based --base to take them from (scratch has no release); "
                             "give --base")
        from .azureml.aptlayer import debian_layer

        added = debian_layer(settings, cache, base, str(settings.base), [], compression,  # type: ignore[arg-type]
                             settings.epoch, progress.log)
        if added is not None:
            progress.log("layer debian-packages")
            b.add_layer(added.layer, added.created_by())
            layers.append(("debian-packages", added.layer))
    def one(src: LayerSource, entries: list[Entry]) -> BuiltLayer:
        progress.log(f"layer {src.src} -> {src.dest}")
        return build_layer(cache, [src], compression=compression, epoch=settings.epoch, entries=entries,
                           on_bytes=progress.layer_bytes, remote=layer_cache, uploader=uploader)

    if uploader is not None and b.base is not None:  # the base's layers go up beside the new ones
        uploader.push_early(b.build(settings.epoch), cache)
    for src, layer in zip(extra, build_in_parallel(one, list(zip(extra, scanned)), uploader)):
        b.add_layer(layer, src.created_by())
        layers.append((f"{src.dest}", layer))
    _plain_config(b, settings)
    return Built(b.build(created=settings.epoch), cache, layers, settings=settings, layer_cache=layer_cache)


def build_image(settings: Settings, cache: BlobCache, *, platform: Platform | None = None,
                project: Project | None = None, registry_options: RegistryOptions | None = None,
                layer_cache: RegistryLayerCache | None = None,
                progress: Progress = QUIET, uploader: LayerUploader | None = None) -> Built:
    """Build the image ``settings`` describe into ``cache``, for ``platform`` (default: the base's).

    The recipe when ``uses_recipe(settings)`` (``project``: the recipe's view of the settings, read
    once by the caller; default ``project_of(settings)``), else a plain image (``settings.base`` plus
    ``settings.extra_layers``). ``registry_options`` is for a registry base; ``layer_cache`` a
    ``registry.layercache.RegistryLayerCache``. ``uploader`` (a push that builds:
    ``registry.speculative.SpeculativeUploader``) sends each new layer held by reference to the
    registry as it is hashed (``layer.build_layer``). Raises UsageError when a plain build has
    nothing to build.
    """
    if uses_recipe(settings):
        return _recipe_image(settings, project or project_of(settings), cache, platform, registry_options,
                             layer_cache, progress, uploader)
    return _plain_image(settings, cache, platform, registry_options, layer_cache, progress, uploader)


def build_images(settings: Settings, cache: BlobCache, *, registry_options: RegistryOptions | None = None,
                layer_cache: RegistryLayerCache | None = None,
                 progress: Progress = QUIET, uploader: LayerUploader | None = None) -> BuiltSet:
    """Build ``settings`` for each of its platforms (a recipe build: the project's, which its v1 files
    may name; none: one image for the base's own): ``build_image`` per platform, and an index when
    there are two or more.

    Raises UsageError for a bad ``$SOURCE_DATE_EPOCH`` before anything is read or said.
    """
    settings.epoch  # noqa: B018 (its error, if any, first)
    recipe = uses_recipe(settings)
    project = project_of(settings) if recipe else None
    wanted = project.platforms if project is not None else settings.platforms
    kw: dict[str, Any] = {"project": project, "registry_options": registry_options, "layer_cache": layer_cache,
                          "progress": progress, "uploader": uploader}
    if not wanted:
        return BuiltSet([build_image(settings, cache, **kw)])
    if project is not None and project.base is None:
        from .azureml.debianbase import require_default_bases
        from .azureml.recipe import wanted_python

        # every platform's, before any platform is built
        require_default_bases(cache, wanted, wanted_python(project))
    builds = []
    for p in wanted:
        if len(wanted) > 1:
            progress.log(f"platform {p}")
        builds.append(build_image(settings, cache, platform=p, **kw))
    if len(builds) == 1:
        return BuiltSet(builds)
    return BuiltSet(builds, ImageIndex.of([b.image for b in builds]))


def open_layer_cache(settings: Settings, cache: BlobCache, options: RegistryOptions, *,
                     pushing: bool) -> RegistryLayerCache | None:
    """The registry layer cache the settings ask for (``registry.options.layer_cache_for``), or None (the default: off)."""
    from .registry.options import layer_cache_for

    return layer_cache_for(settings.layer_cache, cache, options, pushing=pushing)


def build_for(settings: Settings, cache: BlobCache, options: RegistryOptions, progress: Progress) -> BuiltSet:
    """The image the settings describe (recipe or plain), for each of its platforms, the registry layer
    cache they name read (a build writes none). ``options``: the registry settings (a registry base,
    the layer cache), made once by the job. A push opens its own (``registry.session``)."""
    return build_images(settings, cache, registry_options=options,
                        layer_cache=open_layer_cache(settings, cache, options, pushing=False), progress=progress)


def image_sbom(image: Image, cache: BlobCache, *, name: str, repository: str | None = None,
               site: Path | None = None, scan: Sequence[Descriptor] | None = None, created: int = 0) -> bytes:
    """The image's SPDX SBOM bytes (``image.sbom``), dated ``created`` (``Settings.epoch``) as the image is.

    ``site`` and ``scan`` are a build's ``deps_site`` and ``scan_layers`` (None: read every layer).
    """
    from .image.sbom import image_packages, sbom_bytes, spdx_document

    packages = image_packages(image, cache, site=site, layers=scan)
    return sbom_bytes(spdx_document(image, packages, name=name, created=created, repository=repository))


def write_sboms(built: BuiltSet, spec: str, progress: Progress, created: int) -> list[str]:
    """Each image's SBOM beside the output ``spec`` (``image.sbom.sbom_path``), dated ``created``; the paths."""
    from .atomicfile import write_atomic
    from .image.sbom import sbom_path
    from .transport.spec import parse_spec

    out = parse_spec(spec, for_output=True)
    dest = out.path
    assert dest is not None
    # the SBOM names the output by its file name only: a folder (the checkout's) is not the image's
    named = f"{out.kind}:{dest.name}"
    progress.log("listing packages for the SBOM")
    sboms = []
    for b in built.builds:
        path = sbom_path(dest, b.image.platform if built.index is not None else None)
        write_atomic(path, image_sbom(b.image, built.cache, name=named, site=b.deps_site, scan=b.scan_layers,
                                      created=created))
        sboms.append(str(path))
        progress.log(f"wrote {path}")
    return sboms
