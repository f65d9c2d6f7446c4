"""An OCI archive's layers are held in the cache by reference to their bytes in the archive
(``diffid.HeldIn``: a tar keeps a member's data in one run), as a layout's are: ``push --from
oci-archive:`` on a runner whose cache never saw the image sends the model without first
copying it into the cache, and an archive changed afterwards is seen and named."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import requests

from ociassemble.errors import ArchiveError, DigestMismatchError, SourceChangedError
from ociassemble.image.cache import BlobCache
from ociassemble.imageio import load_image, write_image
from tests.conftest import run_cli
from tests.integration.test_hostile_bases import _sha
from tests.integration.test_layout_by_reference import MIB, _bytes_under, _layout


def _archive(layout: Path, out: Path) -> Path:
    """The layout tarred as skopeo writes an oci-archive (members at the top, no ``./``)."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        for p in sorted(layout.rglob("*")):
            tf.add(p, arcname=p.relative_to(layout).as_posix(), recursive=False)
    return out


def _member(archive: Path, digest: str) -> tarfile.TarInfo:
    with tarfile.open(archive) as tf:
        return tf.getmember(f"blobs/sha256/{digest[7:]}")


def test_an_archives_layers_are_held_by_reference_to_its_members(tmp_path: Path) -> None:
    layout, cache_dir = tmp_path / "layout", tmp_path / "cache"
    names = _layout(layout, os.urandom(MIB) * 24)
    archive = _archive(layout, tmp_path / "image.tar")
    cache = BlobCache(cache_dir)
    image = load_image(f"oci-archive:{archive}", cache)
    assert image.digest == names["manifest"]
    assert _bytes_under(cache_dir) < MIB  # records, not the 24 MiB layer
    member = _member(archive, names["model"])
    ref = cache.ref(names["model"])
    assert ref is not None and len(ref.files) == 1
    part = ref.files[0]
    assert (part.path, part.offset, part.size, part.file_size) == \
        (str(archive), member.offset_data, member.size, archive.stat().st_size)
    with cache.open(names["model"]) as blob:
        assert _sha(blob.read()) == names["model"]
    # written out: the layer copied from the archive's run of bytes (a layout's file of its own)
    write_image(image, cache, f"oci:{tmp_path / 'out'}")
    out_blob = tmp_path / "out" / "blobs" / "sha256" / names["model"][7:]
    assert _sha(out_blob.read_bytes()) == names["model"]
    assert out_blob.stat().st_ino != archive.stat().st_ino
    # the archive's member changed in place, same size: seen, never handed out as the digest's bytes
    with open(archive, "r+b") as fh:
        fh.seek(member.offset_data + member.size - 2000)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 1]))
    assert not cache.has_current(names["model"])
    with pytest.raises(SourceChangedError, match=f"{archive} changed after ociassemble read the image in it.*"
                                                 "run the command again"), cache.open(names["model"]) as blob:
        blob.read()
    with pytest.raises(DigestMismatchError):
        load_image(f"oci-archive:{archive}", BlobCache(tmp_path / "cache2"))


def test_a_sparse_member_is_copied_not_held(tmp_path: Path) -> None:
    """GNU tar's --sparse keeps a member's data in several runs: such a layer is copied into
    the cache, as before, and reads back to its digest."""
    if shutil.which("tar") is None:
        pytest.skip("GNU tar is not installed")
    layout = tmp_path / "layout"
    weights = os.urandom(MIB) + bytes(4 * MIB) + os.urandom(MIB)
    names = _layout(layout, weights)
    blob = layout / "blobs" / "sha256" / names["model"][7:]
    data = blob.read_bytes()
    with open(blob, "wb") as fh:  # written with holes where the blob's zeros are, so tar finds them
        for at in range(0, len(data), 4096):
            chunk = data[at:at + 4096]
            if chunk.count(0) == len(chunk):
                fh.seek(len(chunk), os.SEEK_CUR)
            else:
                fh.write(chunk)
        fh.truncate(len(data))
    archive = tmp_path / "sparse.tar"
    subprocess.run(["tar", "--sparse", "--format=pax", "-cf", str(archive), "-C", str(layout), "."], check=True)
    member = next(m for m in tarfile.open(archive).getmembers() if m.name.endswith(names["model"][7:]))
    if not member.issparse():
        pytest.skip("this filesystem reports no holes to tar (its member was stored whole)")
    cache = BlobCache(tmp_path / "cache")
    assert load_image(f"oci-archive:{archive}", cache).digest == names["manifest"]
    assert cache.ref(names["model"]) is None and cache.stored(names["model"])
    with cache.open(names["model"]) as got:
        assert _sha(got.read()) == names["model"]


