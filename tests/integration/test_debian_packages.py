"""Debian packages from a repository: a mini repository made here (real .debs by dpkg-deb, a
Release signed by gpg, served on loopback) and tampered copies of it; the real archive through
the machine's apt sources for an unknown name. Each bad input: one line, exit 1, nothing cached."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from recipe_fixtures import QuickRecipe

from ociassemble.debian.install import packages_layer
from ociassemble.debian.repository import Target, open_repository
from ociassemble.debian.status import installed_from_status
from ociassemble.image.cache import BlobCache
from ociassemble.image.compress import Compression
from tests.conftest import run_cli, test_cache_root
from tests.hostarch import HOST, HOST_DEB
from tests.integration.debian_repo import ARCH, MiniRepo, make_repo, serve

#: tarfile's extraction filter where this Python has it (3.11.4+; Debian bookworm's 3.11.2 has none)
_TAR_FILTER = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}

#: a base built here has this machine's libc6 (a recipe refuses a base whose label and packages differ)
BASE_STATUS = (f"Package: libc6\nStatus: install ok installed\nArchitecture: {HOST_DEB}\nVersion: 2.36-9\n"
               "Description: the C library\n\n")


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MiniRepo]:
    tmp = tmp_path_factory.mktemp("mini-repo")
    yield make_repo(tmp)
    # gpg started an agent for the repository's signing key: ours, ended with its home
    subprocess.run(["gpgconf", "--homedir", str(tmp / "gnupg"), "--kill", "gpg-agent"], check=False, capture_output=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A scoring project and a tiny Debian-like rootfs base (os-release, dpkg status, the programs' names)."""
    root = tmp_path_factory.mktemp("apt-project")
    proj = root / "proj"
    proj.mkdir()
    (proj / "score.py").write_text("def init():\n    pass\n\ndef run(data):\n    return data\n")
    base = root / "base"
    for path in ("usr/bin/python3.11", "usr/sbin/nginx", "usr/bin/runsvdir"):
        (base / path).parent.mkdir(parents=True, exist_ok=True)
        (base / path).write_text("#!/bin/sh\n")
    (base / "usr/bin/python3").symlink_to("python3.11")
    (base / "bin").symlink_to("usr/bin")
    (base / "etc").mkdir()
    (base / "etc/os-release").write_text('ID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n')
    (base / "var/lib/dpkg").mkdir(parents=True)
    (base / "var/lib/dpkg/status").write_text(BASE_STATUS)
    return proj, base


