"""What the library tells its caller while it works: steps, bytes done, a registry's wait. It never prints.

A job (``ociassemble.jobs``) takes one ``Progress``; the command line's shows bars and
step lines (``cli.progress``), a program may pass its own or ``QUIET``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .image.oci import Descriptor

__all__ = ["QUIET", "Progress", "Quiet"]


class Progress(Protocol):
    """Told of the work as it happens; each method must be cheap and must not raise.
    ``layer_bytes`` and ``blob_bytes`` are called from worker threads."""

    def log(self, message: str) -> None:
        """One step done or begun ("layer source", "wrote oci:./image"), for people."""

    def layer_bytes(self, n: int) -> None:
        """``n`` more bytes of a layer were read while building it."""

    def blob_bytes(self, desc: Descriptor, n: int) -> None:
        """``n`` more bytes of the blob ``desc`` were sent to a registry."""


class Quiet:
    """A ``Progress`` that is told everything and shows nothing."""

    def log(self, message: str) -> None:
        pass

    def layer_bytes(self, n: int) -> None:
        pass

    def blob_bytes(self, desc: Descriptor, n: int) -> None:
        pass


QUIET: Progress = Quiet()
