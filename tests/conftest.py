"""Fixtures shared by every test folder: a private blob cache, the Debian base, the example.

The Debian bases (``make-base``'s, from .debs: seconds each, no qemu even for arm64) are made
once, when a test first asks, and kept in a cache that outlives test runs
(``$OCIASSEMBLE_TEST_CACHE`` or ``~/.cache/ociassemble-test``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ociassemble.image.cache import BlobCache
from tests.ports import free_port  # noqa: F401 (the tests import it from here)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "sklearn-diabetes"


def test_cache_root() -> Path:
    root = Path(os.environ.get("OCIASSEMBLE_TEST_CACHE", Path.home() / ".cache" / "ociassemble-test"))
    root.mkdir(parents=True, exist_ok=True)
    return root


test_cache_root.__test__ = False  # type: ignore[attr-defined]


@pytest.fixture(scope="session", autouse=True)
def _own_pip_config(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The tests' own (empty) pip configuration file, unless a test names another.

    ociassemble reads pip's configuration files as pip does; a file named by PIP_CONFIG_FILE
    replaces the user's (``~/.config/pip/pip.conf``: a developer's mirrors), so no test builds from
    their index settings: the tests resolve as they did before pip.conf was read. The site-wide
    files (/etc/xdg/pip, /etc/pip.conf) are read as before, by pex's pip too.
    """
    if "PIP_CONFIG_FILE" in os.environ:  # the runner chose (e.g. /dev/null): theirs
        yield
        return
    conf = tmp_path_factory.mktemp("pip-config") / "pip.conf"
    conf.write_text("# the test suite's: no index settings of the machine's user files\n")
    os.environ["PIP_CONFIG_FILE"] = str(conf)
    try:
        yield
    finally:
        os.environ.pop("PIP_CONFIG_FILE", None)


@pytest.fixture
def cache(tmp_path: Path) -> BlobCache:
    return BlobCache(tmp_path / "cache")


@pytest.fixture(scope="session")
def shared_cache() -> BlobCache:
    """A cache shared by the slow tests of one run (and kept across runs): bases, deps."""
    return BlobCache(test_cache_root() / "cache")


#: Which base ``debian_base`` is: ``debs`` (default: ``make-base``'s, from .debs), ``mmdebstrap``
#: (``make-base --with-mmdebstrap``, in a cache of its own: ``cache-mmdebstrap``), or ``debs-python3``
#: (the essential set and python3 only, from .debs: the recipe adds nginx and runit from its release).
TEST_BASE = os.environ.get("OCIASSEMBLE_TEST_BASE", "debs")


def _made_from_debs(layout: Path) -> bool:
    """Whether the base at ``layout`` was made from .debs (its one history line says so), not by
    mmdebstrap (a test cache from before .debs were the default holds such bases)."""
    import json

    blob = lambda d: json.loads((layout / "blobs/sha256" / d.split(":", 1)[1]).read_bytes())  # noqa: E731
    manifest = blob(json.loads((layout / "index.json").read_bytes())["manifests"][0]["digest"])
    return any(h.get("created_by", "").startswith("ociassemble: debian ") for h in blob(manifest["config"]["digest"])["history"])


def default_base(cache: BlobCache, **kw: object) -> Path:
    """``make-base``'s default base (``make_base`` keywords: platform, python) in ``cache``, made
    once from .debs (seconds; under make-base's lock, so concurrent runs make it once); one an
    older test cache holds that mmdebstrap made is made again, so the suite tests the default."""
    from ociassemble.azureml.debianbase import make_base

    path = make_base(cache, log=lambda m: None, **kw)  # type: ignore[arg-type]
    if not _made_from_debs(path):
        path = make_base(cache, log=lambda m: None, force=True, **kw)  # type: ignore[arg-type]
    return path


def _mmdebstrap_base(**kw: object) -> str:
    if shutil.which("mmdebstrap") is None:
        pytest.fail("mmdebstrap is not installed (OCIASSEMBLE_TEST_BASE=mmdebstrap): apt-get install mmdebstrap")
    from ociassemble.azureml.debianbase import make_base

    cache = BlobCache(test_cache_root() / "cache-mmdebstrap")
    return f"oci:{make_base(cache, log=lambda m: None, with_mmdebstrap=True, **kw)}"  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def debian_base(shared_cache: BlobCache) -> str:
    """``oci:DIR`` of the bookworm base with python3, nginx-light and runit (``TEST_BASE``)."""
    if TEST_BASE == "debs-python3":
        from ociassemble.azureml.debsbase import make_base_from_debs

        from tests.hostarch import HOST_DEB

        target = shared_cache.root / "bases" / f"test-debs-python3-bookworm-{HOST_DEB}"
        if not (target / "index.json").is_file():
            make_base_from_debs(shared_cache, target, packages=("usr-is-merged", "python3", "libstdc++6"),
                                log=lambda m: None)
        return f"oci:{target}"
    if TEST_BASE == "mmdebstrap":
        return _mmdebstrap_base()
    return f"oci:{default_base(shared_cache)}"


def _base_for(shared_cache: BlobCache, name: str) -> str:
    """``oci:DIR`` of the default base for platform ``name`` (``TEST_BASE``'s kind: from .debs, or
    by mmdebstrap), made for any platform on any host: from .debs no qemu is needed."""
    from ociassemble.image.platform import parse_platform

    if TEST_BASE == "mmdebstrap":
        return _mmdebstrap_base(platform=parse_platform(name))
    return f"oci:{default_base(shared_cache, platform=parse_platform(name))}"


@pytest.fixture(scope="session")
def arm64_base(shared_cache: BlobCache) -> str:
    """``oci:DIR`` of the same base for linux/arm64 (``make-base --platform linux/arm64``: from .debs,
    no qemu, seconds; scripts/cross-arch unpacks this one too). ``OCIASSEMBLE_TEST_BASE=mmdebstrap``:
    ``make-base --with-mmdebstrap --platform linux/arm64`` (its scripts under qemu, ~3 minutes once)."""
    return _base_for(shared_cache, "linux/arm64")


@pytest.fixture(scope="session")
def amd64_base(shared_cache: BlobCache) -> str:
    """``oci:DIR`` of the same base for linux/amd64, whatever this machine is (a multi-platform
    test needs one of each; ``debian_base`` is this machine's)."""
    return _base_for(shared_cache, "linux/amd64")


@pytest.fixture(scope="session")
def foreign_base(shared_cache: BlobCache) -> str:
    """``oci:DIR`` of the same base for the architecture this machine emulates (``tests.hostarch.FOREIGN``:
    arm64 on an amd64 host, amd64 on an arm64 one)."""
    from tests.hostarch import FOREIGN_NAME

    return _base_for(shared_cache, FOREIGN_NAME)


@pytest.fixture(scope="session")
def trained_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the example project with its model trained (scikit-learn on this machine)."""
    dest = tmp_path_factory.mktemp("example") / "sklearn-diabetes"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("model.pkl", "image.tar", "__pycache__"))
    subprocess.run([sys.executable, str(dest / "train.py")], check=True, capture_output=True)
    return dest


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
