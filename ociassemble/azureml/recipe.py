"""The AzureML scoring image: which layers, in which order, and the config that runs them.

Layers, bottom to top (what changes most is on top, what is biggest is reused most):
base rootfs (as is) · Debian packages (``apt``, and nginx/runit when the base lacks them) · runit + nginx configs · Python deps (pex) · azureml-app ·
one layer per model · the user's source folder with score.py.

``build_azureml_image`` runs it as named steps: check the inputs (``_check_inputs``), scan the
user's layers (``_scan_user_layers``), load the base (``recipebase``), then the layers bottom
to top (``_debian_packages_layer``, ``_runit_nginx_layer``, ``depslayer.deps_layer``, ``_app_layer``, the user's),
then the scoring config (``_scoring_config``). The steps share one ``RecipeContext``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..built import Built
from ..errors import InputError, UsageError
from ..image.assemble import Image, rfc3339, stack
from ..image.cache import BlobCache
from ..image.compress import Compression
from ..image.layer import Entry, LayerSource, LayerUploader, scan_sources
from ..image.parallel import build_in_parallel, start_builds
from ..image.oci import ImageConfig, Platform
from ..inputs.context import check_secrets, ignore_for
from ..resources import layer_symlinks, layers_dir
from .aptlayer import debian_layer
from .baseinfo import BaseInfo
from .deps import DEPS_DIR
from .depslayer import deps_layer
from .indexes import inline_password
from .lockfile import PlatformLock
from .locking import LockMode, debian_unpinned, lock_path, lock_section, usable_lock
from .project import ModelSpec, Project
from .pyenv import PythonInputs, python_inputs, user_env_of, wanted_python
from .recipebase import RecipeBase, load_recipe_base
from .recipecontext import MadeLayer, RecipeContext
from .script import check_entry_script


if TYPE_CHECKING:
    from ..registry.client import RegistryOptions
    from ..registry.layercache import RegistryLayerCache

__all__ = ["build_azureml_image", "APP_ROOT", "DEFAULT_SOURCE_NAME", "source_name", "user_env_of",
           "wanted_python"]

APP_ROOT = "/var/azureml-app"
MODELS_DIR = f"{APP_ROOT}/azureml-models"
#: names in the app root that belong to the server, not to a user source folder
_RESERVED = {"azureml", "aml_server", "azureml-models", "create_app.py", "wsgi.py", "gunicorn_conf.py", "__pycache__"}
#: the source folder's in-image name when the config gives none (``source_name``)
DEFAULT_SOURCE_NAME = "src"
#: one path component, no leading dot (no hidden folder, no "." or "..")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
#: a model's name and version: one path component each
_MODEL_PART = re.compile(r"[A-Za-z0-9_.-]+")


def model_dest(model: ModelSpec) -> str:
    """Where a registered model lands: as in Azure ML, under ``<name>/<version>/`` with its own name.

    A file ``model.pkl`` becomes ``<name>/<version>/model.pkl``; a folder ``outputs/model``
    becomes ``<name>/<version>/model/...`` (its contents are not spread into the version folder),
    so score.py reads ``os.path.join(AZUREML_MODEL_DIR, "model", "model.pkl")`` as in Azure ML.
    """
    return f"{MODELS_DIR}/{model.name}/{model.version}/{model.path.resolve().name}"


def source_name(project: Project) -> str:
    """The source folder's name under the app root: the project's ``source_name``, or ``src``.

    Never derived from the checkout's own folder name: the same project checked out as
    ``myproj`` and as ``job@2`` must give one digest. Raises UsageError for a name that is
    not one safe path component, or that the scoring server's own files already use.
    """
    name = DEFAULT_SOURCE_NAME if project.source_name is None else project.source_name
    if not _SAFE_NAME.fullmatch(name):
        raise UsageError(f"source_name {name!r}: give one folder name of letters, digits, '.', '_' and '-', "
                         f"not starting with '.' (e.g. source_name = \"{DEFAULT_SOURCE_NAME}\" or --source-name "
                         f"{DEFAULT_SOURCE_NAME})")
    if name in _RESERVED:
        raise UsageError(f"source_name {name!r} is taken by the scoring server in {APP_ROOT} "
                         f"({', '.join(sorted(_RESERVED))}); choose another, e.g. {DEFAULT_SOURCE_NAME!r}")
    return name


def build_azureml_image(project: Project, cache: BlobCache, *, extra_layers: list[LayerSource] | None = None,
                        log: Callable[[str], None] = lambda _: None, registry_options: RegistryOptions | None = None,
                        on_bytes: Callable[[int], None] | None = None,
                        layer_cache: RegistryLayerCache | None = None,
                        allow_secrets: bool = False, debug: bool = False,
                        platform: Platform | None = None, lock_mode: LockMode = "use",
                        uploader: LayerUploader | None = None) -> Built:
    """Check the inputs, then assemble the scoring image (nothing is written outside the cache).

    ``on_bytes`` is passed to every ``build_layer`` (progress display). ``layer_cache``
    (a ``registry.layercache.RegistryLayerCache``) is asked for layers, the deps layer
    and the base's info before any is made, and told what this build made.
    Files named like secrets in the source, model or extra layers are refused before
    anything is written, unless ``allow_secrets`` (then ``log`` warns). ``debug`` logs
    pex's whole output when it fails. ``log`` is told each step (default: nothing).
    ``platform``: the image's platform; its base is that platform's (the default base for
    it, or the one image for it in a multi-platform base), and its deps are resolved for
    that base. None: the base's own (this machine's, for a multi-platform base).
    ``lock_mode``: how ``ociassemble.lock`` is used (``locking``): "use" it when it holds (else a
    warning and a fresh resolve), "locked" (a stale or missing lock is an error), "off".
    ``uploader`` (a push that builds: ``registry.speculative``): the user's new layers held by
    reference are sent to the registry as they are hashed, several at once, from the moment
    they are scanned (``image.parallel``): the base, the packages and the deps are made
    meanwhile, and go up beside them.
    Raises InputError/BuildError with one line naming the problem and the fix.
    """
    src_name = _check_inputs(project, log)
    # one requirement set, the server's pins and the user's merged by project name (a conflict stops
    # the build here, before anything is written), and where its packages come from
    inputs = python_inputs(project, log)
    lock = usable_lock(project, inputs, lock_mode, log)
    user_layers = _scan_user_layers(project, cache, inputs, src_name, extra_layers or [], allow_secrets, log)
    ctx = RecipeContext(project=project, cache=cache, compression=Compression.parse(project.compression,
                        project.compression_level), epoch=project.epoch, log=log, on_bytes=on_bytes,
                        layer_cache=layer_cache, debug=debug)
    items = [(u, None) for u in user_layers]
    build_user = lambda u, _: ctx.build(u.kind, u.sources, u.created_by, entries=u.entries,  # noqa: E731
                                        uploader=uploader)
    early = start_builds(build_user, items, uploader) if uploader is not None and items else None
    try:
        section = lock_section(lock, platform, lock_mode, project, log) if lock is not None else None
        base = load_recipe_base(project, cache, platform=platform, inputs=inputs, registry_options=registry_options,
                                layer_cache=layer_cache,
                                locked_digest=section.base_digest if section is not None else None)
        inputs = _for_base_python(inputs, base.info, log)
        made = [*_debian_packages_layer(ctx, base, section, lock_mode), _runit_nginx_layer(ctx)]
        deps = deps_layer(ctx, inputs, base.info, section)
        made += [deps.made, _app_layer(ctx)]
        if uploader is not None:  # the layers so far go up beside the user's new ones
            uploader.push_early(_stacked(ctx, base.image, made), cache)
        made += early.results() if early is not None else build_in_parallel(build_user, items, None)
    except BaseException:
        if early is not None:  # the user's uploads stop: this image will not be pushed
            early.abort()
        raise
    image = _stacked(ctx, base.image, made, _scoring_config(project, src_name, ctx.epoch).applied(base.image.config))
    return Built(image=image, cache=cache, layers=[(m.kind, m.layer) for m in made], deps_site=deps.site,
                 base_layers=tuple(base.image.manifest.layers), pex_ran=deps.pex_ran, locked=section is not None)


def _stacked(ctx: RecipeContext, base: Image, made: list[MadeLayer], config: ImageConfig | None = None) -> Image:
    """``base``, the ``made`` layers in order, dated ``ctx.epoch``: the image (with the scoring
    ``config``), or as far as it is built (the base's config: what a speculative push sends
    while the user's layers go up)."""
    return stack(ctx.cache, base, [(m.layer, m.created_by) for m in made], ctx.epoch, config)


def _check_inputs(project: Project, log: Callable[[str], None]) -> str:
    """The source folder's in-image name, once the entry script, the source folder and the models check out.

    Logs the project's notes. Raises InputError/UsageError naming the input and the fix.
    """
    src_name = source_name(project)
    entry, src = project.entry, project.src
    check_entry_script(entry)
    if not src.is_dir():
        raise InputError(f"source folder {src} does not exist; pass --source-dir")
    try:
        entry.resolve().relative_to(src.resolve())
    except ValueError:
        raise InputError(f"entry script {entry} is not inside the source folder {src}; move it there or pass --source-dir") from None
    for m in project.models:
        if not m.path.exists():
            raise InputError(f"model path {m.path} does not exist; check --model (PATH[:NAME[:VERSION]])")
        if not _MODEL_PART.fullmatch(m.name) or not _MODEL_PART.fullmatch(m.version):
            raise InputError(f"model name/version {m.name!r}/{m.version!r}: use letters, digits, '.', '_' and '-'")
    names = [(m.name, m.version) for m in project.models]
    if len(set(names)) != len(names):
        raise InputError("two models have the same name and version; give each a NAME or VERSION (PATH:NAME:VERSION)")
    for note in project.notes:
        log(note)
    return src_name


@dataclass(frozen=True)
class _UserLayer:
    """One of the user's layers (a model, an extra layer, the source folder), scanned: built as scanned."""

    kind: str
    sources: list[LayerSource]
    created_by: str
    entries: list[Entry]


def _scan_user_layers(project: Project, cache: BlobCache, inputs: PythonInputs, src_name: str,
                      extra_layers: list[LayerSource], allow_secrets: bool,
                      log: Callable[[str], None]) -> list[_UserLayer]:
    """The user's layers, top of the image last, scanned before anything is written: no secrets in a layer.

    Only the first 64 KiB of each file is read (to look for credentials); the same entries are
    built later (tar_chunks re-checks each file's stat stamp as it reads it). Raises
    SecretsInContextError/InputError unless ``allow_secrets`` (then ``log`` warns).
    """
    src = project.src
    outputs = [Path(o.split(":", 1)[1].split(":")[0]) for o in [project.output or ""] if ":" in o]
    # the lock is an input of the build, not of the image: with or without it, the same source layer
    source_ignore = ignore_for(src, also=[m.path for m in project.models] + outputs + [cache.root, lock_path(project)])
    planned: list[tuple[str, list[LayerSource], str]] = [
        (f"model {m.name}:{m.version}", [LayerSource(m.path, model_dest(m))],
         f"ociassemble: model {m.name} version {m.version}") for m in project.models]
    planned += [(f"extra {extra.dest}", [extra], extra.created_by()) for extra in extra_layers]
    planned.append(("source", [LayerSource(src, f"{APP_ROOT}/{src_name}")], f"ociassemble: source {src_name}"))
    layers = [_UserLayer(kind, sources, created_by,
                         scan_sources(sources, source_ignore if kind == "source" else None))
              for kind, sources, created_by in planned]
    check_secrets([e for layer in layers for e in layer.entries], allow=allow_secrets, warn=log)
    _check_env_file_credentials(inputs.env_file, src, source_ignore, allow_secrets, log)
    return layers


def _for_base_python(inputs: PythonInputs, info: BaseInfo, log: Callable[[str], None]) -> PythonInputs:
    """``inputs`` with the server's pins for the base's Python (a --base's; a conflict stops here too)."""
    if info.python == inputs.python:
        return inputs
    inputs = inputs.for_python(info.python)
    for note in inputs.merged.notes:
        log(note)
    return inputs


def _debian_packages_layer(ctx: RecipeContext, base: RecipeBase, section: PlatformLock | None,
                           lock_mode: LockMode) -> list[MadeLayer]:
    """The layer of the project's ``apt`` packages and what serving needs and the base lacks, from the
    base's own release (the lock's files when it pins them); none when there is nothing to add."""
    serving = list(base.serving)
    if not (ctx.project.apt or serving):
        return []
    locked_debs = section.debian if section is not None else None
    if section is not None and not section.debian and not ctx.project.apt:
        # serving packages only, none pinned: a lock made before locks pinned Debian packages (with
        # ``apt`` packages such a lock is stale already: they are among its inputs)
        debian_unpinned(ctx.project, lock_mode, ctx.log)
        locked_debs = None
    added = debian_layer(ctx.project, ctx.cache, base.image, base.spec, serving, ctx.compression, ctx.epoch,
                         ctx.log, locked=locked_debs)
    if added is None:
        return []
    ctx.log("layer debian-packages")
    return [MadeLayer("debian-packages", added.layer, added.created_by())]


def _runit_nginx_layer(ctx: RecipeContext) -> MadeLayer:
    """The shipped runit services and nginx config (and their symlinks), cached as bytes."""
    shipped = layers_dir()
    runit = [LayerSource(shipped / "runit-nginx", "/")]
    links = [Entry(path, "symlink", 0o777, linkname=target) for path, target in layer_symlinks("runit-nginx")]
    # pip compiles the installed package data: bytecode must never reach a layer
    entries = sorted([*scan_sources(runit, ignore_for(shipped, also=())), *links], key=lambda e: e.name.encode())
    return ctx.build("runit-nginx", runit, "ociassemble: runit + nginx configs", entries=entries, by_reference=False)


def _app_layer(ctx: RecipeContext) -> MadeLayer:
    """The shipped azureml-app scoring server, cached as bytes (no bytecode)."""
    shipped = layers_dir()
    return ctx.build("azureml-app", [LayerSource(shipped / "azureml-app", "/")],
                     "ociassemble: azureml-app scoring server", ignore=ignore_for(shipped, also=()),
                     by_reference=False)


@dataclass(frozen=True)
class _ScoringConfig:
    """What the image config says to run the scoring server: its environment and labels."""

    env: dict[str, str]
    labels: dict[str, str]

    def applied(self, config: ImageConfig) -> ImageConfig:
        """``config`` (the base's) running runsvdir over the server, with this environment and these labels."""
        return replace(
            config.with_env(self.env),
            cmd=("runsvdir", "/var/runit"),
            entrypoint=None,
            exposed_ports=("5001/tcp",),
            working_dir=APP_ROOT,
            labels={**config.labels, **self.labels},
            stop_signal="SIGHUP",  # runsvdir: SIGHUP makes it stop every service, then exit
        )


def _scoring_config(project: Project, src_name: str, epoch: int) -> _ScoringConfig:
    """The environment the server reads (entry script, source folder, model folder, deps path) and the
    image's labels, the project's own on top."""
    entry_rel = f"{src_name}/{project.entry.resolve().relative_to(project.src.resolve()).as_posix()}"
    if len(project.models) == 1:
        model_dir = f"{MODELS_DIR}/{project.models[0].name}/{project.models[0].version}"
    else:
        model_dir = MODELS_DIR
    env = {
        "AML_APP_ROOT": APP_ROOT,
        "AZUREML_ENTRY_SCRIPT": entry_rel,
        "AZUREML_SOURCE_DIRECTORY": src_name,
        "AZUREML_MODEL_DIR": model_dir,
        "PYTHONPATH": DEPS_DIR,
        "PYTHONUNBUFFERED": "1",
        "LANG": "C.UTF-8",
    }
    env.update(project.env)
    labels = {"org.opencontainers.image.created": rfc3339(epoch)}
    if project.source_url:
        labels["org.opencontainers.image.source"] = project.source_url
    if project.revision:
        labels["org.opencontainers.image.revision"] = project.revision
    labels.update(project.labels)
    return _ScoringConfig(env, labels)


def _check_env_file_credentials(env_file: Path | None, src: Path, ignored: Callable[[Path], bool],
                                allow: bool, log: Callable[[str], None]) -> None:
    """Refuse an environment file in the source layer that writes an index password in a URL: the
    image would carry it. pip's ``${VAR}``, ``~/.netrc`` or ``PIP_INDEX_URL`` keep it out."""
    if env_file is None:
        return
    try:
        env_file.resolve().relative_to(src.resolve())
    except ValueError:
        return  # not in the source folder: not in the image
    if ignored(env_file) or not inline_password(env_file.read_text(errors="replace")):
        return
    message = (f"{env_file.name} writes a package index password into a URL and is in the source folder, so the "
               "image would carry it: write ${TOKEN} in its place (pip's expansion, read from the environment), or "
               "use ~/.netrc or PIP_INDEX_URL/PIP_EXTRA_INDEX_URL")
    if not allow:
        raise InputError(message + " (or --allow-secrets)")
    log(f"warning: {message}")
