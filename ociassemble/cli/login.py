"""``ociassemble login``: store registry credentials in the docker config, the password from stdin only:
``jobs.login``."""

from __future__ import annotations

import argparse

from .output import Out

__all__ = ["cmd_login"]


def cmd_login(args: argparse.Namespace, out: Out) -> int:
    from ..jobs import login
    from ..settings import Settings

    done = login(Settings.from_argparse(args, secrets=out.secrets), args.registry)
    out.result(done.to_json(), f"Login Succeeded for {done.registry}")
    return 0
