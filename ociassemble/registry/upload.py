"""A blob upload's requests: cross-repository mount, open, where it stands, append a chunk, commit, cancel.

These are the distribution API's upload endpoints, one request each (``push`` decides
between a mount, one monolithic PUT and POST + PATCH chunks + PUT). Every Location the
registry answers is resolved against the URL that answered, and the newest one is always
the one to use next. ``resume_or_start`` is the one step both uploaders (``push``'s and
``speculative``'s) take at the start of an attempt: after a dropped connection, continue
from where the registry says the upload stands, else open a new one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urljoin

import requests

from ..errors import RegistryError
from ..image.digest import CHUNK
from .client import RegistryClient

__all__ = [
    "BlobSlice",
    "OpenUpload",
    "cancel_upload",
    "finish_upload",
    "mount_blob",
    "patch_upload",
    "resume_or_start",
    "start_upload",
    "upload_offset",
]

log = logging.getLogger("ociassemble.registry")


@dataclass
class BlobSlice:
    """``length`` bytes of a blob from ``offset``, as a re-iterable request body.

    Each iteration opens the file afresh (or asks ``reader`` for a stream positioned at
    ``offset``: a blob that is not one file, such as one held by reference, which the
    caller keeps open across slices and does not get closed here) and yields
    CHUNK-sized pieces, so a resent request streams again with flat memory;
    ``on_bytes`` counts bytes handed to the socket.
    """

    path: Path | None
    offset: int
    length: int
    on_bytes: Callable[[int], None] | None = None
    reader: Callable[[int], BinaryIO] | None = None

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[bytes]:
        if self.reader is not None:
            yield from self._pieces(self.reader(self.offset))
            return
        assert self.path is not None
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            yield from self._pieces(f)

    def _pieces(self, f: BinaryIO) -> Iterator[bytes]:
        left = self.length
        while left > 0:
            data = f.read(min(CHUNK, left))
            if not data:
                raise RegistryError(f"{self.path or 'a blob'} shrank while being uploaded: the cache was changed under us")
            left -= len(data)
            if self.on_bytes:
                self.on_bytes(len(data))
            yield data


def mount_blob(client: RegistryClient, repo: str, digest: str, from_repo: str, scopes: tuple[str, ...]) -> str | None:
    """Cross-repository mount: None if mounted, else the Location of the upload it opened."""
    resp = client.request("POST", f"/v2/{repo}/blobs/uploads/", params={"mount": digest, "from": from_repo},
                          scopes=scopes, ok=(201, 202), what=f"mounting blob {digest} from {from_repo}",
                          digest=digest, repo=repo)
    resp.close()
    if resp.status_code == 201:
        return None
    return _location(client, resp, f"mounting blob {digest}", digest)


def start_upload(client: RegistryClient, repo: str, digest: str, scopes: tuple[str, ...]) -> str:
    """Open an upload (POST); returns its Location."""
    resp = client.request("POST", f"/v2/{repo}/blobs/uploads/", scopes=scopes, ok=(202,),
                          what=f"starting the upload of blob {digest}", digest=digest, repo=repo)
    resp.close()
    return _location(client, resp, f"starting the upload of blob {digest}", digest)


def upload_offset(client: RegistryClient, location: str, digest: str, scopes: tuple[str, ...]) -> tuple[int, str] | None:
    """Where an open upload stands: (bytes received, newest Location), or None if gone/unknown."""
    resp = client.request("GET", location, scopes=scopes, ok=(204, 200, 404, 400, 416),
                          what=f"asking the upload state of blob {digest}", digest=digest)
    resp.close()
    if resp.status_code not in (200, 204):
        return None
    m = re.match(r"^(?:bytes=)?0-(\d+)$", (resp.headers.get("Range") or "").strip())
    if not m:
        return None
    end = int(m.group(1))
    if end == 0:
        # "0-0" means both "empty" and "1 byte" (registry-notes): unknowable, so start over
        return None
    newest = urljoin(resp.url, resp.headers["Location"]) if resp.headers.get("Location") else location
    return end + 1, newest


def patch_upload(client: RegistryClient, location: str, body: BlobSlice, digest: str, scopes: tuple[str, ...]) -> str:
    """Append ``body`` to the upload; returns the newest Location (always use it next)."""
    end = body.offset + body.length - 1
    resp = client.request("PATCH", location, scopes=scopes, ok=(202, 204), data=body,
                          headers={"Content-Type": "application/octet-stream",
                                   "Content-Range": f"{body.offset}-{end}"},
                          what=f"uploading blob {digest} (bytes {body.offset}-{end})", digest=digest)
    resp.close()
    return _location(client, resp, f"uploading blob {digest}", digest)


def finish_upload(client: RegistryClient, location: str, digest: str, body: BlobSlice | None, scopes: tuple[str, ...]) -> None:
    """The closing PUT ?digest= (with the whole blob when ``body`` is given: monolithic)."""
    headers = {"Content-Type": "application/octet-stream"}
    resp = client.request("PUT", location, params={"digest": digest}, scopes=scopes, ok=(201, 204),
                          data=body if body is not None else b"", headers=headers,
                          what=f"committing blob {digest}", digest=digest)
    resp.close()


def cancel_upload(client: RegistryClient, location: str, scopes: tuple[str, ...]) -> None:
    """Best effort: tell the registry to drop an upload we abandon."""
    try:
        client.request("DELETE", location, scopes=scopes, ok=(204, 200, 202, 404, 400), what="cancelling an upload").close()
    except RegistryError:
        pass


def _location(client: RegistryClient, resp: requests.Response, what: str, digest: str) -> str:
    loc = resp.headers.get("Location")
    if not loc:
        raise RegistryError(f"{what} at {client.registry}: HTTP {resp.status_code} without a Location header",
                            status=resp.status_code, digest=digest)
    # relative Locations are resolved against the URL that answered (registry-notes)
    return urljoin(resp.url, loc)


@dataclass
class OpenUpload:
    """One blob's upload across attempts: its newest Location (None: none open) and the bytes sent."""

    location: str | None = None
    offset: int = 0


def resume_or_start(client: RegistryClient, repo: str, upload: OpenUpload, digest: str, scopes: tuple[str, ...], *,
                    retrying: bool, resendable: int, what: str) -> None:
    """Make ``upload`` open at the offset to send from.

    On a retry (``retrying``) of an open upload, the registry is asked where it stands
    (``upload_offset``): the upload resumes there when that is within the ``resendable``
    bytes the caller can send again; else (the registry cannot say, as distribution after a
    reset mid-PATCH, or it claims more) a new upload is opened and sent from byte 0. Without
    an open upload, a new one. ``digest`` names the blob in the registry's errors, ``what``
    in the log.
    """
    if retrying and upload.location is not None:
        where = upload_offset(client, upload.location, digest, scopes)
        if where is None or where[0] > resendable:
            log.warning("upload of %s cannot be resumed; starting it again", what)
            upload.location = None
        else:
            upload.offset, upload.location = where
            log.info("resuming the upload of %s at byte %d", what, upload.offset)
    if upload.location is None:
        upload.location, upload.offset = start_upload(client, repo, digest, scopes), 0
