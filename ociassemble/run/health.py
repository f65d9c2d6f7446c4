"""When a scoring image is ready: its health probe, ``GET /``, answers ``Healthy`` through the published port.

nginx listens on 5001 as soon as it starts, but gunicorn only serves once its
worker has imported score.py and run init(): until then nginx answers 502
(19 s for the arm64 example under qemu). So for an image that keeps the Azure
ML contract (its Env sets ``AML_APP_ROOT``) with the scoring port published,
"the port accepts connections" is not "ready": the probe Azure ML itself uses
is. Any other image is ready when its ports accept connections.

How long it may take is the image's own: gunicorn kills a worker that stays
silent for ``WORKER_TIMEOUT`` seconds, booting included, so an init() is
allowed that long (``ready_timeout``; the run scales it for emulation).
"""

from __future__ import annotations

import http.client
import socket
from typing import Mapping

__all__ = ["SCORING_PORTS", "HEALTHY", "health_port", "probe", "ready_timeout"]

#: The contract's ports, in the order probed: nginx, then gunicorn itself.
SCORING_PORTS = (5001, 9090)
#: What ``GET /`` answers once the scoring server serves.
HEALTHY = "Healthy"
#: An Env variable only scoring images set (the app root of the contract).
_SCORING_IMAGE_MARKER = "AML_APP_ROOT"
_PROBE_TIMEOUT = 2.0


def health_port(env: Mapping[str, str], publish: Mapping[int, int]) -> int | None:
    """The host port to probe: the one publishing 5001 (else 9090) of a scoring image; None for any other run.

    ``env`` is the run's environment (the image's Env with ``--env`` on top).
    """
    if _SCORING_IMAGE_MARKER not in env:
        return None
    for container_port in SCORING_PORTS:
        hosts = sorted(host for host, port in publish.items() if port == container_port)
        if hosts:
            return hosts[0]
    return None


def probe(host_port: int) -> str:
    """``""`` when ``GET http://127.0.0.1:PORT/`` answers 200 ``Healthy``; else what it answered, in a few words."""
    connection = http.client.HTTPConnection("127.0.0.1", host_port, timeout=_PROBE_TIMEOUT)
    try:
        connection.request("GET", "/")
        answer = connection.getresponse()
        body = answer.read(64)
    except (OSError, http.client.HTTPException) as exc:
        return "no answer" if isinstance(exc, (socket.timeout, ConnectionError)) else f"no answer ({exc})"
    finally:
        connection.close()
    if answer.status == 200 and body.strip() == HEALTHY.encode():
        return ""
    return f"it answers {answer.status}"


def ready_timeout(env: Mapping[str, str], default: float) -> float:
    """Seconds a scoring image may take to answer Healthy: its ``WORKER_TIMEOUT``, or ``default`` if longer."""
    raw = env.get("WORKER_TIMEOUT", "").strip()
    if raw.isdigit() and int(raw) > 0:
        return max(default, float(raw))
    return default
