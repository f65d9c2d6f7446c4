"""Fixtures shared by every test folder: a private blob cache, the Debian base, the example.

The Debian base (mmdebstrap, ~40 s) is built once and kept in a cache that outlives
test runs (``$OCIASSEMBLE_TEST_CACHE`` or ``~/.cache/ociassemble-test``).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ociassemble.image.cache import BlobCache

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "sklearn-diabetes"


def test_cache_root() -> Path:
    root = Path(os.environ.get("OCIASSEMBLE_TEST_CACHE", Path.home() / ".cache" / "ociassemble-test"))
    root.mkdir(parents=True, exist_ok=True)
    return root


test_cache_root.__test__ = False  # type: ignore[attr-defined]


@pytest.fixture
def cache(tmp_path: Path) -> BlobCache:
    return BlobCache(tmp_path / "cache")


@pytest.fixture(scope="session")
def shared_cache() -> BlobCache:
    """A cache shared by the slow tests of one run (and kept across runs): bases, deps."""
    return BlobCache(test_cache_root() / "cache")


#: Which base ``debian_base`` is: ``mmdebstrap`` (default: ``make-base``'s), ``debs`` (``make-base
#: --from-debs``), or ``debs-python3`` (the essential set and python3 only, from .debs: the recipe
#: adds nginx and runit from its release). The golden digests hold for the default only.
TEST_BASE = os.environ.get("OCIASSEMBLE_TEST_BASE", "mmdebstrap")


@pytest.fixture(scope="session")
def debian_base(shared_cache: BlobCache) -> str:
    """``oci:DIR`` of the bookworm base with python3, nginx-light and runit (``TEST_BASE``)."""
    if TEST_BASE in ("debs", "debs-python3"):
        from ociassemble.azureml.debsbase import BASE_PACKAGES, make_base_from_debs

        target = shared_cache.root / "bases" / f"test-{TEST_BASE}-bookworm-amd64"
        packages = BASE_PACKAGES if TEST_BASE == "debs" else ("usr-is-merged", "python3", "libstdc++6")
        if not (target / "index.json").is_file():
            make_base_from_debs(shared_cache, target, packages=packages, log=lambda m: None)
        return f"oci:{target}"
    if shutil.which("mmdebstrap") is None:
        pytest.fail("mmdebstrap is not installed: .ci/run installs it (apt-get install mmdebstrap)")
    from ociassemble.azureml.debianbase import make_base

    return f"oci:{make_base(shared_cache, log=lambda m: None)}"


@pytest.fixture(scope="session")
def arm64_base(shared_cache: BlobCache) -> str:
    """``oci:DIR`` of the same base for linux/arm64 (``make-base --platform linux/arm64``: mmdebstrap
    --arch=arm64 under qemu, ~3 minutes once; scripts/cross-arch unpacks this one too).
    ``OCIASSEMBLE_TEST_BASE=debs``: ``make-base --from-debs --platform linux/arm64`` (no qemu)."""
    if TEST_BASE == "debs":
        from ociassemble.azureml.debsbase import make_base_from_debs
        from ociassemble.image.platform import parse_platform

        target = shared_cache.root / "bases" / "test-debs-bookworm-arm64"
        if not (target / "index.json").is_file():
            make_base_from_debs(shared_cache, target, platform=parse_platform("linux/arm64"), log=lambda m: None)
        return f"oci:{target}"
    if shutil.which("mmdebstrap") is None:
        pytest.fail("mmdebstrap is not installed: .ci/run installs it (apt-get install mmdebstrap)")
    from ociassemble.azureml.debianbase import make_base
    from ociassemble.image.platform import parse_platform

    return f"oci:{make_base(shared_cache, log=lambda m: None, platform=parse_platform('linux/arm64'))}"


@pytest.fixture(scope="session")
def trained_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the example project with its model trained (scikit-learn on this machine)."""
    dest = tmp_path_factory.mktemp("example") / "sklearn-diabetes"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("model.pkl", "image.tar", "__pycache__"))
    subprocess.run([sys.executable, str(dest / "train.py")], check=True, capture_output=True)
    return dest


def _needs_arm64_base(item: pytest.Item) -> bool:
    """The tests that use the arm64 default base: through the fixture, or scripts/cross-arch's rootfs."""
    return "arm64_base" in getattr(item, "fixturenames", ()) or "test_cross_arch.py" in item.nodeid


def _needs_python_bases(item: pytest.Item) -> bool:
    """The tests that use the Python 3.9 and 3.13 default bases (bullseye, trixie)."""
    return "test_azureml_v1_pythons.py" in item.nodeid


