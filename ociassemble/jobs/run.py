"""The ``run`` job: run an image without a daemon, its ports published on 127.0.0.1 only."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..events import QUIET, Progress
from ..image.assemble import Image
from ..image.imageindex import Target
from ..image.oci import Platform
from ..settings import Settings

if TYPE_CHECKING:
    from ..run.container import RunningImage

__all__ = ["RunResult", "pick_image", "run"]


@dataclass
class RunResult:
    """How a run ended: the image's digest and its command's exit status."""

    digest: str
    status: int

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "status": self.status}


def pick_image(target: Target, want: Platform | None, where: str) -> Image:
    """The image to run: an index was resolved by ``load_image``; a single image must be for ``want``."""
    from ..image.platform import matches, normalize

    assert isinstance(target, Image), "load_image resolves an index to one platform"
    if want is not None and not matches(target.platform, want):
        have = normalize(target.platform)
        raise InputError(f"{where} has no image for {want}; it has {have} (run it with --platform {have}, "
                         "or without --platform)")
    return target


def run(settings: Settings, image: str, *, platform: Platform | None = None,
        publish: Mapping[int, int] | None = None, env: Mapping[str, str] | None = None,
        on_ready: Callable[[RunningImage, Image], None] | None = None, progress: Progress = QUIET) -> RunResult:
    """Run ``image`` (any transport, or a registry reference; its image for ``platform``, default this
    machine's) in the foreground until its command ends, Ctrl-C or SIGTERM; ``publish`` is
    {host port: container port} on 127.0.0.1. ``on_ready`` is told once every published port answers."""
    from ..imageio import load_image
    from ..run.container import run_image
    from ..transport.spec import is_registry

    cache = settings.blob_cache()
    opts = settings.registry_options(image) if is_registry(image) else None
    picked = pick_image(load_image(image, cache, registry_options=opts, platform=platform), platform, image)
    status = run_image(picked, cache, publish=publish, env=env,
                       on_ready=(lambda running: on_ready(running, picked)) if on_ready else None, log=progress.log)
    return RunResult(picked.digest, status)
