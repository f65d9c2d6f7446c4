"""Image references (``[registry[:port]/]repo[:tag][@sha256:…]``): parsing, docker's defaults, validation.

Knows no HTTP. The grammar is docker's (distribution's ``reference`` package): the
first path component is a registry only if it holds a ``.`` or ``:`` or is
``localhost``; otherwise the registry is ``docker.io``, and a one-component name
there gets the ``library/`` prefix. With neither tag nor digest the tag is ``latest``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ..errors import ImageReferenceError

__all__ = ["DEFAULT_REGISTRY", "DEFAULT_TAG", "Reference", "parse_reference"]

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
#: Where docker.io's API actually lives (docker.io itself only redirects to the website).
DOCKER_HUB_API = "registry-1.docker.io"
_DOCKER_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io")
#: distribution's limit on the whole name (registry + repository).
NAME_MAX = 255

_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_HOST_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"^(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$")

_EXAMPLE = "e.g. registry.example.com/team/app:1.0"


@dataclass(frozen=True)
class Reference:
    """A parsed image reference; ``str()`` gives its fully qualified form.

    Example::

        >>> r = parse_reference("ubuntu")
        >>> (r.registry, r.repository, r.tag)
        ('docker.io', 'library/ubuntu', 'latest')
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``registry/repository``: where blobs of this image live."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/``: the digest if pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def host(self) -> str:
        """The host[:port] to talk to (docker.io's API lives on registry-1.docker.io)."""
        return DOCKER_HUB_API if self.registry == DEFAULT_REGISTRY else self.registry

    @property
    def hostname(self) -> str:
        """The host without port or IPv6 brackets."""
        host = self.registry
        if host.startswith("["):
            return host[1:host.index("]")]
        return host.rsplit(":", 1)[0] if ":" in host else host

    def with_tag(self, tag: str) -> Reference:
        _check_tag(tag, f"{self.name}:{tag}")
        return replace(self, tag=tag, digest=None)

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def _check_tag(tag: str, raw: str) -> None:
    if not _TAG.match(tag):
        raise ImageReferenceError(
            f"invalid tag {tag!r} in image reference {raw!r}: a tag is up to 128 letters, digits, "
            f"'_', '.' and '-', not starting with '.' or '-'"
        )


def _check_digest(digest: str, raw: str) -> None:
    if not _DIGEST.match(digest):
        raise ImageReferenceError(
            f"invalid digest {digest!r} in image reference {raw!r}: write @sha256: and 64 lowercase hex digits"
        )


def _split_registry(name: str) -> tuple[str | None, str]:
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        return first, rest
    return None, name


def parse_reference(raw: str, *, default_registry: str = DEFAULT_REGISTRY) -> Reference:
    """Parse ``[registry[:port]/]repo[:tag][@sha256:…]`` with docker's defaults.

    A reference with neither tag nor digest gets the tag ``latest``; one with only a
    digest keeps ``tag=None``. ``docker://`` in front is accepted and dropped.

    Raises ImageReferenceError with one line naming what is wrong and the fix.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise ImageReferenceError(f"empty image reference: give one, {_EXAMPLE}")
    text = raw.strip()
    text = text.removeprefix("docker://")
    if "://" in text:
        raise ImageReferenceError(
            f"image reference {raw!r} has a URL scheme: drop it, {_EXAMPLE} (plain HTTP is chosen with --insecure-registry)"
        )
    if any(c.isspace() for c in text):
        raise ImageReferenceError(f"image reference {raw!r} contains whitespace")

    digest = None
    if "@" in text:
        text, _, digest = text.partition("@")
        _check_digest(digest, raw)
    registry, remainder = _split_registry(text)
    tag = None
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > last_slash:
        remainder, tag = remainder[:colon], remainder[colon + 1:]
        _check_tag(tag, raw)
    if registry is not None and not _DOMAIN.match(registry):
        raise ImageReferenceError(
            f"invalid registry {registry!r} in image reference {raw!r}: write host[:port], {_EXAMPLE}"
        )
    if registry in _DOCKER_HUB_ALIASES or registry is None and default_registry in _DOCKER_HUB_ALIASES:
        registry = DEFAULT_REGISTRY
    elif registry is None:
        registry = default_registry
    if not remainder:
        raise ImageReferenceError(f"image reference {raw!r} names no repository, {_EXAMPLE}")
    for component in remainder.split("/"):
        if not _COMPONENT.match(component):
            hint = (
                "repository names are lowercase"
                if component.lower() != component and _COMPONENT.match(component.lower())
                else "each path component is lowercase letters and digits, separated by '.', '_', '__' or '-'"
            )
            raise ImageReferenceError(f"invalid repository name {remainder!r} in image reference {raw!r}: {hint}")
    if registry == DEFAULT_REGISTRY and "/" not in remainder:
        remainder = f"library/{remainder}"
    if len(registry) + 1 + len(remainder) > NAME_MAX:
        raise ImageReferenceError(
            f"image reference {raw!r} is too long: registry and repository together are at most {NAME_MAX} characters"
        )
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(registry, remainder, tag, digest)