#: the background make-base runs: which tests wait for them, the bases they make, make-base's flags
_BACKGROUND_BASES = (
    (_needs_arm64_base, (("--platform", "linux/arm64"),), "make-base-arm64.log"),
    (_needs_python_bases, (("--python", "3.9"), ("--python", "3.13")), "make-base-pythons.log"),
)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Make the arm64 base (mmdebstrap under qemu, ~3 minutes on a fresh machine) and the Python
    3.9 and 3.13 bases (~1 minute each) in the background while the rest of the suite runs, and
    run the tests that need them last.

    ``make-base`` holds a lock while it works, so a fixture (or scripts/cross-arch) asking for a
    base before it is done waits for this run instead of starting another.
    """
    from ociassemble.azureml.debianbase import default_base_path
    from ociassemble.image.platform import parse_platform

    cache = BlobCache(test_cache_root() / "cache")
    started = []
    for needs, runs, log_name in _BACKGROUND_BASES:
        needing = [item for item in items if needs(item)]
        if not needing or len(needing) == len(items):
            continue
        items[:] = [item for item in items if not needs(item)] + needing
        missing = [flags for flags in runs if not (default_base_path(
            cache, parse_platform(flags[1]) if flags[0] == "--platform" else None,
            flags[1] if flags[0] == "--python" else None) / "index.json").is_file()]
        if not missing or shutil.which("mmdebstrap") is None or os.geteuid() != 0:
            continue  # the fixture fails with the reason when a test needs it
        log = open(test_cache_root() / log_name, "wb")  # noqa: SIM115 (closed at session end)
        # niced: it takes the CPU the tests leave idle (they wait on servers, disks and the network a
        # lot), not theirs; once the tests that need it are reached, nothing else competes
        script = "; ".join(f"subprocess.run(['nice', '-n', '19', sys.executable, '-m', 'ociassemble.cli', 'make-base', "
                           f"{flags[0]!r}, {flags[1]!r}, '--cache-dir', {str(cache.root)!r}])" for flags in missing)
        proc = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys; {script}"], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        started.append((proc, log))
    if started:
        config.stash[_BACKGROUND] = started


_BACKGROUND = pytest.StashKey[tuple]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the background make-base runs if the run ended before they did (by their process
    group, which each was started as: they are ours)."""
    for proc, log in session.config.stash.get(_BACKGROUND, None) or ():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def _loaded_credential_check():  # type: ignore[no-untyped-def]
    """``registry_fixtures.credential_leaks`` if a test of this run uses the test credentials."""
    for name in ("registry_fixtures", "tests.integration.registry_fixtures"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "credential_leaks"):
            return module.credential_leaks
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Fail a passing test whose captured stdout, stderr or log holds the test registry credentials
    (as is, URL-quoted or base64): a grep of the suite's output for them must find nothing."""
    outcome = yield
    report = outcome.get_result()
    check = _loaded_credential_check() if report.passed else None
    if check is None or not report.sections:
        return
    found = check("\n".join(content for name, content in report.sections if name.endswith(f" {report.when}")))
    if found:
        report.outcome = "failed"
        report.longrepr = (f"the test registry credentials appear in what this test printed or logged "
                           f"({report.when}): {', '.join(found)}")


def two_platform_index(cache: BlobCache, src: Path, files: dict[str, bytes]):  # type: ignore[no-untyped-def]
    """An amd64 + arm64 ``ImageIndex`` whose one layer (``files`` under /app) both images share."""
    from ociassemble.image.assemble import ImageBuilder
    from ociassemble.image.imageindex import ImageIndex
    from ociassemble.image.layer import LayerSource, build_layer
    from ociassemble.image.platform import parse_platform

    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    layer = build_layer(cache, [LayerSource(src, "/app")], epoch=0)
    images = []
    for p in ("linux/amd64", "linux/arm64"):
        b = ImageBuilder(cache, None, platform=parse_platform(p))
        b.add_layer(layer, "COPY src /app")
        images.append(b.build(0))
    return ImageIndex.of(images)


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed CLI as a user would (a separate process, real exit code)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "ociassemble.cli", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, input=input, timeout=900)


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range.

    A port from bind(0) is an ephemeral one, and until the server binds it, any outgoing
    connection (the health checks of the other servers starting at the same time) may be
    given it: seen as gunicorn's "Address already in use". Ports below the range are
    never handed out that way.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, max(low, 20001))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port below the ephemeral range")