def _build(project: tuple[Path, Path], cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proj, base = project
    return run_cli("build", str(proj), "--base", f"rootfs:{base}", "--cache-dir", str(cache),
                   "-o", f"oci-archive:{cache.parent / 'out.tar'}", *args)


def _one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    assert proc.returncode == 1, proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("ociassemble: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for w in words:
        assert w in errors[0], errors[0]
    return errors[0]


def _blob_names(cache: Path) -> set[str]:
    return {p.name for p in (cache / "blobs/sha256").iterdir()} if (cache / "blobs/sha256").is_dir() else set()


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_packages_layer_is_dpkg_readable_and_deterministic(mini: MiniRepo, tmp_path: Path) -> None:
    url, server = serve(mini.root)
    try:
        diff_ids = []
        for n in (1, 2):
            cache = BlobCache(tmp_path / f"cache{n}")
            repo = open_repository(cache, Target("debian", "bookworm", ARCH), apt_mirror=url, keyring=mini.keyring)
            chosen = repo.resolve(["tool"], installed_from_status(BASE_STATUS))
            assert [(p.name, p.version) for p in chosen] == [("libthing", "1.2-1"), ("tool", "1.0-1")]
            made = packages_layer(cache, repo.fetcher, chosen, base_status=BASE_STATUS, merged_usr=True,
                                  compression=Compression("gzip"), epoch=0)
            diff_ids.append(made.layer.diff_id)
        assert diff_ids[0] == diff_ids[1]
    finally:
        server.shutdown()
    rootfs = tmp_path / "rootfs"
    with tarfile.open(cache.path(made.layer.descriptor.digest)) as tf:
        tf.extractall(rootfs, **_TAR_FILTER)
    admin = str(rootfs / "var/lib/dpkg")
    listed = subprocess.run(["dpkg-query", "--admindir", admin, "-W", "-f", "${Package} ${Version}\n"],
                            capture_output=True, text=True, check=True).stdout.split("\n")
    assert {"libc6 2.36-9", "libthing 1.2-1", "tool 1.0-1"} <= set(listed)
    conffiles = subprocess.run(["dpkg-query", "--admindir", admin, "-W", "-f", "${Conffiles}", "tool"],
                               capture_output=True, text=True, check=True).stdout
    assert "/etc/tool.conf" in conffiles and (rootfs / "etc/tool.conf").read_text() == "setting = 1\n"
    files = subprocess.run(["dpkg-query", "--admindir", admin, "-L", "tool"], capture_output=True, text=True,
                           check=True).stdout.split()
    assert "/usr/bin/tool" in files and (rootfs / "usr/bin/tool").read_text() == "tool 1.0-1\n"


def test_unknown_package_in_the_real_archive(project: tuple[Path, Path]) -> None:
    """The machine's apt sources (Debian's archive): a name bookworm does not have."""
    cache = test_cache_root() / "debian-apt-cache" / "cache"
    err = _one_line_error(_build(project, cache, "--apt-package", "no-such-package-ociassemble"),
                          "no-such-package-ociassemble", f"debian bookworm {HOST_DEB}")
    assert "Traceback" not in err


def test_unsatisfiable_dependency(mini: MiniRepo, project: tuple[Path, Path], tmp_path: Path) -> None:
    url, server = serve(mini.root)
    try:
        _one_line_error(_build(project, tmp_path / "cache", "--apt-package", "broken", "--apt-mirror", url,
                               "--apt-keyring", str(mini.keyring)), "broken 2.0-1 depends on missing-lib (>= 2)")
        _one_line_error(_build(project, tmp_path / "cache", "--apt-package", "nope", "--apt-mirror", url,
                               "--apt-keyring", str(mini.keyring)), "no package 'nope'")
    finally:
        server.shutdown()


def test_deb_whose_hash_differs(mini: MiniRepo, project: tuple[Path, Path], tmp_path: Path) -> None:
    bad = mini.copy(tmp_path / "repo")
    deb = bad.deb("libthing")
    expected = _sha(deb)
    data = bytearray(deb.read_bytes())
    data[-100] ^= 0xFF  # same size, other bytes
    deb.write_bytes(bytes(data))
    url, server = serve(bad.root)
    try:
        cache = tmp_path / "cache"
        _one_line_error(_build(project, cache, "--apt-package", "tool", "--apt-mirror", url,
                               "--apt-keyring", str(bad.keyring)), "libthing 1.2-1", "does not match the SHA256")
    finally:
        server.shutdown()
    assert not {expected, _sha(deb)} & _blob_names(cache)


def test_inrelease_with_a_bad_signature(mini: MiniRepo, project: tuple[Path, Path], tmp_path: Path) -> None:
    bad = mini.copy(tmp_path / "repo")
    inrelease = bad.root / "dists/bookworm/InRelease"
    inrelease.write_text(inrelease.read_text().replace("Origin: test", "Origin: tampered"))
    packages = bad.root / f"dists/bookworm/main/binary-{ARCH}/Packages.gz"
    url, server = serve(bad.root)
    try:
        cache = tmp_path / "cache"
        _one_line_error(_build(project, cache, "--apt-package", "tool", "--apt-mirror", url,
                               "--apt-keyring", str(bad.keyring)), "InRelease is not signed by a key of")
    finally:
        server.shutdown()
    assert _sha(packages) not in _blob_names(cache)


def test_packages_index_that_does_not_match_the_release(mini: MiniRepo, project: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    bad = mini.copy(tmp_path / "repo")
    packages = bad.root / f"dists/bookworm/main/binary-{ARCH}/Packages.gz"
    expected = _sha(packages)
    text = gzip.decompress(packages.read_bytes()).replace(b"Version: 1.2-1", b"Version: 9.9-1")
    packages.write_bytes(gzip.compress(text, mtime=0))
    url, server = serve(bad.root)
    try:
        cache = tmp_path / "cache"
        _one_line_error(_build(project, cache, "--apt-package", "tool", "--apt-mirror", url,
                               "--apt-keyring", str(bad.keyring)), "Packages.gz", "does not match the SHA256")
    finally:
        server.shutdown()
    assert not {expected, _sha(packages)} & _blob_names(cache)


def test_plain_build_adds_the_packages_over_any_debian_base(mini: MiniRepo, project: tuple[Path, Path],
                                                           tmp_path: Path) -> None:
    """``build --plain --base B --apt-package NAME``: one layer over the base; inspect names it with its version."""
    _, base = project
    url, server = serve(mini.root)
    try:
        proc = run_cli("build", "--plain", "--base", f"rootfs:{base}", "--apt-package", "tool", "--apt-mirror", url,
                       "--apt-keyring", str(mini.keyring), "--cache-dir", str(tmp_path / "cache"),
                       "-o", f"oci:{tmp_path / 'out'}", "--json")
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stderr
    assert [l["what"] for l in json.loads(proc.stdout)["layers"]] == ["debian-packages"]
    shown = run_cli("inspect", f"oci:{tmp_path / 'out'}", "--json")
    assert "debian packages libthing=1.2-1 tool=1.0-1" in shown.stdout


def _debian_layer(doc: dict) -> str:
    (layer,) = [l for l in doc["layers"] if l["what"] == "debian-packages"]
    return layer["digest"]


def test_lock_pins_the_debs_and_a_locked_build_takes_exactly_them(mini: MiniRepo, quick_recipe: QuickRecipe,
                                                                  tmp_path: Path) -> None:
    """Locked with tool 1.0-1; the archive moves to 1.1-1 (re-signed, 1.0-1 left in the pool): the locked
    build on a cache without the .debs gives the same layer and image, the unlocked one takes 1.1-1; a
    changed locked .deb and one gone from the mirror are refused in one line; a new apt package makes
    ``--locked`` fail in one line. pex locks once and installs the locked set once (shared by the builds)."""
    repo = mini.copy(tmp_path / "repo")
    base = tmp_path / "debian-like-base"
    shutil.copytree(Path(quick_recipe.base.removeprefix("rootfs:")), base, symlinks=True)
    (base / "etc").mkdir(exist_ok=True)
    (base / "etc/os-release").write_text('ID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n')
    proj = quick_recipe.project("apt-locked", config='apt = ["tool"]\n')
    url, server = serve(repo.root)
    apt = ["--apt-mirror", url, "--apt-keyring", str(repo.keyring)]

    def build(cache: Path, out: str, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli("build", str(proj), "--model", str(proj / "model.bin"), "--base", f"rootfs:{base}",
                       "--cache-dir", str(cache), "-o", f"oci:{tmp_path / out}", "--json", *apt, *args)

    def deps_only(src: Path, dest: Path) -> Path:
        dest.mkdir()
        shutil.copytree(src / "deps", dest / "deps", symlinks=True)
        return dest

    try:
        cache1 = tmp_path / "cache1"
        locked = run_cli("lock", str(proj), "--base", f"rootfs:{base}", "--cache-dir", str(cache1), "--json", *apt)
        assert locked.returncode == 0, locked.stderr
        assert json.loads(locked.stdout)["platforms"][str(HOST)]["debian"] == {"libthing": "1.2-1", "tool": "1.0-1"}
        lock_text = (proj / "ociassemble.lock").read_text()
        debs = json.loads(lock_text)["platforms"][str(HOST)]["debian"]
        assert [(d["name"], d["version"], d["arch"], d["filename"], d["sha256"]) for d in debs] == [
            (n, v, ARCH, f"pool/{n}_{v}_{ARCH}.deb", _sha(repo.deb(n, v))) for n, v in (("libthing", "1.2-1"),
                                                                                        ("tool", "1.0-1"))]
        assert "127.0.0.1" not in json.dumps(debs)  # a pool path, never the mirror

        first = build(cache1, "one", "--locked")
        assert first.returncode == 0, first.stderr
        one = json.loads(first.stdout)

        repo.publish("tool", "1.1-1", tmp_path / "debs")
        # a fresh runner (the .debs and layers not cached; the locked deps are, pex installed them above)
        second = build(deps_only(cache1, tmp_path / "cache2"), "two", "--locked")
        assert second.returncode == 0, second.stderr
        assert "debian packages libthing=1.2-1 tool=1.0-1" in run_cli("inspect", f"oci:{tmp_path / 'two'}").stdout
        two = json.loads(second.stdout)
        assert (_debian_layer(two), two["digest"]) == (_debian_layer(one), one["digest"])

        shutil.move(proj / "ociassemble.lock", tmp_path / "saved.lock")
        fresh = build(quick_recipe.fresh_cache(tmp_path / "cache3"), "three")
        assert fresh.returncode == 0, fresh.stderr
        assert "debian packages libthing=1.2-1 tool=1.1-1" in run_cli("inspect", f"oci:{tmp_path / 'three'}").stdout
        assert _debian_layer(json.loads(fresh.stdout)) != _debian_layer(one)
        shutil.move(tmp_path / "saved.lock", proj / "ociassemble.lock")

        old = repo.deb("tool", "1.0-1")
        expected = _sha(old)
        data = bytearray(old.read_bytes())
        data[-100] ^= 0xFF  # same size, other bytes
        old.write_bytes(bytes(data))
        cache4 = deps_only(cache1, tmp_path / "cache4")
        _one_line_error(build(cache4, "four", "--locked"), "tool 1.0-1", "sha256", expected,
                        "ociassemble lock --upgrade")
        assert not {expected, _sha(old)} & _blob_names(cache4)
        old.unlink()  # Debian's archive drops a superseded .deb after a while
        _one_line_error(build(deps_only(cache1, tmp_path / "cache5"), "five", "--locked"), "tool 1.0-1",
                        "no longer on the mirror", "ociassemble lock --upgrade")
    finally:
        server.shutdown()

    (proj / "ociassemble.toml").write_text('apt = ["tool", "libgomp1"]\n')
    proc = run_cli("build", str(proj), "--model", str(proj / "model.bin"), "--base", f"rootfs:{base}",
                   "--cache-dir", str(tmp_path / "cache6"), "-o", f"oci:{tmp_path / 'six'}", "--locked")
    _one_line_error(proc, "ociassemble.lock", "apt packages")
    assert not (tmp_path / "six").exists()
    assert (proj / "ociassemble.lock").read_text() == lock_text
