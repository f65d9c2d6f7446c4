"""``ociassemble run``: run an image without a daemon, its ports published on 127.0.0.1 only."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..errors import UsageError
from ..transport.spec import is_registry
from .options import blob_cache, kv, registry_options
from .output import Out

__all__ = ["cmd_run", "parse_publish"]


def parse_publish(items: Sequence[str]) -> dict[int, int]:
    """``[127.0.0.1:]HOSTPORT:PORT`` flags as {host port: container port} (loopback only)."""
    out: dict[int, int] = {}
    for item in items:
        parts = item.split(":")
        if len(parts) == 3:
            host, parts = parts[0], parts[1:]
            if host not in ("127.0.0.1", "localhost"):
                raise UsageError(f"--publish {item!r}: ports are published on 127.0.0.1 only")
        try:
            host_port, port = (int(parts[0]), int(parts[1])) if len(parts) == 2 else (int(parts[0]), int(parts[0]))
        except (ValueError, IndexError):
            raise UsageError(f"--publish {item!r}: expected [127.0.0.1:]HOSTPORT:PORT, e.g. 8080:5001") from None
        if not (0 < host_port < 65536 and 0 < port < 65536):
            raise UsageError(f"--publish {item!r}: ports are 1 to 65535")
        out[host_port] = port
    return out


def cmd_run(args: argparse.Namespace, out: Out) -> int:
    from ..inputs.base import load_image
    from ..run.container import run_image

    cache = blob_cache(args)
    opts = registry_options(args) if is_registry(args.image) else None
    image = load_image(args.image, cache, registry_options=opts)
    publish = parse_publish(args.publish or [])

    def ready(_: object) -> None:
        urls = ", ".join(f"http://127.0.0.1:{h}/ -> {c}" for h, c in publish.items())
        out.log(f"running {image.digest[:19]}" + (f"; serving {urls}" if urls else "") + "; Ctrl-C stops it")

    return run_image(image, cache, publish=publish, env=kv(args.env, "--env"), on_ready=ready)
