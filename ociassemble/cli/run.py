"""``ociassemble run``: run an image without a daemon, its ports published on 127.0.0.1 only (``jobs.run``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import UsageError
from .output import Out

if TYPE_CHECKING:
    from ..image.assemble import Image
    from ..image.oci import Platform
    from ..run.container import RunningImage

__all__ = ["cmd_run", "parse_publish", "run_platform"]


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


def cmd_run(args: argparse.Namespace, out: Out) -> int:
    from ..jobs import run
    from ..settings import Settings, plain_values

    want = run_platform(args.platform)
    publish = parse_publish(args.publish or [])
    env = plain_values(args.env, "--env")

    def ready(running: RunningImage, image: Image) -> None:
        urls = ", ".join(f"http://127.0.0.1:{h}/ -> {c}" for h, c in publish.items())
        how = f"{running.platform}" + (", emulated by qemu" if running.emulated else "")
        healthy = " (GET / answers Healthy)" if running.health_port is not None else ""
        out.log(f"running {image.digest[:19]} ({how})" + (f"; serving {urls}{healthy}" if urls else _unpublished(image))
                + "; Ctrl-C stops it")

    result = run(Settings.from_argparse(args, secrets=out.secrets), args.image, platform=want, publish=publish,
                 env=env, on_ready=ready, progress=out)
    return result.status


def _unpublished(image: Image) -> str:
    """What the ready line says of an image run without --publish: its ports reach nothing (the
    image has its own network namespace), and the flag that would publish the first."""
    ports = sorted(image.config.exposed_ports)
    if not ports:
        return ""
    its = f"its port {ports[0]} reaches" if len(ports) == 1 else f"its ports {', '.join(ports)} reach"
    return f"; {its} nothing here: add --publish 8080:{ports[0].split('/')[0]}"
