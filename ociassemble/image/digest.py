"""Content digests (``sha256:<hex>``) and streams that hash what passes through them.

Hashing happens in the same pass as reading or writing: a blob is never read twice
just to learn its digest.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import DigestMismatchError, UsageError

__all__ = ["Digest", "HashingWriter", "VerifyingReader", "sha256_file", "CHUNK"]

#: Read/write granularity: large enough that hashing and syscalls run at disk speed,
#: small enough that memory stays flat (a few of these are alive at once).
CHUNK = 1 << 20

_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")


@dataclass(frozen=True, order=True)
class Digest:
    """A validated ``sha256:<64 hex>`` digest; only sha256 is produced or accepted."""

    value: str

    def __post_init__(self) -> None:
        if not _DIGEST_RE.match(self.value):
            raise UsageError(
                f"invalid digest {self.value!r}: expected 'sha256:' and 64 lowercase hex digits"
            )

    @property
    def hex(self) -> str:
        return self.value.split(":", 1)[1]

    @classmethod
    def of_bytes(cls, data: bytes) -> "Digest":
        return cls("sha256:" + hashlib.sha256(data).hexdigest())

    def __str__(self) -> str:
        return self.value


class HashingWriter:
    """Wraps a writable binary file, hashing and counting every byte written to it.

    With ``hashed=False`` it only counts: for a caller that hashes the same bytes
    itself (an uncompressed layer's digest is its diff_id), so they are hashed once.
    """

    def __init__(self, raw: BinaryIO | None, hashed: bool = True) -> None:
        self._raw = raw
        self._hash = hashlib.sha256() if hashed else None
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        if self._hash is not None:
            self._hash.update(data)
        self.size += len(data)
        if self._raw is not None:
            self._raw.write(data)
        return len(data)

    def flush(self) -> None:
        if self._raw is not None:
            self._raw.flush()

    @property
    def digest(self) -> Digest:
        if self._hash is None:
            raise ValueError("this writer was made with hashed=False: it has no digest")
        return Digest("sha256:" + self._hash.hexdigest())


class VerifyingReader:
    """Reads a stream that must hash to ``expected`` and be ``size`` bytes long.

    The check fires when the stream ends, so a consumer that writes what it reads
    into a temp file can discard it on error: nothing unverified is ever kept.
    """

    def __init__(self, raw: BinaryIO, expected: Digest, size: int | None, where: str = "") -> None:
        self._raw = raw
        self._expected = expected
        self._size = size
        self._where = where
        self._hash = hashlib.sha256()
        self.read_bytes = 0
        self._checked = False

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        if data:
            self._hash.update(data)
            self.read_bytes += len(data)
            if self._size is not None and self.read_bytes > self._size:
                raise DigestMismatchError(
                    str(self._expected), f"more than the declared {self._size} bytes", self._where
                )
        elif n != 0:
            self.verify()
        return data

    def verify(self) -> None:
        """Raise unless everything read so far is exactly the expected blob."""
        if self._checked:
            return
        actual = "sha256:" + self._hash.hexdigest()
        if self._size is not None and self.read_bytes != self._size:
            raise DigestMismatchError(
                str(self._expected), f"{actual} ({self.read_bytes} bytes, not {self._size})", self._where
            )
        if actual != self._expected.value:
            raise DigestMismatchError(str(self._expected), actual, self._where)
        self._checked = True


def sha256_file(path: str, chunk: int = CHUNK) -> tuple[Digest, int]:
    """Digest and size of a file, read once in ``chunk``-sized pieces."""
    h = hashlib.sha256()
    size = 0
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
            size += n
    return Digest("sha256:" + h.hexdigest()), size
