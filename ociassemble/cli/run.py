"""``ociassemble run``: run an image without a daemon, its ports published on 127.0.0.1 only."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import InputError, UsageError
from ..transport.spec import is_registry
from .options import blob_cache, kv, registry_options
from .output import Out

if TYPE_CHECKING:
    from ..image.assemble import Image
    from ..image.imageindex import Target
    from ..image.oci import Platform

__all__ = ["cmd_run", "parse_publish", "pick_image", "run_platform"]


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


def run_platform(text: str | None) -> Platform | None:
    """``run --platform``: one platform (None: this machine's); ``all`` is refused, a run is of one image."""
    from ..image.platform import ALL, parse_platform

    if text is None:
        return None
    if text.strip().lower() == ALL:
        raise UsageError("run --platform all: a run is of one image; give one platform, e.g. --platform linux/arm64")
    return parse_platform(text)


def pick_image(target: Target, want: Platform | None, where: str) -> Image:
    """The image to run: an index was resolved by ``load_image``; a single image must be for ``want``."""
    from ..image.assemble import Image
    from ..image.platform import matches, normalize

    assert isinstance(target, Image), "load_image resolves an index to one platform"
    if want is not None and not matches(target.platform, want):
        have = normalize(target.platform)
        raise InputError(f"{where} has no image for {want}; it has {have} (run it with --platform {have}, "
                         "or without --platform)")
    return target


def cmd_run(args: argparse.Namespace, out: Out) -> int:
    from ..imageio import load_image
    from ..run.container import RunningImage, run_image

    want = run_platform(args.platform)
    cache = blob_cache(args)
    opts = registry_options(args) if is_registry(args.image) else None
    image = pick_image(load_image(args.image, cache, registry_options=opts, platform=want), want, args.image)
    publish = parse_publish(args.publish or [])

    def ready(running: RunningImage) -> None:
        urls = ", ".join(f"http://127.0.0.1:{h}/ -> {c}" for h, c in publish.items())
        how = f"{running.platform}" + (", emulated by qemu" if running.emulated else "")
        healthy = " (GET / answers Healthy)" if running.health_port is not None else ""
        out.log(f"running {image.digest[:19]} ({how})" + (f"; serving {urls}{healthy}" if urls else "")
                + "; Ctrl-C stops it")

    return run_image(image, cache, publish=publish, env=kv(args.env, "--env"), on_ready=ready, log=out.log)
