"""The scoring image's base: loaded (by its locked digest when a lock names one), read and checked.

``build`` and ``lock`` take the base the same way, so a lock names the base a build uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import BuildError
from ..image.assemble import Image
from ..image.cache import BlobCache
from ..image.oci import Platform
from ..inputs.base import load_base
from ..transport.spec import is_registry
from .aptlayer import SERVING_PACKAGES
from .baseinfo import BaseInfo, inspect_base
from .debianbase import default_base_path, require_default_bases
from .project import Project
from .pyenv import PythonInputs
from .pythonpin import check_base_python

if TYPE_CHECKING:
    from ..registry.client import RegistryOptions
    from ..registry.layercache import RegistryLayerCache

__all__ = ["RecipeBase", "load_recipe_base", "pinned_spec"]


@dataclass(frozen=True)
class RecipeBase:
    image: Image
    spec: str  # as the project names it (the default base: its oci: folder)
    info: BaseInfo
    #: the Debian packages serving needs that the base lacks (nginx-light, runit), added from
    #: the base's own release by the recipe's Debian packages layer (``aptlayer``)
    serving: tuple[str, ...] = ()


def pinned_spec(spec: str, digest: str) -> str:
    """A registry base ``spec`` pinned to the manifest ``digest`` (its tag dropped); other specs as they are."""
    if not is_registry(spec):
        return spec
    from ..registry.reference import parse_reference

    ref = parse_reference(spec.removeprefix("docker://"))
    return f"docker://{ref.name}@{digest}"


def load_recipe_base(project: Project, cache: BlobCache, *, platform: Platform | None, inputs: PythonInputs,
                     registry_options: RegistryOptions | None = None,
                     layer_cache: RegistryLayerCache | None = None,
                     locked_digest: str | None = None) -> RecipeBase:
    """The base for ``platform`` with what the recipe needs of it, checked.

    ``locked_digest``: the lock's digest for this platform's base: a registry base is pulled
    by it (whatever its tag names now); any other base must be it. The default base is the
    one for ``inputs.python`` (the Python the project pins).

    Raises BuildError/InputError in one line: a base without python3 (nginx and runsvdir, when
    missing, are named in ``serving``: the recipe adds them), one made for another architecture, a Python pin (conda file, ``python``) the base's Python does
    not meet, a base that is not the locked one.
    """
    if project.base == "scratch":
        raise BuildError("base 'scratch' is empty: the scoring image needs python3, nginx and runit's runsvdir; "
                         "use a base that has them (e.g. 'ociassemble make-base'), or --plain for an image of --layer only")
    if project.base is None:
        require_default_bases(cache, [platform], inputs.python)
    base_spec = project.base or f"oci:{default_base_path(cache, platform, inputs.python)}"
    load_spec = pinned_spec(base_spec, locked_digest) if locked_digest else base_spec
    base = load_base(load_spec, cache, registry_options=registry_options, platform=platform,
                     epoch=project.epoch)  # a rootfs directory's mtimes
    if locked_digest and base.digest != locked_digest:
        raise BuildError(f"base {base_spec} is {base.digest}, but ociassemble.lock pins {locked_digest}: bring back "
                         "that base (e.g. the cache that held it), or run 'ociassemble lock --upgrade' to lock this one")
    info = inspect_base(base, cache, layer_cache)
    if info.dpkg_architecture and info.dpkg_architecture != base.platform.architecture:
        raise BuildError(f"base {base_spec} is labelled {base.platform} but its packages are for "
                         f"{info.dpkg_architecture}: give --platform linux/{info.dpkg_architecture} with this base, "
                         f"or a base made for {base.platform} (ociassemble make-base --platform {base.platform})")
    missing = info.missing()
    if "python3" in missing:
        raise BuildError(f"base {base_spec} has no python3 (in /usr/bin or /usr/local/bin): the scoring image runs "
                         "the model with the base's Python; use a Python base (e.g. python:3.12-slim-bookworm, or "
                         "'ociassemble make-base')")
    check_base_python([p for p in inputs.pins if p is not None], info.python, base_spec)
    serving = tuple(SERVING_PACKAGES[m] for m in missing if m in SERVING_PACKAGES)
    return RecipeBase(base, base_spec, info, serving)
