"""Hostile bases given to ``ociassemble build``: rootfs tarballs, OCI layouts, oci- and
docker-archives, each made here and aimed at a canary outside the work folder.

Every refusal must be one line (``ociassemble: error: …`` naming the input and the
entry or blob, exit 1, no traceback), write no output and leave nothing in the cache,
and the canary must be unchanged.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import stat
import tarfile
from pathlib import Path

import pytest

from ociassemble.image.cache import BlobCache
from ociassemble.image.layer import LayerSource, build_layer
from ociassemble.image.oci import canonical_json
from tests.conftest import run_cli
from tests.hostarch import HOST

CANARY = b"canary: must never change or leave this machine\n"


# -- the work folder, the canary, and the checks every refusal passes ------------------

@pytest.fixture
def work(tmp_path: Path) -> Path:
    """``tmp_path/work`` is where the build runs; ``tmp_path/canary`` is outside it."""
    (tmp_path / "work").mkdir()
    (tmp_path / "canary").write_bytes(CANARY)
    return tmp_path / "work"


def build(work: Path, base: str) -> "subprocess.CompletedProcess[str]":  # type: ignore[name-defined]  # noqa: F821
    return run_cli("build", "--plain", "--base", base, "-o", f"oci:{work / 'out'}",
                   "--cache-dir", str(work / "cache"), cwd=work)


def cache_entries(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())


def assert_refused(work: Path, base: str, *patterns: str) -> str:
    proc = build(work, base)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    line = lines[-1]
    assert line.startswith("ociassemble: error: "), proc.stderr
    for p in patterns:
        assert re.search(p, line), line
    assert not (work / "out").exists()
    assert not [p.name for p in work.iterdir() if p.name.startswith(".out")]
    assert cache_entries(work / "cache") == [], cache_entries(work / "cache")
    assert (work.parent / "canary").read_bytes() == CANARY
    return line


# -- tarballs ------------------------------------------------------------------------------

def _info(name: str, kind: bytes = tarfile.REGTYPE, *, size: int = 0, linkname: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.size, ti.linkname, ti.mode = kind, size, linkname, mode
    return ti


def f(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return _info(name, size=len(data)), data


def d(name: str) -> tuple[tarfile.TarInfo, bytes]:
    return _info(name, tarfile.DIRTYPE, mode=0o755), b""


def sym(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    return _info(name, tarfile.SYMTYPE, linkname=target, mode=0o777), b""


def hard(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    return _info(name, tarfile.LNKTYPE, linkname=target), b""


def _pax(entry: tuple[tarfile.TarInfo, bytes], **headers: str) -> tuple[tarfile.TarInfo, bytes]:
    entry[0].pax_headers = headers
    return entry


def tar_bytes(entries: list[tuple[tarfile.TarInfo, bytes]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for ti, data in entries:
            tf.addfile(ti, io.BytesIO(data) if ti.isreg() else None)
    return buf.getvalue()


ROOT = [d("etc"), f("etc/hostname", b"base\n"), d("usr"), d("usr/lib"), d("usr/bin")]


def _canary_abs(work: Path) -> str:
    return str(work.parent / "canary")


# (id, entries given the work folder, words the error must hold)
HOSTILE_TARBALLS = [
    ("dotdot", lambda w: [f("../canary", b"pwned")], [r"'\.\./canary'", "path traversal"]),
    ("usr-lib-dotdot", lambda w: [f("usr/lib/../../../canary", b"pwned")], ["path traversal"]),
    ("dot-slash-dotdot", lambda w: [f("./../canary", b"pwned")], ["path traversal"]),
    ("dotdot-overwrite", lambda w: [f("etc/../../../../" + _canary_abs(w).lstrip("/"), b"pwned")], ["path traversal"]),
    ("absolute", lambda w: [f(_canary_abs(w), b"pwned")], ["an absolute name"]),
    ("absolute-etc", lambda w: [f("/etc/passwd", b"root::0:0::/:/bin/sh\n")], [r"'/etc/passwd'", "an absolute name"]),
    ("through-absolute-symlink", lambda w: [sym("etc/x", str(w.parent)), f("etc/x/canary", b"pwned")],
     [r"'etc/x/canary'", r"through the symlink 'etc/x'"]),
    ("through-relative-symlink", lambda w: [sym("up", "usr/lib"), f("up/evil.so", b"pwned")],
     [r"through the symlink 'up'"]),
    ("through-dot-symlink", lambda w: [sym("etc/self", "."), f("etc/self/hostname", b"pwned")],
     [r"through the symlink 'etc/self'"]),
    ("dir-over-symlink", lambda w: [sym("lib", "/tmp"), d("lib")], ["a directory over the symlink 'lib'"]),
    ("symlink-leaves-root", lambda w: [sym("usr/lib/up", "../../../canary")], ["leads outside the root"]),
    ("hardlink-outside", lambda w: [hard("etc/shadow-copy", "../canary")], ["hard link", "path traversal"]),
    ("hardlink-absolute", lambda w: [hard("etc/pw", "/etc/passwd")], ["hard link", "an absolute name"]),
    ("hardlink-later", lambda w: [hard("etc/early", "etc/late"), f("etc/late", b"x")],
     ["hard link to 'etc/late', which is not an earlier file"]),
    ("hardlink-missing", lambda w: [hard("etc/ghost", "etc/nothing")], ["not an earlier file"]),
    ("hardlink-to-dir", lambda w: [hard("etc/d", "usr")], ["not an earlier file"]),
    ("hardlink-through-symlink", lambda w: [sym("s", str(w.parent)), hard("h", "s/canary")],
     ["hard link to 's/canary'"]),
    ("long-component", lambda w: [f("usr/lib/" + "a" * 256, b"x")], ["256 bytes", "at most 255"]),
    ("nul-in-pax-name", lambda w: [_pax(f("etc/a", b"x"), path="etc/a\0/../../canary")], ["NUL byte"]),
    ("pax-path-dotdot", lambda w: [_pax(f("etc/fine", b"x"), path="../canary")], [r"'\.\./canary'", "path traversal"]),
    ("gnu-longname-dotdot", lambda w: [f("etc/" + "d/" * 60 + "../" * 70 + "canary", b"x")], ["path traversal"]),
]


@pytest.mark.parametrize("case", HOSTILE_TARBALLS, ids=[c[0] for c in HOSTILE_TARBALLS])
def test_hostile_rootfs_tarball_is_refused(work: Path, case) -> None:  # type: ignore[no-untyped-def]
    _, make, words = case
    tarball = work / "rootfs.tar"
    fmt = tarfile.GNU_FORMAT if case[0].startswith("gnu-") else tarfile.PAX_FORMAT
    tarball.write_bytes(tar_bytes(ROOT + make(work), fmt))
    line = assert_refused(work, f"rootfs:{tarball}", "base tarball .*rootfs.tar: entry ", *words)
    assert line.endswith("re-create the rootfs tarball without it"), line


@pytest.mark.parametrize("compress", ["gzip", "zstd"])
def test_compressed_hostile_tarball_is_refused(work: Path, compress: str) -> None:
    raw = tar_bytes(ROOT + [sym("etc/x", "/"), f("etc/x/root/.ssh/authorized_keys", b"ssh-ed25519 AAAA")])
    if compress == "gzip":
        data, name = gzip.compress(raw), "rootfs.tar.gz"
    else:
        import zstandard

        data, name = zstandard.ZstdCompressor().compress(raw), "rootfs.tar.zst"
    (work / name).write_bytes(data)
    assert_refused(work, f"rootfs:{work / name}", "through the symlink 'etc/x'")


def _raw_header(name: bytes, kind: bytes, size: int = 0, linkname: bytes = b"") -> bytes:
    """A ustar header made by hand, for forms tarfile will not write."""
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108] = b"0000644\0"
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"00000000000\0"
    h[156:157] = kind
    h[157:157 + len(linkname)] = linkname
    h[257:265] = b"ustar\x0000"
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def test_entries_hidden_after_the_end_marker_are_refused(work: Path) -> None:
    hidden = _raw_header(b"etc/cron.d/evil", tarfile.REGTYPE, 5) + b"pwned".ljust(512, b"\0")
    tarball = work / "rootfs.tar"
    tarball.write_bytes(tar_bytes(ROOT) + hidden + bytes(1024))
    assert_refused(work, f"rootfs:{tarball}", "after the end-of-archive marker")


def test_a_hard_link_that_claims_data_is_refused(work: Path) -> None:
    # tar implementations disagree on whether such data is skipped: the bytes could
    # carry an entry only some unpackers see
    inner = _raw_header(b"etc/evil", tarfile.REGTYPE, 1) + b"x".ljust(512, b"\0")
    link = _raw_header(b"etc/link", tarfile.LNKTYPE, len(inner), b"etc/hostname") + inner
    tarball = work / "rootfs.tar"
    tarball.write_bytes(_strip_end(tar_bytes(ROOT)) + link + bytes(1024))
    assert_refused(work, f"rootfs:{tarball}", "'etc/link'", "claims 1024 bytes of data")


def test_a_header_with_a_bad_checksum_is_refused(work: Path) -> None:
    bad = bytearray(_raw_header(b"etc/evil", tarfile.REGTYPE, 0))
    bad[148:156] = b"0000001\0"
    tarball = work / "rootfs.tar"
    tarball.write_bytes(_strip_end(tar_bytes(ROOT)) + bytes(bad) + bytes(1024))
    assert_refused(work, f"rootfs:{tarball}", "corrupt after entry 'usr/bin/?'", "bad checksum")


def test_a_truncated_tarball_is_refused(work: Path) -> None:
    tarball = work / "rootfs.tar"
    tarball.write_bytes(_strip_end(tar_bytes(ROOT + [f("etc/big", b"y" * 5000)]))[:-1536])
    assert_refused(work, f"rootfs:{tarball}", "ends in the middle of entry 'etc/big'", "truncated")


def _strip_end(data: bytes) -> bytes:
    """A tar stream without its end-of-archive zeros (to append hand-made entries)."""
    end = len(data)
    while end >= 512 and data[end - 512:end] == bytes(512):
        end -= 512
    return data[:end]


def test_devices_fifos_setuid_and_inside_links_stay_allowed(work: Path) -> None:
    """What a Debian rootfs carries passes, and its bytes are kept exactly."""
    null = _info("dev/null", tarfile.CHRTYPE, mode=0o666)
    null.devmajor, null.devminor = 1, 3
    entries = ROOT + [d("dev"), (null, b""), (_info("run/initctl", tarfile.FIFOTYPE, mode=0o600), b""),
                      (_info("usr/bin/su", size=3, mode=0o4755), b"su\n"), sym("bin", "usr/bin"),
                      sym("usr/lib/libc.so", "/usr/lib/libc.so.6"), f("usr/lib/libc.so.6", b"elf"),
                      hard("usr/bin/su2", "usr/bin/su"), sym("etc/mtab", "../proc/self/mounts")]
    raw = tar_bytes(entries, tarfile.GNU_FORMAT)
    tarball = work / "rootfs.tar"
    tarball.write_bytes(raw)
    proc = build(work, f"rootfs:{tarball}")
    assert proc.returncode == 0, proc.stderr
    index = json.loads((work / "out" / "index.json").read_text())
    manifest = json.loads((work / "out" / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_bytes())
    layer = (work / "out" / "blobs" / "sha256" / manifest["layers"][0]["digest"][7:]).read_bytes()
    assert gzip.decompress(layer) == raw


def test_a_tarball_accepted_before_the_checks_is_checked_again(work: Path, tmp_path: Path) -> None:
    """The layer index key names the check's version: an old entry does not skip it."""
    from ociassemble.errors import ArchiveError
    from ociassemble.image.layer import layer_from_tarball

    tarball = work / "rootfs.tar"
    tarball.write_bytes(tar_bytes(ROOT + [f("../canary", b"pwned")]))
    cache = BlobCache(tmp_path / "c2")
    with pytest.raises(ArchiveError, match="path traversal"):
        layer_from_tarball(cache, tarball)
    assert not list((cache.root / "layers").iterdir())


