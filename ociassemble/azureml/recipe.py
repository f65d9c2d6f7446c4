"""The AzureML scoring image: which layers, in which order, and the config that runs them.

Layers, bottom to top (what changes most is on top, what is biggest is reused most):
base rootfs (as is) · Debian packages (``apt``, and nginx/runit when the base lacks them) · runit + nginx configs · Python deps (pex) · azureml-app ·
one layer per model · the user's source folder with score.py.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from ..errors import InputError, UsageError
from ..image.assemble import Image, ImageBuilder, rfc3339
from ..image.cache import BlobCache
from ..image.compress import Compression
from ..image.layer import (LAYER_FORMAT, BuiltLayer, Entry, LayerSource, build_in_parallel, build_layer, scan_sources,
                           source_date_epoch)
from ..image.oci import Platform, canonical_json
from ..inputs.context import check_secrets, ignore_for
from ..resources import layer_symlinks, layers_dir
from .aptlayer import debian_layer
from .deps import DEPS_DIR, deps_cached, deps_key, resolve_deps
from .indexes import inline_password
from .locking import LockMode, debian_unpinned, lock_path, lock_section, usable_lock
from .project import ModelSpec, Project
from .pyenv import python_inputs, user_env_of, wanted_python
from .recipebase import load_recipe_base
from .script import check_entry_script

__all__ = ["build_azureml_image", "APP_ROOT", "DEFAULT_SOURCE_NAME", "RecipeResult", "source_name", "user_env_of",
           "wanted_python"]

APP_ROOT = "/var/azureml-app"
MODELS_DIR = f"{APP_ROOT}/azureml-models"
#: names in the app root that belong to the server, not to a user source folder
_RESERVED = {"azureml", "aml_server", "azureml-models", "create_app.py", "wsgi.py", "gunicorn_conf.py", "__pycache__"}
#: the source folder's in-image name when the config gives none (``source_name``)
DEFAULT_SOURCE_NAME = "src"
#: one path component, no leading dot (no hidden folder, no "." or "..")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass
class RecipeResult:
    image: Image
    layers: list[tuple[str, BuiltLayer]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: the flat site-packages pex installed (the deps layer's content), for the SBOM
    #: (None when the deps layer came from the registry cache)
    deps_site: Path | None = None
    #: whether this build ran pex (False: its deps were cached locally or in the registry)
    pex_ran: bool = False
    #: whether ociassemble.lock gave the base's digest and the Python files
    locked: bool = False


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
                        log: Callable[[str], None] = print, registry_options: object = None,
                        on_bytes: Callable[[int], None] | None = None, layer_cache: Any = None,
                        allow_secrets: bool = False, debug: bool = False,
                        platform: Platform | None = None, lock_mode: LockMode = "use",
                        uploader: Any = None) -> RecipeResult:
    """Check the inputs, then assemble the scoring image (nothing is written outside the cache).

    ``on_bytes`` is passed to every ``build_layer`` (progress display). ``layer_cache``
    (a ``registry.layercache.RegistryLayerCache``) is asked for layers, the deps layer
    and the base's info before any is made, and told what this build made.
    Files named like secrets in the source, model or extra layers are refused before
    anything is written, unless ``allow_secrets`` (then ``log`` warns). ``debug`` logs
    pex's whole output when it fails.
    ``platform``: the image's platform; its base is that platform's (the default base for
    it, or the one image for it in a multi-platform base), and its deps are resolved for
    that base. None: the base's own (this machine's, for a multi-platform base).
    ``lock_mode``: how ``ociassemble.lock`` is used (``locking``): "use" it when it holds (else a
    warning and a fresh resolve), "locked" (a stale or missing lock is an error), "off".
    ``uploader`` (``layer.LayerUploader``, a push that builds): the user's new layers held by
    reference are sent to the registry as they are hashed, several at once.
    Raises InputError/BuildError with one line naming the problem and the fix.
    """
    src_name = source_name(project)
    entry = project.entry
    check_entry_script(entry)
    src = project.src
    if not src.is_dir():
        raise InputError(f"source folder {src} does not exist; pass --source-dir")
    try:
        entry.resolve().relative_to(src.resolve())
    except ValueError:
        raise InputError(f"entry script {entry} is not inside the source folder {src}; move it there or pass --source-dir") from None
    for m in project.models:
        if not m.path.exists():
            raise InputError(f"model path {m.path} does not exist; check --model (PATH[:NAME[:VERSION]])")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", m.name) or not re.fullmatch(r"[A-Za-z0-9_.-]+", m.version):
            raise InputError(f"model name/version {m.name!r}/{m.version!r}: use letters, digits, '.', '_' and '-'")
    names = [(m.name, m.version) for m in project.models]
    if len(set(names)) != len(names):
        raise InputError("two models have the same name and version; give each a NAME or VERSION (PATH:NAME:VERSION)")
    for note in project.notes:
        log(note)
    # one requirement set, the server's pins and the user's merged by project name (a conflict stops
    # the build here, before anything is written), and where its packages come from
    inputs = python_inputs(project, log)
    lock = usable_lock(project, inputs, lock_mode, log)

    # the user's files, scanned before anything is written (only the first 64 KiB of each read, to look
    # for credentials): no secrets in a layer
    outputs = [Path(o.split(":", 1)[1].split(":")[0]) for o in [project.output or ""] if ":" in o]
    # the lock is an input of the build, not of the image: with or without it, the same source layer
    source_ignore = ignore_for(src, also=[m.path for m in project.models] + outputs + [cache.root, lock_path(project)])
    # (kind, sources, history line) of the user's layers; scanned once, here, and the same
    # entries built below (tar_chunks re-checks each file's stat stamp as it reads it)
    user_layers: list[tuple[str, list[LayerSource], str]] = []
    for m in project.models:
        user_layers.append((f"model {m.name}:{m.version}", [LayerSource(m.path, model_dest(m))],
                            f"ociassemble: model {m.name} version {m.version}"))
    for extra in extra_layers or []:
        user_layers.append((f"extra {extra.dest}", [extra], extra.created_by()))
    user_layers.append(("source", [LayerSource(src, f"{APP_ROOT}/{src_name}")], f"ociassemble: source {src_name}"))
    user_entries = [scan_sources(sources, source_ignore if kind == "source" else None)
                    for kind, sources, _ in user_layers]
    check_secrets([e for entries in user_entries for e in entries], allow=allow_secrets, warn=log)
    _check_env_file_credentials(inputs.env_file, src, source_ignore, allow_secrets, log)

    compression = Compression.parse(project.compression, project.compression_level)
    section = lock_section(lock, platform, lock_mode, project, log) if lock is not None else None
    recipe_base = load_recipe_base(project, cache, platform=platform, inputs=inputs,
                                   registry_options=registry_options, layer_cache=layer_cache,
                                   locked_digest=section.base_digest if section is not None else None)
    base, info, base_spec = recipe_base.image, recipe_base.info, recipe_base.spec
    # what serving needs and the base lacks comes from the base's own release, with the user's packages
    serving = list(recipe_base.serving)
    result_locked = section is not None
    if info.python != inputs.python:  # a --base's Python: the server's pins for it (a conflict stops here too)
        inputs = inputs.for_python(info.python)
        for note in inputs.merged.notes:
            log(note)

    epoch = source_date_epoch()
    result = RecipeResult(image=base, locked=result_locked)  # replaced below
    b = ImageBuilder(cache, base)

    def add(kind: str, sources: list[LayerSource], created_by: str, **kw: object) -> None:
        log(f"layer {kind}")
        layer = build_layer(cache, sources, compression=compression, epoch=epoch, on_bytes=on_bytes,  # type: ignore[arg-type]
                            remote=layer_cache, **kw)
        b.add_layer(layer, created_by)
        result.layers.append((kind, layer))

    shipped = layers_dir()
    # pip compiles the installed package data: bytecode must never reach a layer
    no_bytecode = ignore_for(shipped, also=())
    runit = [LayerSource(shipped / "runit-nginx", "/")]
    links = [Entry(path, "symlink", 0o777, linkname=target) for path, target in layer_symlinks("runit-nginx")]
    runit_entries = sorted([*scan_sources(runit, no_bytecode), *links], key=lambda e: e.name.encode())
    # our own and generated trees are cached as bytes; the user's (model, source, extra
    # layers) are held by reference when uncompressed (layer.build_layer)
    if project.apt or serving:
        locked_debs = section.debian if section is not None else None
        if section is not None and not section.debian and not project.apt:
            # serving packages only, none pinned: a lock made before locks pinned Debian packages (with
            # ``apt`` packages such a lock is stale already: they are among its inputs)
            debian_unpinned(project, lock_mode, log)
            locked_debs = None
        added = debian_layer(project, cache, base, base_spec, serving, compression, epoch, log, locked=locked_debs)
        if added is not None:
            log("layer debian-packages")
            b.add_layer(added.layer, added.created_by())
            result.layers.append(("debian-packages", added.layer))
    add("runit-nginx", runit, "ociassemble: runit + nginx configs", entries=runit_entries, by_reference=False)

    fd, merged_name = tempfile.mkstemp(dir=cache.tmp_dir, prefix="requirements-", suffix=".txt")
    os.close(fd)
    req_files = [Path(merged_name)]
    site: Path | None = None
    cached_deps: BuiltLayer | None = None
    try:
        req_files[0].write_text(inputs.merged.text())
        key_src = deps_key(req_files, info, indexes=inputs.indexes, locked=section)
        if layer_cache is not None and not deps_cached(cache, key_src):
            cached_deps = layer_cache.find_deps(key_src, compression, epoch)
        if cached_deps is None:
            result.pex_ran = not deps_cached(cache, key_src)
            site = resolve_deps(cache, req_files, info, log=log, debug=debug, source=inputs.source,
                                indexes=inputs.indexes, locked=section)
    finally:
        req_files[0].unlink(missing_ok=True)
    result.deps_site = site
    if cached_deps is not None:
        log("layer python-deps")
        log("python deps from the registry cache: pex not run")
        b.add_layer(cached_deps, "ociassemble: python dependencies (pex)")
        result.layers.append(("python-deps", cached_deps))
    else:
        assert site is not None
        # The deps folder never changes once made, so its layer is indexed by what made it
        # (plus the folder's own token: a folder resolved again gets a new one), not by its
        # files' stat stamps: a cache copied or restored (new inodes and ctimes, as CI cache
        # actions give) then reuses the layer instead of re-tarring ~6000 files.
        deps_index = _deps_layer_key(site, key_src, compression, epoch)
        record = cache.get_layer(deps_index) if deps_index else None
        if record is not None:
            log("layer python-deps")
            b.add_layer(BuiltLayer.from_record(record), "ociassemble: python dependencies (pex)")
            result.layers.append(("python-deps", BuiltLayer.from_record(record)))
        else:
            add("python-deps", [LayerSource(site, DEPS_DIR)], "ociassemble: python dependencies (pex)",
                by_reference=False)
            if deps_index:
                cache.put_layer(deps_index, result.layers[-1][1].to_record())
        if layer_cache is not None:
            layer_cache.note_deps(key_src, compression, epoch, result.layers[-1][1])
    add("azureml-app", [LayerSource(shipped / "azureml-app", "/")], "ociassemble: azureml-app scoring server",
        ignore=no_bytecode, by_reference=False)

    def user_layer(layer: tuple[str, list[LayerSource], str], entries: list[Entry]) -> BuiltLayer:
        log(f"layer {layer[0]}")
        return build_layer(cache, layer[1], compression=compression, epoch=epoch, on_bytes=on_bytes,
                           remote=layer_cache, entries=entries, uploader=uploader)

    if uploader is not None:  # the layers so far go up beside the user's new ones
        uploader.push_early(b.build(epoch), cache)
    for (kind, _, created_by), built in zip(user_layers, build_in_parallel(user_layer, list(zip(user_layers, user_entries)),
                                                                          uploader)):
        b.add_layer(built, created_by)
        result.layers.append((kind, built))

    entry_rel = f"{src_name}/{entry.resolve().relative_to(src.resolve()).as_posix()}"
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
    b.config = replace(
        b.config.with_env(env),
        cmd=("runsvdir", "/var/runit"),
        entrypoint=None,
        exposed_ports=("5001/tcp",),
        working_dir=APP_ROOT,
        labels={**b.config.labels, **labels},
        stop_signal="SIGHUP",  # runsvdir: SIGHUP makes it stop every service, then exit
    )
    result.image = b.build(created=epoch)
    return result


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


def _deps_layer_key(site: Path, key_src: dict[str, object], compression: Compression, epoch: int) -> str:
    """The layer index key of the deps layer made from ``site`` ('' when the folder has no token)."""
    marker = site.parent / ".complete"
    try:
        token = marker.read_text().strip()
        if token == "ok":  # a folder made before tokens: give it one (it never changes again)
            token = os.urandom(16).hex()
            tmp = marker.with_name(f".complete.tmp-{os.getpid()}")
            tmp.write_text(token)
            os.replace(tmp, marker)
    except OSError:
        return ""
    return hashlib.sha256(canonical_json({"format": LAYER_FORMAT, "deps": key_src, "token": token, "dest": DEPS_DIR,
                                          "epoch": epoch, "compression": [compression.codec, compression.level]})
                          ).hexdigest()
