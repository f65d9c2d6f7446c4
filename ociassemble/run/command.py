"""What an image's config asks to run: argv, environment, working directory and hostname.

Only what ``ociassemble run`` supports is accepted: a command must be set, and it runs
as the image's root (root of the run's user namespace, an unprivileged host id); an
image whose ``User`` is another user is refused with a RunError, not ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..errors import RunError
from ..image.assemble import Image
from ..image.digest import Digest

__all__ = ["Command", "image_command", "DEFAULT_PATH"]

#: PATH when the image's Env has none (Docker's default).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: ``User`` values that mean the image's root, the only user ``run`` starts the command as yet.
_ROOT_USERS = (None, "", "0", "root", "0:0", "root:root")


@dataclass(frozen=True)
class Command:
    """The image's process as the sandbox starts it."""

    argv: list[str]
    env: dict[str, str]
    workdir: str
    #: The image digest's first 12 hex digits, as Docker names a container.
    hostname: str


def image_command(image: Image, env: Mapping[str, str] | None = None) -> Command:
    """The command ``image`` runs, its Env overridden or extended by ``env``.

    Example::

        command = image_command(image, {"WORKERS": "2"})

    Raises RunError when the image has no Entrypoint or Cmd, or asks for a user other than root.
    """
    cfg = image.config
    argv = list(cfg.entrypoint or ()) + list(cfg.cmd or ())
    if not argv:
        raise RunError(f"image {image.digest} has no Entrypoint or Cmd: build it with a command to run")
    if cfg.user not in _ROOT_USERS:
        raise RunError(f"image {image.digest} asks for User {cfg.user!r}; ociassemble run only runs as root yet")
    hostname = Digest(image.digest).hex[:12]
    environment = cfg.env_dict()
    environment.update(env or {})
    environment.setdefault("PATH", DEFAULT_PATH)
    environment.setdefault("HOME", "/root")
    environment.setdefault("HOSTNAME", hostname)
    return Command(argv=argv, env=environment, workdir=cfg.working_dir or "/", hostname=hostname)
