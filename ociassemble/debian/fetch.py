"""Files from a Debian mirror: fetched over HTTP, and kept in the blob cache by their SHA256.

Indexes and ``.deb`` files are stored as blobs named by the SHA256 the signed Release
(or the Packages index it vouches for) gives them, so a file is downloaded once and
a file whose bytes do not hash to that name is never stored (``BlobCache.ingest``:
verified while it streams, renamed into place only once sound).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import requests

from ..errors import ArchiveError, MirrorError, NotOnMirror, PackageError
from ..image.cache import BlobCache
from ..image.digest import Digest

__all__ = ["Fetcher"]

#: connect and read timeouts, in seconds: a mirror is close (a proxy, a CDN), a stall is a fault
_TIMEOUT = (10, 60)
#: attempts per file: a dropped connection is retried once more, never a wrong hash
_TRIES = 3


@dataclass
class Fetcher:
    """One HTTP session over the blob cache; cheap, holds no open file."""

    cache: BlobCache
    session: requests.Session = field(default_factory=requests.Session)

    def text(self, url: str, what: str) -> bytes:
        """A small file fetched every time (an ``InRelease``: the root of trust is never cached).

        Raises PackageError when the mirror has no such file, MirrorError when it cannot be reached.
        """
        resp = self._get(url, what, stream=False)
        return resp.content

    def blob(self, url: str, sha256: str, size: int | None, what: str, *,
             mismatch: str = "") -> Path:
        """The cached file with this SHA256, fetched from ``url`` first if not cached.

        ``mismatch``: the one line for bytes that do not match (default: the signed index's wording).
        Raises PackageError when the bytes fetched do not match (nothing is kept), NotOnMirror
        for a 404, MirrorError when the mirror cannot be reached.
        """
        digest = Digest("sha256:" + sha256)
        if self.cache.stored(digest):
            return self.cache.path(digest)
        for attempt in range(_TRIES):
            resp = self._get(url, what, stream=True)
            try:
                with resp:
                    resp.raw.decode_content = False
                    self.cache.ingest(resp.raw, digest, size, what)  # type: ignore[arg-type]
                return self.cache.path(digest)
            except ArchiveError:
                if mismatch:
                    raise PackageError(mismatch) from None
                raise PackageError(f"{what} from {url} does not match the SHA256 {sha256} its signed index gives: "
                                   "the mirror's copy is corrupt or was changed (nothing was cached); try again "
                                   "later or another mirror (--apt-mirror)") from None
            except (requests.RequestException, OSError) as exc:
                if attempt == _TRIES - 1:
                    raise MirrorError(f"{what}: the download from {url} failed ({type(exc).__name__}); check the "
                                      "network or the mirror") from None
        raise AssertionError("unreachable")

    def _get(self, url: str, what: str, *, stream: bool) -> requests.Response:
        last: Exception | None = None
        for _ in range(_TRIES):
            try:
                resp = self.session.get(url, timeout=_TIMEOUT, stream=stream)
            except requests.RequestException as exc:
                last = exc
                continue
            if resp.status_code == 404:
                resp.close()
                raise NotOnMirror(f"{what}: the mirror has no {url}; check the release name and --apt-mirror")
            if resp.status_code >= 500:
                resp.close()
                last = MirrorError(f"HTTP {resp.status_code}")
                continue
            if resp.status_code != 200:
                resp.close()
                raise MirrorError(f"{what}: {url} answered HTTP {resp.status_code}; check the mirror or proxy")
            return resp
        reason = type(last).__name__ if not isinstance(last, MirrorError) else str(last)
        raise MirrorError(f"{what}: {url} cannot be reached ({reason}); check the network or the apt sources")
