"""``ociassemble login``: store registry credentials in the docker config, the password from stdin only."""

from __future__ import annotations

import argparse

from ..errors import UsageError
from .output import Out

__all__ = ["cmd_login"]


def cmd_login(args: argparse.Namespace, out: Out) -> int:
    from ..registry.login import login
    from ..registry.options import options_for
    from ..registry.reference import parse_reference
    from ..settings import Settings

    target = args.registry
    registry = parse_reference(target).registry if "/" in target or "@" in target else target
    settings = Settings.from_argparse(args, secrets=out.secrets)
    opts = options_for(settings.registry, secrets=settings.secrets).scoped_to([registry])
    if not opts.username or opts.password is None:
        raise UsageError("login needs --username and --password-stdin (e.g. echo \"$TOKEN\" | ociassemble login REG -u USER --password-stdin)")
    login(args.registry, opts.username, opts.password, options=opts)
    out.result({"registry": args.registry, "username": opts.username}, f"Login Succeeded for {args.registry}")
    return 0