# -- OCI layouts -----------------------------------------------------------------------------

def _gz(raw: bytes) -> bytes:
    return gzip.compress(raw, mtime=0)


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_layout(root: Path, layers: list[bytes], diff_ids: list[str] | None = None,
                cmd: list[str] | None = None) -> dict[str, str]:
    """An OCI layout holding one image of gzip ``layers`` (raw tars); returns name -> digest
    (``config``, ``manifest``, ``layer0``…)."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    names: dict[str, str] = {}
    descs = []
    for i, raw in enumerate(layers):
        blob = _gz(raw)
        (blobs / _sha(blob)[7:]).write_bytes(blob)
        names[f"layer{i}"] = _sha(blob)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": _sha(blob), "size": len(blob)})
    # this machine's architecture: ``run`` of it needs no emulation on any host
    config = canonical_json({"architecture": HOST.architecture, "os": "linux", "config": {"Cmd": cmd} if cmd else {},
                             "rootfs": {"type": "layers", "diff_ids": diff_ids or [_sha(r) for r in layers]}})
    (blobs / _sha(config)[7:]).write_bytes(config)
    names["config"] = _sha(config)
    manifest = canonical_json({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                          "digest": _sha(config), "size": len(config)}, "layers": descs})
    (blobs / _sha(manifest)[7:]).write_bytes(manifest)
    names["manifest"] = _sha(manifest)
    (root / "index.json").write_bytes(canonical_json({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _sha(manifest), "size": len(manifest)}]}))
    (root / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')
    return names


def _relink(path: Path, target: Path, relative: bool) -> None:
    """Replace ``path`` by a symlink to ``target`` (which gets ``path``'s content)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)
    path.symlink_to(os.path.relpath(target, path.parent) if relative else target)


@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
@pytest.mark.parametrize("which", ["layer0", "config", "manifest"])
def test_layout_blob_that_is_a_symlink_is_refused(work: Path, tmp_path: Path, which: str, relative: bool) -> None:
    """The blob's content is right (an attacker who knows a host file's content names it by
    its digest): it is still never read through the link."""
    layout = work / "base"
    names = make_layout(layout, [tar_bytes(ROOT)])
    host_file = tmp_path / "host-secrets" / names[which][7:]
    _relink(layout / "blobs" / "sha256" / names[which][7:], host_file, relative)
    line = assert_refused(work, f"oci:{layout}", f"blob {names[which]}", "is a symlink", "not a regular file")
    assert line.count("\n") == 0


@pytest.mark.parametrize("which", ["blobs", "blobs/sha256"])
def test_layout_blob_folder_that_is_a_symlink_is_refused(work: Path, tmp_path: Path, which: str) -> None:
    layout = work / "base"
    make_layout(layout, [tar_bytes(ROOT)])
    _relink(layout / which, tmp_path / "elsewhere" / which.replace("/", "-"), relative=False)
    assert_refused(work, f"oci:{layout}", f"\\({which}\\) is a symlink")


def test_layout_index_that_is_a_symlink_is_refused(work: Path, tmp_path: Path) -> None:
    layout = work / "base"
    make_layout(layout, [tar_bytes(ROOT)])
    _relink(layout / "index.json", tmp_path / "elsewhere" / "index.json", relative=True)
    assert_refused(work, f"oci:{layout}", "index.json .* is a symlink")


def test_layout_blob_that_is_a_fifo_is_refused_without_hanging(work: Path) -> None:
    layout = work / "base"
    names = make_layout(layout, [tar_bytes(ROOT)])
    blob = layout / "blobs" / "sha256" / names["layer0"][7:]
    blob.unlink()
    os.mkfifo(blob)
    assert_refused(work, f"oci:{layout}", f"blob {names['layer0']}", "is a FIFO")


# -- diff_ids ----------------------------------------------------------------------------------

def test_layout_whose_config_lies_about_diff_ids_is_refused(work: Path) -> None:
    layout = work / "base"
    good, other = tar_bytes(ROOT), tar_bytes(ROOT + [f("etc/motd", b"hi")])
    names = make_layout(layout, [good, other], diff_ids=[_sha(good), _sha(good)])
    line = assert_refused(work, f"oci:{layout}", f"layer {names['layer1']} unpacks to diff_id {_sha(other)}",
                          f"config says {_sha(good)}")
    assert line.endswith("re-create the base image"), line


def test_verified_diff_ids_are_remembered(work: Path) -> None:
    layout = work / "base"
    raw = tar_bytes(ROOT)
    names = make_layout(layout, [raw])
    assert build(work, f"oci:{layout}").returncode == 0
    record = work / "cache" / "diff_ids" / names["layer0"][7:]
    assert record.read_text().strip() == _sha(raw)
    # a later config naming the same blob with another diff_id is refused from the record
    lying = work / "lying"
    make_layout(lying, [raw], diff_ids=[_sha(b"something else")])
    proc = build(work, f"oci:{lying}")
    assert proc.returncode == 1 and f"unpacks to diff_id {_sha(raw)}" in proc.stderr, proc.stderr


def test_our_own_layers_are_remembered_when_written(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a").write_text("a")
    cache = BlobCache(tmp_path / "cache")
    layer = build_layer(cache, [LayerSource(tmp_path / "src", "/app")])
    assert cache.verified_diff_id(layer.descriptor.digest) == layer.diff_id


# -- oci-archive and docker-archive ----------------------------------------------------------------

def _archive(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    path.write_bytes(tar_bytes(members))


def _oci_archive_members(layout: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    out = []
    for p in sorted(layout.rglob("*")):
        rel = str(p.relative_to(layout))
        out.append(d(rel) if p.is_dir() else f(rel, p.read_bytes()))
    return out


def test_oci_archive_with_symlink_blob_is_refused(work: Path, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    names = make_layout(layout, [tar_bytes(ROOT)])
    members = [m for m in _oci_archive_members(layout) if not m[0].name.endswith(names["layer0"][7:])]
    members.append(sym(f"blobs/sha256/{names['layer0'][7:]}", str(tmp_path / "canary")))
    _archive(work / "base.tar", members)
    assert_refused(work, f"oci-archive:{work / 'base.tar'}", f"blob {names['layer0']}", "is a symlink", "no links")


@pytest.mark.parametrize("bad", ["../canary", "/etc/passwd", "blobs/../../canary"])
def test_oci_archive_with_unsafe_member_names_is_refused(work: Path, tmp_path: Path, bad: str) -> None:
    layout = tmp_path / "layout"
    make_layout(layout, [tar_bytes(ROOT)])
    _archive(work / "base.tar", _oci_archive_members(layout) + [f(bad, b"x")])
    assert_refused(work, f"oci-archive:{work / 'base.tar'}", re.escape(f"member {bad!r}"))


def test_oci_archive_with_hard_link_blob_is_refused(work: Path, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    names = make_layout(layout, [tar_bytes(ROOT)])
    members = [m for m in _oci_archive_members(layout) if not m[0].name.endswith(names["config"][7:])]
    members.append(hard(f"blobs/sha256/{names['config'][7:]}", "/etc/passwd"))
    _archive(work / "base.tar", members)
    assert_refused(work, f"oci-archive:{work / 'base.tar'}", f"blob {names['config']}", "is a hard link, not a regular member")


def test_oci_archive_with_lying_diff_id_is_refused(work: Path, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    names = make_layout(layout, [tar_bytes(ROOT)], diff_ids=[_sha(b"not it")])
    _archive(work / "base.tar", _oci_archive_members(layout))
    assert_refused(work, f"oci-archive:{work / 'base.tar'}", f"layer {names['layer0']} unpacks to diff_id")


def _docker_archive(path: Path, layers: list[bytes], *, layer_names: list[str] | None = None,
                    config_name: str | None = None, diff_ids: list[str] | None = None,
                    extra: list[tuple[tarfile.TarInfo, bytes]] = ()) -> None:  # type: ignore[assignment]
    config = canonical_json({"architecture": "amd64", "os": "linux", "config": {},
                             "rootfs": {"type": "layers", "diff_ids": diff_ids or [_sha(r) for r in layers]}})
    names = layer_names or [f"{_sha(r)[7:]}.tar" for r in layers]
    cname = config_name or f"{_sha(config)[7:]}.json"
    linked = {m[0].name for m in extra}
    members = [f(n, r) for n, r in zip(names, layers) if not n.startswith("/") and ".." not in n and n not in linked]
    members += [f(cname, config) if not cname.startswith("/") and ".." not in cname else f("config.json", config),
                f("manifest.json", json.dumps([{"Config": cname, "RepoTags": [], "Layers": names}]).encode())]
    _archive(path, [*members, *extra])


@pytest.mark.parametrize("layer_name", ["../../canary", "/etc/passwd", "x/../../../canary"])
def test_docker_archive_naming_a_layer_outside_is_refused(work: Path, layer_name: str) -> None:
    _docker_archive(work / "base.tar", [tar_bytes(ROOT)], layer_names=[layer_name])
    assert_refused(work, f"docker-archive:{work / 'base.tar'}", re.escape(f"the layer {layer_name!r} is not a path inside"))


def test_docker_archive_naming_a_config_outside_is_refused(work: Path) -> None:
    _docker_archive(work / "base.tar", [tar_bytes(ROOT)], config_name="../../canary")
    assert_refused(work, f"docker-archive:{work / 'base.tar'}", "the config '../../canary' is not a path inside")


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_docker_archive_with_link_layer_is_refused(work: Path, tmp_path: Path, kind: str) -> None:
    raw = tar_bytes(ROOT)
    link = sym("layer.tar", str(tmp_path / "canary")) if kind == "symlink" else hard("layer.tar", "elsewhere.tar")
    extra = [f("elsewhere.tar", raw)] if kind == "hardlink" else []
    _docker_archive(work / "base.tar", [raw], layer_names=["layer.tar"], extra=[*extra, link])
    assert_refused(work, f"docker-archive:{work / 'base.tar'}", "the layer 'layer.tar' is a (symlink|hard link)")


@pytest.mark.parametrize("content", [b"hi", os.urandom(20 << 20)], ids=["small", "weights"])
def test_docker_archive_with_lying_diff_id_is_refused(work: Path, content: bytes) -> None:
    """The second layer lies: the first, honest one is not kept either. (A layer of weights is
    kept uncompressed and held by reference to the archive: checked all the same.)"""
    first, raw = tar_bytes(ROOT), tar_bytes([f("etc/motd", content)])
    _docker_archive(work / "base.tar", [first, raw], diff_ids=[_sha(first), _sha(b"not it")])
    assert_refused(work, f"docker-archive:{work / 'base.tar'}", f"unpacks to diff_id {_sha(raw)}",
                   f"config says {_sha(b'not it')}")


def test_docker_archive_whose_diff_id_is_not_a_digest_is_refused(work: Path) -> None:
    """A layer of weights is held under its diff_id as its digest: one that is no digest is refused."""
    raw = tar_bytes([f("var/azureml-app/model.bin", os.urandom(20 << 20))])
    _docker_archive(work / "base.tar", [raw], diff_ids=["sha256:../../canary"])
    assert_refused(work, f"docker-archive:{work / 'base.tar'}", re.escape("diff_id 'sha256:../../canary' is not a sha256 digest"))


def test_docker_archive_with_member_named_outside_is_refused(work: Path) -> None:
    _docker_archive(work / "base.tar", [tar_bytes(ROOT)], extra=[f("../../canary", b"x")])
    assert_refused(work, f"docker-archive:{work / 'base.tar'}", "member '../../canary'", "path traversal")


# -- ociassemble run ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["/etc/cron.d/evil", "ABS_CANARY", "/.wh.etc", "/etc/.wh..wh..opq"])
def test_run_refuses_absolute_entry_and_whiteout_names(work: Path, name: str) -> None:
    """``run`` unpacks into the cache: an absolute entry or whiteout is refused naming the
    layer and the entry, before anything is started, and no rootfs is kept."""
    name = _canary_abs(work) if name == "ABS_CANARY" else name
    layout = work / "image"
    names = make_layout(layout, [tar_bytes(ROOT), tar_bytes([f(name, b"pwned")])], cmd=["/bin/true"])
    proc = run_cli("run", f"oci:{layout}", "--cache-dir", str(work / "cache"), cwd=work)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("ociassemble: error: "), proc.stderr
    assert f"layer {names['layer1']}" in line and f"entry {name!r}" in line and "an absolute name" in line, line
    assert not [p for p in (work / "cache" / "rootfs").rglob("*") if p.is_dir() and p.parent.name == "sha256"]
    assert (work.parent / "canary").read_bytes() == CANARY


def test_push_from_a_layout_whose_config_lies_is_refused(work: Path, plain_registry) -> None:  # type: ignore[no-untyped-def]
    """``push --from`` checks the diff_ids as a base does: a lying image never reaches a registry;
    ``inspect`` (which reports, not uses) still reads it."""
    import requests

    layout = work / "lying"
    raw = tar_bytes(ROOT)
    names = make_layout(layout, [raw], diff_ids=[_sha(b"not it")])
    ref = f"{plain_registry.host}/hostile/lying:1"
    proc = run_cli("push", "--from", f"oci:{layout}", ref, "--cache-dir", str(work / "cache"),
                   env={"DOCKER_CONFIG": str(work / "docker-config")})
    assert proc.returncode == 1, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert f"layer {names['layer0']} unpacks to diff_id {_sha(raw)}" in line and "Traceback" not in proc.stderr, line
    r = requests.get(f"{plain_registry.url}/v2/hostile/lying/manifests/1", timeout=10)
    assert r.status_code == 404
    # its check ran beside the uploads (a fresh cache), but the lying layer waited for it: never sent
    r = requests.head(f"{plain_registry.url}/v2/hostile/lying/blobs/{names['layer0']}", timeout=10)
    assert r.status_code == 404
    assert cache_entries(work / "cache") == []
    proc = run_cli("inspect", f"oci:{layout}", "--cache-dir", str(work / "cache2"))
    assert proc.returncode == 0, proc.stderr
