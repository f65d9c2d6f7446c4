"""What a build was made from, by digest: the inputs an SLSA provenance statement lists.

For each platform built: the base (its manifest digest, as ``load_base`` resolves it);
then, once: the lock file beside the config (``ociassemble.lock``) when there is one, the
requirements or conda file, each model file's sha256, and the layers made of the user's
files by their diff_id (the source tree, the Python dependencies, any ``--layer``): the
digest of exactly the tree the image holds, after the ignore rules.

Paths are named relative to the project folder, never as absolute paths: the statement
says the same on every machine. A model file's sha256 comes from the layer's
by-reference record when the build held the file by reference and it has not changed
since (nothing is read again), else the file is hashed.

Example::

    built = build_images(settings, settings.blob_cache())
    for m in build_materials(built):
        print(m.name, m.digest)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .built import Built, BuiltSet
from .image.digest import sha256_file
from .image.platform import normalize
from .sign.provenance import Material

if TYPE_CHECKING:
    from .registry.client import RegistryOptions

__all__ = ["LOCK_FILE", "build_materials", "build_parameters"]

#: The lock file ``ociassemble lock`` writes beside the config (issue 26); recorded when present.
LOCK_FILE = "ociassemble.lock"
#: Layers made of the user's files, recorded by diff_id (the recipe's kinds; a plain build's layers are ``extra``).
_TREE_LAYERS = {"source": "source tree", "python-deps": "python dependencies"}


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.name


def _files(path: Path) -> Iterator[Path]:
    if path.is_dir():
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            for name in sorted(filenames):
                p = Path(dirpath) / name
                if p.is_file() and not p.is_symlink():
                    yield p
    elif path.is_file():
        yield path


def _sha(path: Path) -> str:
    return sha256_file(str(path))[0].hex


def _known_hashes(built: BuiltSet) -> dict[str, str]:
    """path → sha256 hex of the files the build held by reference and that are unchanged since."""
    known: dict[str, str] = {}
    for b in built.builds:
        for _kind, layer in b.layers:
            record = built.cache.ref(layer.descriptor.digest)
            if record is not None and record.fresh():
                # unknown: hashed when asked; a run of an archive's bytes is no file's own hash
                known.update({p.path: p.sha256 for p in record.files if p.sha256 and p.whole})
    return known


def _base_material(b: Built, registry_options: RegistryOptions | None) -> Material | None:
    from .azureml.debianbase import default_base_path
    from .inputs.base import load_base

    project = b.inputs
    recipe = any(kind == "azureml-app" for kind, _ in b.layers)
    if project.base in ("", "scratch") or (project.base is None and not recipe):
        return None
    platform = normalize(b.image.platform)
    spec = project.base or f"oci:{default_base_path(b.cache, platform)}"
    base = load_base(spec, b.cache, registry_options=registry_options, platform=platform, epoch=project.epoch)
    uri = project.base if project.base else "ociassemble make-base (the default base)"
    return Material(f"base {platform}", {"sha256": base.digest.split(":", 1)[1]}, uri)


def build_materials(built: BuiltSet, registry_options: RegistryOptions | None = None) -> list[Material]:
    """Every input of ``built`` by digest (see the module docstring)."""
    project = built.project
    root = project.config_file.parent if project.config_file else project.root
    out: list[Material] = []
    for b in built.builds:
        base = _base_material(b, registry_options)
        if base is not None:
            out.append(base)
    lock = root / LOCK_FILE
    if lock.is_file():
        out.append(Material("lock file", {"sha256": _sha(lock)}, LOCK_FILE))
    for name, path in (("requirements", project.requirements), ("conda file", project.conda_file)):
        if path is not None and path.is_file():
            out.append(Material(name, {"sha256": _sha(path)}, _relative(path, root)))
    known = _known_hashes(built) if project.models else {}
    for m in project.models:
        for f in _files(m.path):
            sha = known.get(str(f)) or known.get(str(f.resolve())) or _sha(f)
            out.append(Material(f"model {m.name}:{m.version}", {"sha256": sha}, _relative(f, root)))
    seen: set[str] = set()
    for b in built.builds:
        for kind, layer in b.layers:
            label = _TREE_LAYERS.get(kind) or (f"layer {kind}" if kind.startswith("/") else None)
            if label is None or layer.diff_id in seen:
                continue
            seen.add(layer.diff_id)
            platform = f" {normalize(b.image.platform)}" if kind == "python-deps" and len(built.builds) > 1 else ""
            out.append(Material(label + platform, {"sha256": layer.diff_id.split(":", 1)[1]},
                                annotations={"digestOf": "the layer's uncompressed tar (diff_id)"}))
    return out


def build_parameters(built: BuiltSet, refs: list[str]) -> dict[str, Any]:
    """The user's choices that shape the image (SLSA's externalParameters): no paths, no secrets."""
    project = built.project
    params: dict[str, Any] = {"refs": list(refs), "platforms": [str(normalize(b.image.platform)) for b in built.builds]}
    if project.models:
        params["models"] = [f"{m.name}:{m.version}" for m in project.models]
    for key in ("entry_script", "source_name", "compression", "compression_level", "install_serving_stack"):
        value = getattr(project, key, None)
        if isinstance(value, Path):
            value = _relative(value, project.root)
        if value not in (None, "", False):
            params[key] = value
    if project.env:
        params["env"] = dict(project.env)
    if project.labels:
        params["labels"] = dict(project.labels)
    return params
