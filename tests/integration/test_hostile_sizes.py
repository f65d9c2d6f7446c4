"""An image's JSON documents that are too big, in an OCI layout, an oci-archive or a
docker-archive: a manifest or index over 4 MiB, a config over 8 MiB (the limits a registry's
answers already had), and indexes nested past any real image. Each is refused in one line
naming the document before its bytes are read: a hostile image of 300 MB documents keeps
the process under 100 MB (``inspect`` of a layout with a 300 MB config or index.json peaked at
650 and 950 MB before; a bigger one would take the machine's memory)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from ociassemble.image.oci import canonical_json
from tests.hostarch import HOST
from tests.integration.test_hostile_bases import _sha
from tests.integration.test_registry_hostile import PEAK_RSS

BIG = 300 << 20
MAX_RSS_MB = 100
#: empty files in the layer of many (a real layer of the base has some thousands)
ENTRIES = 100_000
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
FAKE = "sha256:" + "ab" * 32  # refused by size before any digest is checked


def _desc(media: str, digest: str, size: int) -> dict:
    return {"mediaType": media, "digest": digest, "size": size}


def _config() -> bytes:
    return canonical_json({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})


def _manifest(config: dict) -> bytes:
    return canonical_json({"schemaVersion": 2, "mediaType": MANIFEST, "config": config, "layers": []})


def _hole(path: Path, size: int) -> None:
    """A file of ``size`` zero bytes that takes no disk (a sparse file)."""
    with open(path, "wb") as f:
        f.truncate(size)


def _tar(path: Path, members: list[tuple[str, bytes | int]]) -> Path:
    """A tar whose members are bytes, or (an int) that many zero bytes left as a hole in the file."""
    with open(path, "wb") as f:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode = (data if isinstance(data, int) else len(data)), 0o644
            f.write(info.tobuf(tarfile.PAX_FORMAT))
            if isinstance(data, int):
                f.seek(data + (-data) % 512, 1)
            else:
                f.write(data + b"\0" * ((-len(data)) % 512))
        f.write(b"\0" * 1024)
    return path


def _meta_tar(path: Path, kind: bytes, then: list[tuple[str, bytes]]) -> Path:
    """A tar whose first header is a 300 MB PAX (``x``) or GNU long-name (``L``) header, a hole."""
    info = tarfile.TarInfo("././@PaxHeader" if kind == tarfile.XHDTYPE else "././@LongLink")
    info.size, info.type = BIG, kind
    with open(path, "wb") as f:
        f.write(info.tobuf(tarfile.USTAR_FORMAT))
        f.seek(BIG, 1)
        for name, data in then:
            member = tarfile.TarInfo(name)
            member.size = len(data)
            f.write(member.tobuf(tarfile.USTAR_FORMAT) + data + b"\0" * ((-len(data)) % 512))
        f.write(b"\0" * 1024)
    return path


def _many(path: Path, n: int) -> Path:
    """A tar of ``n`` empty members (headers only)."""
    with open(path, "wb") as f:
        for i in range(n):
            f.write(tarfile.TarInfo(f"m{i}").tobuf(tarfile.USTAR_FORMAT))
        f.write(b"\0" * 1024)
    return path


def _layout(root: Path, case: str) -> str:
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    config = _config()
    (blobs / _sha(config)[7:]).write_bytes(config)
    top = _desc(MANIFEST, FAKE, BIG)
    if case == "config":
        _hole(blobs / FAKE[7:], BIG)
        manifest = _manifest(_desc("application/vnd.oci.image.config.v1+json", FAKE, BIG))
        (blobs / _sha(manifest)[7:]).write_bytes(manifest)
        top = _desc(MANIFEST, _sha(manifest), len(manifest))
    elif case == "manifest":
        _hole(blobs / FAKE[7:], BIG)
    elif case == "nested indexes":
        manifest = _manifest(_desc("application/vnd.oci.image.config.v1+json", _sha(config), len(config)))
        (blobs / _sha(manifest)[7:]).write_bytes(manifest)
        top = _desc(MANIFEST, _sha(manifest), len(manifest))
        for _ in range(40):
            index = canonical_json({"schemaVersion": 2, "mediaType": INDEX, "manifests": [top]})
            (blobs / _sha(index)[7:]).write_bytes(index)
            top = _desc(INDEX, _sha(index), len(index))
    if case == "index.json":
        _hole(root / "index.json", BIG)
    else:
        (root / "index.json").write_bytes(canonical_json({"schemaVersion": 2, "manifests": [top]}))
    return f"oci:{root}"


def _oci_archive(path: Path, case: str) -> str:
    if case == "index.json":
        return f"oci-archive:{_tar(path, [('oci-layout', b'{}'), ('index.json', BIG)])}"
    manifest = _manifest(_desc("application/vnd.oci.image.config.v1+json", FAKE, BIG))
    index = canonical_json({"schemaVersion": 2, "manifests": [_desc(MANIFEST, _sha(manifest), len(manifest))]})
    return "oci-archive:" + str(_tar(path, [("oci-layout", b"{}"), (f"blobs/sha256/{_sha(manifest)[7:]}", manifest),
                                            (f"blobs/sha256/{FAKE[7:]}", BIG), ("index.json", index)]))


def _docker_archive(path: Path, case: str) -> str:
    if case == "manifest.json":
        return f"docker-archive:{_tar(path, [('manifest.json', BIG)])}"
    manifest = json.dumps([{"Config": "config.json", "RepoTags": ["x:1"], "Layers": []}]).encode()
    return f"docker-archive:{_tar(path, [('config.json', BIG), ('manifest.json', manifest)])}"


CASES = {
    "oci layout: config": (lambda t: _layout(t / "l", "config"), r"config sha256:a.* is 300\.0 MiB, more than the 8\.0 MiB"),
    "oci layout: manifest": (lambda t: _layout(t / "l", "manifest"), r"manifest sha256:a.* is 300\.0 MiB, more than the 4\.0 MiB"),
    "oci layout: index.json": (lambda t: _layout(t / "l", "index.json"), r"index\.json is 300\.0 MiB, more than the 4\.0 MiB"),
    "oci layout: nested indexes": (lambda t: _layout(t / "l", "nested indexes"), r"indexes nested more than 8 deep"),
    "oci-archive: index.json": (lambda t: _oci_archive(t / "a.tar", "index.json"), r"index\.json is 300\.0 MiB, more than the 4\.0 MiB"),
    "oci-archive: config": (lambda t: _oci_archive(t / "a.tar", "config"), r"config sha256:a.* is 300\.0 MiB, more than the 8\.0 MiB"),
    "docker-archive: manifest.json": (lambda t: _docker_archive(t / "d.tar", "manifest.json"), r"manifest\.json is 300\.0 MiB, more than the 4\.0 MiB"),
    "docker-archive: config": (lambda t: _docker_archive(t / "d.tar", "config"), r"config 'config\.json' is 300\.0 MiB, more than the 8\.0 MiB"),
    "oci-archive: a PAX header": (lambda t: "oci-archive:" + str(_meta_tar(t / "p.tar", tarfile.XHDTYPE, [("index.json", b"{}")])),
                                  r"holds a 314572800-byte PAX or long-name header \(the limit is 1048576\)"),
    "docker-archive: a long-name header": (lambda t: "docker-archive:" + str(_meta_tar(t / "p.tar", tarfile.GNUTYPE_LONGNAME, [("manifest.json", b"[]")])),
                                           r"holds a 314572800-byte PAX or long-name header \(the limit is 1048576\)"),
    "oci-archive: 100,001 members": (lambda t: "oci-archive:" + str(_many(t / "m.tar", 100_001)), r"holds more than 100000 entries"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_document_too_big_is_refused_unread_in_one_line(tmp_path: Path, case: str) -> None:
    make, pattern = CASES[case]
    spec = make(tmp_path)
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS, sys.executable, "-m", "ociassemble.cli", "inspect", spec,
                           "--cache-dir", str(tmp_path / "cache")], capture_output=True, text=True, timeout=300)
    got = json.loads(proc.stdout)
    assert got["rc"] == 1, got["err"]
    lines = got["err"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ociassemble: error: ") and "Traceback" not in got["err"], got["err"]
    assert re.search(pattern, lines[0]), lines[0]
    assert got["maxrss_kb"] < MAX_RSS_MB * 1024, f"{case}: peak RSS {got['maxrss_kb'] // 1024} MB"


# -- a layer's tar: read as a stream by inspect --list, verify, the SBOM and a recipe's base info --

def _bomb_layout(root: Path, case: str) -> str:
    """A layout of one gzip layer that decompresses to a 300 MB PAX header (zeros: 0.3 MB
    gzipped), or to ``ENTRIES`` empty files (a few MB gzipped), then one small file."""
    import zlib

    comp = zlib.compressobj(1, zlib.DEFLATED, 31)
    h = __import__("hashlib").sha256()
    out = bytearray()

    def feed(data: bytes) -> None:
        h.update(data)
        out.extend(comp.compress(data))

    if case == "pax":
        info = tarfile.TarInfo("././@PaxHeader")
        info.type, info.size = tarfile.XHDTYPE, BIG
        feed(info.tobuf(tarfile.USTAR_FORMAT))
        zeros = bytes(1 << 20)
        for _ in range(BIG >> 20):
            feed(zeros)
    else:
        for i in range(ENTRIES):
            feed(tarfile.TarInfo(f"d/{i}").tobuf(tarfile.USTAR_FORMAT))
    last = tarfile.TarInfo("etc/os-release")
    last.size = 3
    feed(last.tobuf(tarfile.USTAR_FORMAT) + b"x=1" + b"\0" * 509 + b"\0" * 1024)
    out.extend(comp.flush())
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    layer = bytes(out)
    (blobs / _sha(layer)[7:]).write_bytes(layer)
    config = canonical_json({"architecture": HOST.architecture, "os": "linux", "config": {},
                             "rootfs": {"type": "layers", "diff_ids": ["sha256:" + h.hexdigest()]}})
    (blobs / _sha(config)[7:]).write_bytes(config)
    manifest = canonical_json({"schemaVersion": 2, "mediaType": MANIFEST,
                               "config": _desc("application/vnd.oci.image.config.v1+json", _sha(config), len(config)),
                               "layers": [_desc("application/vnd.oci.image.layer.v1.tar+gzip", _sha(layer), len(layer))]})
    (blobs / _sha(manifest)[7:]).write_bytes(manifest)
    (root / "index.json").write_bytes(canonical_json({"schemaVersion": 2, "manifests": [
        _desc(MANIFEST, _sha(manifest), len(manifest))]}))
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return f"oci:{root}"


def _peak(args: list[str], cwd: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS, sys.executable, "-m", "ociassemble.cli", *args],
                          capture_output=True, text=True, timeout=300, cwd=cwd)
    return json.loads(proc.stdout)


@pytest.mark.parametrize("command", ["inspect --list", "build"])
@pytest.mark.parametrize("case", ["pax", "entries"])
def test_a_layer_that_unpacks_to_a_bomb_is_read_in_flat_memory(tmp_path: Path, command: str, case: str) -> None:
    """A 300 MB PAX header gzipped to 0.3 MB (``inspect --layer 0 --list`` of such a layer peaked at
    2.1 GB for a 1 GB one): refused in one line, unread. 100,000 empty files: listed (or the base
    read) in flat memory instead of keeping every header (40 and 43 MB peak; 83 and 93 MB before)."""
    spec = _bomb_layout(tmp_path / "bomb", case)
    if command == "build":
        (tmp_path / "score.py").write_text("def init():\n    pass\n\n\ndef run(data):\n    return data\n")
        (tmp_path / "model.bin").write_bytes(b"m")
        args = ["build", "--base", spec, "--model", "model.bin", "-o", f"oci:{tmp_path / 'out'}"]
    else:
        args = ["inspect", spec, "--layer", "0", "--list"]
    got = _peak([*args, "--cache-dir", str(tmp_path / "cache")], tmp_path)
    err = got["err"].strip().splitlines()
    assert "Traceback" not in got["err"], got["err"]
    if case == "pax":
        assert got["rc"] == 1 and err[-1].startswith("ociassemble: error: "), got["err"]
        assert f"a {BIG}-byte PAX header (the limit is 1048576)" in err[-1], err[-1]
        assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(("out", ".out"))]  # nothing half-written
    elif command == "inspect --list":
        assert got["rc"] == 0, got["err"]
        assert got["out"].count("\n") == ENTRIES + 1 and got["out"].rstrip().endswith("etc/os-release"), got["out"][-300:]
    else:  # the base has no python3, nginx or runsvdir: said in one line, after reading all of it
        assert got["rc"] == 1 and "has no" in err[-1], got["err"]
    print(f"{command} {case}: peak RSS {got['maxrss_kb'] // 1024} MB")  # shown with -s
    limit = 65 if case == "entries" else MAX_RSS_MB  # (the headers kept took 83 and 93 MB)
    assert got["maxrss_kb"] < limit * 1024, f"{command} {case}: peak RSS {got['maxrss_kb'] // 1024} MB"


def test_a_docker_archive_layer_holding_a_huge_pax_header_is_read_in_flat_memory(tmp_path: Path) -> None:
    """A docker-archive's layer is sampled (to choose its compression) by reading its tar: a 300 MB
    PAX header in it is not read whole (the layer is then gzipped unsampled, as a build would a
    layer it cannot sample), and the image reads back."""
    import hashlib

    layer = tmp_path / "layer.tar"
    _meta_tar(layer, tarfile.XHDTYPE, [("etc/x", b"x")])
    h = hashlib.sha256()
    with open(layer, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    config = canonical_json({"architecture": "amd64", "os": "linux", "config": {},
                             "rootfs": {"type": "layers", "diff_ids": ["sha256:" + h.hexdigest()]}})
    manifest = json.dumps([{"Config": "c.json", "RepoTags": ["x/y:1"], "Layers": ["layer.tar"]}]).encode()
    archive = tmp_path / "d.tar"
    with open(archive, "wb") as out:
        for name, data in (("c.json", config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.write(info.tobuf(tarfile.PAX_FORMAT) + data + b"\0" * ((-len(data)) % 512))
        size = layer.stat().st_size
        info = tarfile.TarInfo("layer.tar")
        info.size = size
        out.write(info.tobuf(tarfile.PAX_FORMAT))
        with open(layer, "rb") as f:  # (the hole stays a hole: the zeros are seeked over)
            f.seek(0)
            out.write(f.read(512))
            out.seek(BIG, 1)
            f.seek(512 + BIG)
            out.write(f.read())
        out.write(b"\0" * ((-size) % 512) + b"\0" * 1024)
    got = _peak(["inspect", f"docker-archive:{archive}", "--json", "--cache-dir", str(tmp_path / "cache")], tmp_path)
    assert got["rc"] == 0, got["err"]
    assert json.loads(got["out"])["layers"][0]["mediaType"].endswith("tar+gzip")
    assert got["maxrss_kb"] < MAX_RSS_MB * 1024, f"peak RSS {got['maxrss_kb'] // 1024} MB"