_WITH_IO = ("import atexit, sys\n"
            "atexit.register(lambda: sys.stderr.write('\\n' + open('/proc/self/io').read()))\n"
            "from ociassemble.cli import main\n"
            "sys.exit(main())\n")


def _push_counting_reads(*args: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], int]:
    """The CLI run as ``run_cli`` runs it, with the bytes it read (``rchar``) at its exit."""
    proc = subprocess.run([sys.executable, "-c", _WITH_IO, *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=900)
    rchar = [int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("rchar:")]
    return proc, rchar[-1] if rchar else -1


@pytest.mark.parametrize("kind", ["oci", "oci-archive"])
def test_push_from_reads_a_new_model_once(tmp_path: Path, plain_registry, kind: str) -> None:  # type: ignore[no-untyped-def]
    """``push --from`` with a cache that never saw the image: an uncompressed layer is not read
    to check it and then again to send it, but once, the registry checking its digest."""
    layout = tmp_path / "layout"
    size = 48 * MIB
    names = _layout(layout, os.urandom(size))
    spec = f"oci:{layout}" if kind == "oci" else f"oci-archive:{_archive(layout, tmp_path / 'image.tar')}"
    ref = f"{plain_registry.host}/once/{kind}:1"
    proc, read = _push_counting_reads("push", "--from", spec, ref, "--cache-dir", str(tmp_path / "cache"), "--json",
                                      env={"DOCKER_CONFIG": str(tmp_path / "docker-config")})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["digest"] == names["manifest"]
    assert size <= read < size + size // 2, f"read {read} bytes for a {size}-byte model"
    assert _bytes_under(tmp_path / "cache") < MIB  # nothing of it copied into the cache
    # the registry accepted the bytes read: the layer is now held by reference for later runs
    cache = BlobCache(tmp_path / "cache")
    assert cache.has_current(names["model"]) and cache.ref(names["model"]) is not None
    # the compressed base layer's diff_id was checked beside the uploads, and remembered
    assert cache.verified_diff_id(names["base"]) is not None and cache.ref(names["base"]) is not None
    r = requests.get(f"{plain_registry.url}/v2/once/{kind}/blobs/{names['model']}", timeout=30)
    assert r.status_code == 200 and _sha(r.content) == names["model"]


@pytest.mark.parametrize("kind", ["oci", "oci-archive"])
def test_push_from_a_corrupt_layer_pushes_nothing_and_names_it(tmp_path: Path, plain_registry, kind: str) -> None:  # type: ignore[no-untyped-def]
    """A layer whose bytes are not its digest's (same size), left unread until it is sent: the
    registry refuses it, the error names the file, and no manifest or tag is written."""
    layout = tmp_path / "layout"
    names = _layout(layout, os.urandom(4 * MIB))
    blob = layout / "blobs" / "sha256" / names["model"][7:]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 1
    blob.write_bytes(bytes(data))
    where = str(blob) if kind == "oci" else str(_archive(layout, tmp_path / "image.tar"))
    spec = f"oci:{layout}" if kind == "oci" else f"oci-archive:{where}"
    ref = f"{plain_registry.host}/corrupt/{kind}:1"
    proc = run_cli("push", "--from", spec, ref, "--cache-dir", str(tmp_path / "cache"),
                   env={"DOCKER_CONFIG": str(tmp_path / "docker-config")})
    assert proc.returncode != 0
    err = [line for line in proc.stderr.splitlines() if "error" in line]  # (the others: progress lines)
    assert len(err) == 1 and err[0].startswith("ociassemble: error:") and "Traceback" not in proc.stderr, proc.stderr
    assert names["model"] in err[0] and where in err[0] and "corrupt" in err[0], err[0]
    # "uploaded" means the registry holds it: the refused layer's bytes all left, but it never got that line
    uploaded = [line for line in proc.stderr.splitlines() if line.startswith("ociassemble: uploaded ")]
    assert not any(names["model"][:19] in line for line in uploaded), proc.stderr
    assert BlobCache(tmp_path / "cache").ref(names["model"]) is None  # nothing recorded of the refused layer
    for path in ("manifests/1", f"manifests/{names['manifest']}", f"blobs/{names['model']}"):
        assert requests.head(f"{plain_registry.url}/v2/corrupt/{kind}/{path}", timeout=30).status_code == 404, path


@pytest.mark.parametrize("kind", ["oci", "oci-archive"])
def test_push_from_a_layer_longer_than_its_descriptor_is_refused_before_any_upload(tmp_path: Path, plain_registry,
                                                                                  kind: str) -> None:  # type: ignore[no-untyped-def]
    """A layer left unread until it is sent is still measured first: a blob whose file is not the
    size its descriptor gives stops the push in one line, before anything is uploaded."""
    layout = tmp_path / "layout"
    names = _layout(layout, os.urandom(MIB))
    blob = layout / "blobs" / "sha256" / names["model"][7:]
    with open(blob, "ab") as fh:
        fh.write(b"\0" * 512)  # still a valid tar to an extractor: only the size gives it away
    spec = f"oci:{layout}" if kind == "oci" else f"oci-archive:{_archive(layout, tmp_path / 'image.tar')}"
    proc = run_cli("push", "--from", spec, f"{plain_registry.host}/long/{kind}:1", "--cache-dir", str(tmp_path / "c"),
                   env={"DOCKER_CONFIG": str(tmp_path / "docker-config")})
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ociassemble: error:"), proc.stderr
    assert names["model"] in err[0] and "descriptor" in err[0], err[0]
    r = requests.get(f"{plain_registry.url}/v2/_catalog", timeout=30)
    assert f"long/{kind}" not in r.json().get("repositories", [])


def _index_layout(root: Path, weights: bytes) -> dict[str, str]:
    """A layout of an index of two platforms' images sharing one uncompressed model layer (as a
    multi-platform build writes it), each with a gzip layer of its own."""
    from ociassemble.image.oci import canonical_json
    from tests.integration.test_hostile_bases import ROOT, _gz, f, tar_bytes

    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    model = tar_bytes([f("var/azureml-app/model.bin", weights)])

    def put(data: bytes) -> str:
        (blobs / _sha(data)[7:]).write_bytes(data)
        return _sha(data)

    manifests = []
    for arch in ("amd64", "arm64"):
        base = tar_bytes([*ROOT, f(f"etc/{arch}", arch.encode())])
        layers = [("application/vnd.oci.image.layer.v1.tar+gzip", _gz(base)), ("application/vnd.oci.image.layer.v1.tar", model)]
        for _, blob in layers:
            put(blob)
        config = canonical_json({"architecture": arch, "os": "linux", "config": {},
                                 "rootfs": {"type": "layers", "diff_ids": [_sha(base), _sha(model)]}})
        manifest = canonical_json({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                   "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                              "digest": put(config), "size": len(config)},
                                   "layers": [{"mediaType": m, "digest": _sha(b), "size": len(b)} for m, b in layers]})
        manifests.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(manifest),
                          "size": len(manifest), "platform": {"architecture": arch, "os": "linux"}})
    index = canonical_json({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                            "manifests": manifests})
    (root / "index.json").write_bytes(canonical_json({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": put(index), "size": len(index)}]}))
    (root / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')
    return {"index": _sha(index), "model": _sha(model)}


def test_push_from_a_multi_platform_archive_sends_the_shared_model_once(tmp_path: Path, plain_registry) -> None:  # type: ignore[no-untyped-def]
    """An index whose two images share the model layer, pushed whole from an archive with an
    empty cache: the index digest is kept, the model is read once and uploaded once."""
    layout = tmp_path / "layout"
    size = 32 * MIB
    names = _index_layout(layout, os.urandom(size))
    archive = _archive(layout, tmp_path / "image.tar")
    proc, read = _push_counting_reads("push", "--from", f"oci-archive:{archive}", f"{plain_registry.host}/multi/m:1",
                                      "--cache-dir", str(tmp_path / "cache"), "--json",
                                      env={"DOCKER_CONFIG": str(tmp_path / "docker-config")})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["digest"] == names["index"]
    assert out["blobs"]["uploaded"].count(names["model"]) == 1, out["blobs"]
    assert size <= read < size + size // 2, f"read {read} bytes for a {size}-byte model shared by two images"
    r = requests.get(f"{plain_registry.url}/v2/multi/m/manifests/1", timeout=30,
                     headers={"Accept": "application/vnd.oci.image.index.v1+json"})
    assert r.status_code == 200 and _sha(r.content) == names["index"]


def test_a_docker_archive_reads_back_to_the_built_image_its_model_held(quick_recipe, plain_registry,  # type: ignore[no-untyped-def]
                                                                        tmp_path: Path) -> None:
    """A default build written as a docker-archive (every layer uncompressed, as ``docker save``
    writes them) reads back to the built digest: each layer is stored as the build stored it,
    so the model, which a build keeps uncompressed, is held by reference to its bytes in the
    archive, neither copied nor compressed, and ``push --from`` reads it once."""
    size = 48 * MIB
    project = quick_recipe.project("docker-archive-once", model=os.urandom(size))
    archive = tmp_path / "docker.tar"
    built = quick_recipe.build(project, "-o", f"docker-archive:{archive}")
    model = next(layer for layer in built["layers"] if layer["size"] >= size)
    assert model["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
    with tarfile.open(archive) as tf:  # the archive holds it uncompressed: its digest is its diff_id
        assert _sha(tf.extractfile(f"{model['diffID'][7:]}.tar").read()) == model["digest"]  # type: ignore[union-attr]
    proc = run_cli("inspect", f"docker-archive:{archive}", "--json", "--cache-dir", str(tmp_path / "fresh"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["digest"] == built["digest"]
    assert _bytes_under(tmp_path / "fresh") < size // 4  # the base's and deps' layers, not the model
    ref = f"{plain_registry.host}/once/docker-archive:1"
    proc, read = _push_counting_reads("push", "--from", f"docker-archive:{archive}", ref,
                                      "--cache-dir", str(tmp_path / "push-cache"), "--json",
                                      env={"DOCKER_CONFIG": str(tmp_path / "docker-config")})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["digest"] == built["digest"]
    assert size <= read < size + size // 2, f"read {read} bytes for a {size}-byte model"
    r = requests.get(f"{plain_registry.url}/v2/once/docker-archive/blobs/{model['digest']}", timeout=30)
    assert r.status_code == 200 and _sha(r.content) == model["digest"]


def _lying_layout(layout: Path, weights: bytes) -> tuple[dict[str, str], str]:
    """``_layout`` whose config gives its compressed (base) layer a diff_id it does not have;
    its names and the new manifest's digest."""
    names = _layout(layout, weights)
    blobs = layout / "blobs" / "sha256"
    manifest = json.loads((blobs / names["manifest"][7:]).read_bytes())
    config = json.loads((blobs / manifest["config"]["digest"][7:]).read_bytes())
    config["rootfs"]["diff_ids"][0] = "sha256:" + "ab" * 32
    data = json.dumps(config).encode()
    (blobs / _sha(data)[7:]).write_bytes(data)
    manifest["config"] = {**manifest["config"], "digest": _sha(data), "size": len(data)}
    mdata = json.dumps(manifest).encode()
    (blobs / _sha(mdata)[7:]).write_bytes(mdata)
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _sha(mdata), "size": len(mdata)}]}))
    return names, _sha(mdata)


@pytest.mark.parametrize("kind", ["oci", "oci-archive"])
def test_push_from_a_compressed_layer_whose_diff_id_lies_sends_nothing_of_it(tmp_path: Path, plain_registry,  # type: ignore[no-untyped-def]
                                                                              kind: str) -> None:
    """With a fresh cache a compressed layer's diff_id is checked on a thread beside the model's
    upload, not before it: a lie there stops the push in one line naming the layer, the lying
    layer is never sent (it waits for its check), the model's upload is stopped, and no
    manifest or tag is written."""
    layout = tmp_path / "layout"
    names, manifest = _lying_layout(layout, os.urandom(48 * MIB))
    spec = f"oci:{layout}" if kind == "oci" else f"oci-archive:{_archive(layout, tmp_path / 'image.tar')}"
    proc = run_cli("push", "--from", spec, f"{plain_registry.host}/lies/{kind}:1", "--cache-dir", str(tmp_path / "cache"),
                   env={"DOCKER_CONFIG": str(tmp_path / "docker-config")})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("ociassemble: error: ") and f"layer {names['base']} unpacks to diff_id" in line, line
    assert f"config says sha256:{'ab' * 32}" in line, line
    for path in ("manifests/1", f"manifests/{manifest}", f"blobs/{names['base']}"):
        assert requests.head(f"{plain_registry.url}/v2/lies/{kind}/{path}", timeout=30).status_code == 404, path
    assert BlobCache(tmp_path / "cache").verified_diff_id(names["base"]) is None


def test_a_failed_check_is_run_again_by_a_push_tried_again(tmp_path: Path, plain_registry) -> None:  # type: ignore[no-untyped-def]
    """A library caller that pushes again after a failed push (same cache, same image) does not
    get past a check that did not pass: it stays in the cache until it passes."""
    from ociassemble.registry import RegistryOptions
    from ociassemble.registry.push import push_image

    layout = tmp_path / "layout"
    names, _ = _lying_layout(layout, os.urandom(MIB))
    cache = BlobCache(tmp_path / "cache")
    image = load_image(f"oci:{layout}", cache, verify_diff_ids=True, defer=True)
    ref = f"{plain_registry.host}/again/lies:1"
    for _ in range(2):
        with pytest.raises(ArchiveError, match=f"layer {names['base']} unpacks to diff_id"):
            push_image(image, cache, [ref], options=RegistryOptions(docker_config=tmp_path / "docker-config"))
    assert requests.head(f"{plain_registry.url}/v2/again/lies/manifests/1", timeout=30).status_code == 404


@pytest.mark.parametrize("liar_first", [True, False])
def test_a_push_runs_the_checks_of_its_own_image_only(tmp_path: Path, plain_registry, liar_first: bool) -> None:  # type: ignore[no-untyped-def]
    """Two images read into one cache whose configs claim two diff_ids for the same compressed
    layer: each push checks its own image's claim, whichever was read last. The truthful one
    goes up; the lying one is refused in one line, its manifest never written."""
    from ociassemble.registry import RegistryOptions
    from ociassemble.registry.push import push_image

    _layout(tmp_path / "true", os.urandom(MIB))
    names, _ = _lying_layout(tmp_path / "lies", os.urandom(MIB))
    cache = BlobCache(tmp_path / "cache")
    order = ["lies", "true"] if liar_first else ["true", "lies"]
    images = {name: load_image(f"oci:{tmp_path / name}", cache, verify_diff_ids=True, defer=True) for name in order}
    assert images["true"].manifest.layers[0].digest == images["lies"].manifest.layers[0].digest == names["base"]
    options = RegistryOptions(docker_config=tmp_path / "docker-config")
    for name in order:
        ref = f"{plain_registry.host}/claims/{name}:1"
        if name == "true":
            push_image(images[name], cache, [ref], options=options)
            oci = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
            assert requests.head(f"{plain_registry.url}/v2/claims/true/manifests/1", headers=oci,
                                 timeout=30).status_code == 200
        else:
            with pytest.raises(ArchiveError, match=f"layer {names['base']} unpacks to diff_id"):
                push_image(images[name], cache, [ref], options=options)
            assert requests.head(f"{plain_registry.url}/v2/claims/lies/manifests/1", timeout=30).status_code == 404
