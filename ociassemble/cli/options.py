"""From parsed flags to the library's objects: the blob cache, registry settings, the project, the build.

Each function reads an ``argparse.Namespace`` and calls the library function that takes
plain keyword values (``registry.settings.registry_options``,
``registry.layercache.layer_cache_from``, ``azureml.project.project_with``,
``build.build_image``), so a program gets what a command gets without flags.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from typing import TYPE_CHECKING

from ..errors import UsageError
from ..transport.spec import is_registry, parse_spec
from .output import Out

if TYPE_CHECKING:  # the library is imported by the command that needs it: `--help` and completion stay quick
    from ..azureml.project import Project
    from ..build import BuiltSet
    from ..image.cache import BlobCache
    from ..registry.client import RegistryOptions
    from ..registry.layercache import RegistryLayerCache

__all__ = ["assemble", "blob_cache", "kv", "layer_cache", "project", "registry_options"]


def kv(items: Sequence[str] | None, flag: str) -> dict[str, str]:
    """``KEY=VALUE`` flags as a dict (a later key wins)."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def blob_cache(args: argparse.Namespace) -> BlobCache:
    from ..image.cache import BlobCache, default_cache_dir

    return BlobCache(Path(args.cache_dir) if args.cache_dir else default_cache_dir())


def registry_options(args: argparse.Namespace, proj: Project | None = None) -> RegistryOptions:
    """The registry settings of the flags and environment; stdin is read once per run.

    Explicit credentials (``-u``/``--password-stdin``, ``$OCIASSEMBLE_USERNAME``/``PASSWORD``)
    are bound to the registry of the command's target (``credential_targets``); every other
    registry gets its own from the docker config. Every credential the run sends is
    collected in ``args.secrets`` (the ``Out``'s), which the output is cleaned of.
    """
    if getattr(args, "_registry_options", None) is not None:
        return args._registry_options
    from ..registry.reference import parse_reference
    from ..registry.settings import registry_options as _options

    password = sys.stdin.readline().rstrip("\r\n") if getattr(args, "password_stdin", False) else None
    opts = _options(username=getattr(args, "username", None), password=password, ca_cert=getattr(args, "ca_cert", None),
                    insecure_registries=getattr(args, "insecure_registry", None) or (),
                    secrets=getattr(args, "secrets", None))
    targets = credential_targets(args, proj)
    if args.command == "login":
        registries = [parse_reference(t).registry if "/" in t or "@" in t else t for t in targets]
    else:
        registries = [parse_reference(parse_spec(t).tag or "").registry for t in targets]
    opts = opts.scoped_to(registries)
    args._registry_options = opts
    return opts


def credential_targets(args: argparse.Namespace, proj: Project | None = None) -> list[str]:
    """What the command's explicit credentials are for: its target's image reference(s).

    push: the destinations; pull, inspect, run: the image; verify: ``--against``; login:
    the registry; build (which pushes nothing): the ``--base`` (its project's base), else
    the layer cache repository it reads.
    """
    cmd = args.command
    if cmd == "login":
        return [args.registry]
    if cmd == "push":
        found = list(args.refs or [])
    elif cmd == "pull":
        found = [args.ref]
    elif cmd in ("inspect", "run"):
        found = [args.image]
    elif cmd == "verify":
        found = [args.against]
    elif cmd == "build":
        base = proj.base if proj is not None else args.base
        found = [base] if is_registry(base) else [getattr(args, "cache_repo", None) or getattr(args, "cache_from", None)]
    else:
        found = []
    return [t for t in found if t and is_registry(t)]


def layer_cache(args: argparse.Namespace, cache: BlobCache) -> RegistryLayerCache | None:
    """The registry layer cache the flags ask for, or None (the default: off).

    ``--cache-repo REF`` (or ``$OCIASSEMBLE_CACHE_REPO``) reads and, on ``push``, writes;
    ``--cache-from REF`` only reads; ``--cache-to REF`` only writes (``push`` only: a build
    pushes nothing); ``--no-cache-repo`` turns all of it off.
    """
    from ..registry.layercache import layer_cache_from

    return layer_cache_from(cache, repo=getattr(args, "cache_repo", None), read_from=getattr(args, "cache_from", None),
                            write_to=getattr(args, "cache_to", None), pushing=args.command == "push",
                            off=getattr(args, "no_cache_repo", False), options=lambda: registry_options(args))


def project(args: argparse.Namespace) -> Project:
    """The project of the build flags: the folder's config with the flags over it."""
    from ..azureml.project import project_with

    return project_with(Path(args.path), config=Path(args.config) if args.config else None,
                        entry_script=args.entry_script, source_dir=args.source_dir, source_name=args.source_name,
                        models=args.model or (), requirements=args.requirements, conda_file=args.conda_file,
                        install_serving_stack=bool(getattr(args, "install_serving_stack", None)), base=args.base,
                        output=args.output, compression=args.compression,
                        compression_level=getattr(args, "compression_level", None),
                        env=kv(args.env, "--env"), labels=kv(args.label, "--label"),
                        source_url=args.source_url, revision=args.revision,
                        platform=getattr(args, "platform", None), python=getattr(args, "python", None),
                        inference_config=getattr(args, "inference_config", None),
                        deploy_config=getattr(args, "deploy_config", None),
                        environment=getattr(args, "environment", None),
                        apt=getattr(args, "apt_package", None) or (),
                        apt_mirror=getattr(args, "apt_mirror", None), apt_keyring=getattr(args, "apt_keyring", None))


def assemble(args: argparse.Namespace, out: Out, proj: Project | None = None, uploader: Any = None) -> BuiltSet:
    """Build the image the flags describe (recipe or plain), for each platform they name:
    ``build``, ``push`` and ``verify`` share it. ``proj``: the flags' project, if the
    command already read it (``project``). ``uploader``: ``push``'s speculative uploads
    (``registry.speculative``)."""
    from ..build import build_images
    from ..image.layer import LayerSource
    from ..inputs.context import secrets_allowed

    cache = blob_cache(args)
    proj = proj or project(args)
    extra = [LayerSource.parse(s) for s in args.layer or []]
    opts = registry_options(args, proj) if is_registry(proj.base) else None
    lc = layer_cache(args, cache)
    recipe = False if args.plain else (True if (args.entry_script or args.model or args.requirements
                                                 or args.conda_file or getattr(args, "inference_config", None))
                                       else None)
    return build_images(proj, cache, recipe=recipe, extra_layers=extra, cmd=args.cmd, entrypoint=args.entrypoint,
                       ports=args.port or (), workdir=args.workdir, registry_options=opts, layer_cache=lc,
                       allow_secrets=secrets_allowed(args.allow_secrets), log=out.log,
                       on_bytes=out.reporter.layer_bytes, debug=args.debug,
                       lock_mode="locked" if getattr(args, "locked", False) else "use", uploader=uploader)
