"""``tarcheck.scan_headers``: the walk of an image archive's headers before tarfile reads it
follows the archive as tarfile does (a PAX ``size=`` record, header-only entries), so it
refuses only what is there: a huge PAX or long-name header, or too many entries."""

from __future__ import annotations

import io
import tarfile

import pytest

from ociassemble.image.tarcheck import MAX_META_BYTES, UnsafeEntry
from ociassemble.image.tarread import scan_headers


def _pax(records: dict[str, str]) -> bytes:
    body = b""
    for key, value in records.items():
        rec = f" {key}={value}\n".encode()
        n = len(rec) + len(str(len(rec)))
        n = len(rec) + len(str(n))
        body += str(n).encode() + rec
    info = tarfile.TarInfo("././@PaxHeader")
    info.type, info.size = tarfile.XHDTYPE, len(body)
    return info.tobuf(tarfile.USTAR_FORMAT) + body + b"\0" * ((-len(body)) % 512)


def _member(name: str, data: bytes = b"", size: int | None = None, kind: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, len(data) if size is None else size
    return info.tobuf(tarfile.USTAR_FORMAT) + data + b"\0" * ((-len(data)) % 512)


def _trap() -> bytes:
    """Data that reads as a header of a 2 MiB long-name: refused if taken for a header."""
    info = tarfile.TarInfo("././@LongLink")
    info.type, info.size = tarfile.GNUTYPE_LONGNAME, 2 * MAX_META_BYTES
    return info.tobuf(tarfile.USTAR_FORMAT)


def test_a_pax_size_record_is_followed_as_tarfile_follows_it() -> None:
    # the member's own size field says 0; the PAX record gives its real size (as for files over
    # 8 GiB), and its data holds what would parse as a huge header
    data = _pax({"size": "512"}) + _member("big.bin", size=0)[:512] + _trap() + _member("next", b"x") + b"\0" * 1024
    scan_headers(io.BytesIO(data), 10)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        assert [(m.name, m.size) for m in tf.getmembers()] == [("big.bin", 512), ("next", 1)]


def test_the_data_of_a_regular_member_is_skipped_and_a_symlinks_is_not() -> None:
    data = _member("a", _trap()) + _member("l", size=0, kind=tarfile.SYMTYPE) + b"\0" * 1024
    f = io.BytesIO(data)
    scan_headers(f, 10)
    assert f.tell() == 0  # left where it was, for tarfile


@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK])
def test_a_meta_header_over_the_limit_is_refused(kind: bytes) -> None:
    info = tarfile.TarInfo("././@x")
    info.type, info.size = kind, MAX_META_BYTES + 1
    with pytest.raises(UnsafeEntry, match=f"a {MAX_META_BYTES + 1}-byte PAX or long-name header"):
        scan_headers(io.BytesIO(info.tobuf(tarfile.USTAR_FORMAT)), 10)


def test_entries_past_the_limit_are_refused_and_up_to_it_kept() -> None:
    data = b"".join(_member(f"m{i}") for i in range(5)) + b"\0" * 1024
    scan_headers(io.BytesIO(data), 5)
    with pytest.raises(UnsafeEntry, match="more than 4 entries"):
        scan_headers(io.BytesIO(data), 4)
