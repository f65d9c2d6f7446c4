"""``ociassemble lock``: write ``ociassemble.lock`` (each platform's base digest, Python files and .debs) for the project."""

from __future__ import annotations

import argparse

from ..transport.spec import is_registry
from .output import Out

__all__ = ["cmd_lock"]


def cmd_lock(args: argparse.Namespace, out: Out) -> int:
    from ..azureml.locking import lock_project, lock_summary
    from ..azureml.project import project_of
    from ..registry.options import options_for
    from ..settings import Settings

    settings = Settings.from_argparse(args, secrets=out.secrets)
    proj = project_of(settings)
    opts = options_for(settings.registry, proj.base, secrets=settings.secrets) if is_registry(proj.base) else None
    res = lock_project(proj, settings.blob_cache(), upgrade=args.upgrade, registry_options=opts, log=out.log,
                       debug=args.debug)
    parts = [f"{key}: base {p.base_digest[:19]}…, {len(p.distributions)} Python distributions"
             + (f", {len(p.debian)} Debian packages" if p.debian else "")
             for key, p in sorted(res.lock.platforms.items())]
    text = f"{'wrote' if res.written else 'unchanged'} {res.path} ({'; '.join(parts)})"
    out.result(lock_summary(res), text)
    return 0
