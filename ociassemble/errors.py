"""The exception hierarchy: every failure a user can cause or meet, caught once in the CLI.

Each error's message is one line that names the thing and the fix; the CLI prints
it as ``ociassemble: error: <message>`` and exits with the class's ``exit_code``.
Anything that is not an ``OciAssembleError`` is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "OciAssembleError",
    "UsageError",
    "InputError",
    "SecretsInContextError",
    "SourceChangedError",
    "WrongPasswordError",
    "UnsupportedKeyError",
    "DiskFullError",
    "BuildError",
    "ImageReferenceError",
    "ArchiveError",
    "DigestMismatchError",
    "NotAnImageError",
    "RegistryError",
    "AuthError",
    "TransientRegistryError",
    "KeylessError",
    "RunError",
    "StillStarting",
    "PackageError",
    "NotOnMirror",
    "MirrorError",
    "SignatureError",
    "SignaturePushError",
    "EXIT_OK",
    "EXIT_USER",
    "EXIT_REGISTRY",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
]

#: Exit codes, documented in the README: 0 ok, 1 the user's input or environment,
#: 2 a registry or the network, 3 an internal bug, 130 interrupted (as shells do).
EXIT_OK = 0
EXIT_USER = 1
EXIT_REGISTRY = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


class OciAssembleError(Exception):
    """Root of every error ociassemble reports to a user as one line."""

    exit_code = EXIT_USER


class UsageError(OciAssembleError, ValueError):
    """A flag, spec or config value is malformed."""


class InputError(OciAssembleError):
    """A file the user gave is missing, unreadable or not allowed in an image."""


class SecretsInContextError(InputError):
    """Files named like secrets would go into a layer and ``--allow-secrets`` was not given."""


class SourceChangedError(InputError):
    """A file an image's layer is made of changed or went away after the build."""


class WrongPasswordError(InputError):
    """A sealed key did not open: the password is not the one the key was sealed with."""


class UnsupportedKeyError(InputError):
    """A key of a type or curve ociassemble does not sign or verify with."""


class DiskFullError(OciAssembleError):
    """No space left where ociassemble writes."""


class BuildError(OciAssembleError):
    """The image cannot be assembled from what was given."""


class ImageReferenceError(OciAssembleError, ValueError):
    """An image reference (``registry/repo:tag@digest``) is malformed."""


class ArchiveError(OciAssembleError):
    """An image archive, layout or layer tarball is corrupt, unsafe or not what it claims."""


class NotAnImageError(ArchiveError):
    """A manifest is an OCI artifact (an SBOM, a signature, a cache entry), not a runnable image.

    Carries the manifest so ``inspect`` can still describe it; anything that needs an
    image shows the message.
    """

    def __init__(self, manifest: Any, manifest_bytes: bytes, name: str) -> None:
        super().__init__(f"{name} is an OCI artifact ({manifest.kind}), not a container image: "
                         "'ociassemble inspect' shows it; give an image here")
        self.manifest = manifest
        self.manifest_bytes = manifest_bytes
        self.name = name


class DigestMismatchError(ArchiveError):
    """A blob's content does not hash to the digest that names it."""

    def __init__(self, expected: str, actual: str, where: str = "") -> None:
        self.expected = expected
        self.actual = actual
        place = f" in {where}" if where else ""
        super().__init__(
            f"blob {expected}{place} has digest {actual}: the content is corrupt or was "
            "changed; re-create the source image"
        )


class RegistryError(OciAssembleError):
    """A registry refused or failed a request; carries its status and OCI error codes."""

    exit_code = EXIT_REGISTRY

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        codes: tuple[str, ...] = (),
        digest: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.codes = codes
        self.digest = digest


class AuthError(RegistryError):
    """Credentials are missing or were refused."""


class TransientRegistryError(RegistryError):
    """A failure worth retrying (connection lost, timeout, 5xx, 408, 429); ``retry_after``
    is the wait the registry asked for, in seconds, if it said."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class KeylessError(RegistryError):
    """Sigstore (Fulcio, Rekor, its TUF root) could not be reached or refused the request."""


class SignatureError(OciAssembleError):
    """An image's signature or provenance is missing or does not verify (``verify --key``)."""


class SignaturePushError(RegistryError):
    """The image was pushed, but storing its signature or provenance failed: the message says both."""


class RunError(OciAssembleError):
    """An image cannot be started by ``ociassemble run``."""


class StillStarting(RunError):
    """Every port answers but the scoring server's health probe has not said Healthy in time; the image runs on.

    ``run_image`` says so and keeps waiting; a caller of ``RunningImage.wait_until_ready`` decides.
    """


class PackageError(BuildError):
    """A Debian package cannot be resolved, fetched or trusted: an unknown name, a
    dependency no package satisfies, a file whose hash or signature is wrong."""


class NotOnMirror(PackageError):
    """The mirror answered 404: the file is not (or no longer) there; a locked build says what to do."""


class MirrorError(OciAssembleError):
    """A Debian mirror could not be reached or answered with an error (the network's fault)."""

    exit_code = EXIT_REGISTRY
