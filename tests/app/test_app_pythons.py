"""The app's tests and the differential suite on the other default bases' Pythons: 3.9 (Debian
bullseye) and 3.13 (trixie), with the bases' own interpreters.

tests/app runs on this machine's Python (3.11, bookworm's). For each other Python, the base's
root filesystem (unpacked once into the shared test cache) is the sandbox's read-only root
(bwrap), and two virtual environments of that interpreter are bound in: OURS (the app's pins
for that Python from layers/app-requirements.txt, numpy and pandas for the scripts, pytest and
requests) and the ORACLE's (azureml-inference-server-http 1.5.1, the same gunicorn pin, numpy,
pandas). Both are resolved by pex for the base's complete platform, as a build's deps layer is
(``ociassemble.azureml.deps``), compiled once by that interpreter, and kept in the test cache
(``app-pythons``) keyed by the requirements and the platform: a change of pins resolves again.
pytest then runs the app's unit tests and the differential suite inside (nothing of
ociassemble, which needs Python 3.11, is imported there). The reference server installs on
both Pythons, so each side answers with the same interpreter.

Not run inside: test_app_layers.py (runit and nginx files, the same on every base; it imports
ociassemble) and test_app_models_v1.py (its oracle, azureml-core, lives in a 3.11 venv).

The bases are the default ones for those Pythons (``ociassemble make-base --python 3.9`` /
``--python 3.13``), made from .debs by tests/conftest.default_base when the cache lacks them
(seconds). Cold (resolve and compile both environments): ~2-3 min per Python; warm: ~45 s.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from app_layer_paths import APP_REQUIREMENTS, REPO_ROOT
from differential import ORACLE_PYTHON_VAR, ORACLE_VERSION

from ociassemble.azureml.baseinfo import BaseInfo, inspect_base
from ociassemble.azureml.deps import resolve_deps
from ociassemble.azureml.requirements import read_app_pins
from ociassemble.image.cache import BlobCache
from ociassemble.imageio import load_image
from ociassemble.run.unpack import unpack_image
from tests.conftest import default_base, test_cache_root

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="bwrap over the base's rootfs needs root")]

#: the app's test files that run inside (see the module docstring for those that do not)
SUITE = ["tests/app/test_app_unit.py", "tests/app/test_app_settings.py", "tests/app/test_app_models_shim.py",
         "tests/app/test_app_differential.py"]
#: what the scripts and the tests import besides the app's own pins
TEST_REQUIREMENTS = ["numpy", "pandas", "pytest", "requests"]
SANDBOX_TIMEOUT_S = 900
#: where things are inside the sandbox
SRC, OURS, ORACLE = "/opt/src", "/opt/ours", "/opt/oracle"


def _venv(root: Path, info: BaseInfo) -> Path:
    """A virtual environment of the base's interpreter, as ``python3 -m venv`` lays it out: its
    site-packages folder is left empty, for the resolved one to be bound over it."""
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "python").symlink_to(f"/usr/bin/python{info.python}")
    (root / "lib" / f"python{info.python}" / "site-packages").mkdir(parents=True)
    (root / "pyvenv.cfg").write_text(f"home = /usr/bin\ninclude-system-site-packages = false\n"
                                     f"version = {info.python_full}\n")
    return root


def _site_packages(info: BaseInfo) -> str:
    return f"lib/python{info.python}/site-packages"


def _resolved(cache: BlobCache, name: str, requirements: list[str], info: BaseInfo, work: Path) -> Path:
    """The flat site-packages of ``requirements`` for the base's Python (pex; cached by their text)."""
    file = work / f"{name}-requirements.txt"
    file.write_text("".join(f"{line}\n" for line in requirements))
    return resolve_deps(cache, [file], info).site


def _bwrap(rootfs: Path, binds: list[tuple[str, Path, str]], env: dict[str, str], command: list[str],
           cwd: str = "/") -> list[str]:
    """bwrap over the read-only rootfs: /tmp and /opt are its own, ``binds`` are (option, host path,
    path inside); the host's loopback is shared (the servers and the fake ingestion endpoint)."""
    args = ["bwrap", "--ro-bind", str(rootfs), "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
            "--tmpfs", "/opt", "--share-net", "--unshare-pid", "--die-with-parent", "--clearenv",
            "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp", "--setenv", "LANG", "C.UTF-8"]
    for option, host, inside in binds:
        args += [option, str(host), inside]
    for name, value in env.items():
        args += ["--setenv", name, value]
    return [*args, "--chdir", cwd, *command]


def _compiled(rootfs: Path, info: BaseInfo, sites: dict[str, Path]) -> None:
    """Compile each resolved site-packages once with the base's interpreter, where the venv will see
    it (the sandbox's is read-only: without .pyc files, each of the ~40 servers would compile pandas)."""
    todo = {name: site for name, site in sites.items() if not (site.parent / ".compiled").is_file()}
    if not todo:
        return
    binds = [("--bind", site, f"/opt/{name}/{_site_packages(info)}") for name, site in todo.items()]
    command = ["nice", f"/usr/bin/python{info.python}", "-m", "compileall", "-q", "-j", "2",
               *(inside for _, _, inside in binds)]
    proc = subprocess.run(_bwrap(rootfs, binds, {}, command), capture_output=True, text=True,
                          timeout=SANDBOX_TIMEOUT_S)
    assert proc.returncode == 0, f"compileall in the Python {info.python} base failed:\n{proc.stdout[-3000:]}"
    for site in todo.values():
        (site.parent / ".compiled").write_text("")


@pytest.mark.parametrize("python", ["3.9", "3.13"])
def test_app_suite_on_the_bases_python(python: str, shared_cache: BlobCache, request: pytest.FixtureRequest,
                                       tmp_path: Path) -> None:
    if shutil.which("bwrap") is None:
        pytest.fail("bwrap is not installed: scripts/setup installs it (apt-get install bubblewrap)")
    base = default_base(shared_cache, python=python)
    image = load_image(f"oci:{base}", shared_cache)
    info = inspect_base(image, shared_cache)
    assert info.python == python
    rootfs = unpack_image(image, shared_cache)

    pins = read_app_pins(APP_REQUIREMENTS, python)
    ours = sorted(str(pin.requirement) for pin in pins.values()) + TEST_REQUIREMENTS
    oracle = [f"azureml-inference-server-http=={ORACLE_VERSION}", str(pins["gunicorn"].requirement), "numpy", "pandas"]
    own_cache = BlobCache(test_cache_root() / "app-pythons")
    sites = {"ours": _resolved(own_cache, "ours", ours, info, tmp_path),
             "oracle": _resolved(own_cache, "oracle", oracle, info, tmp_path)}
    _compiled(rootfs, info, sites)

    binds = [("--ro-bind", REPO_ROOT / part, f"{SRC}/{part}") for part in ("pyproject.toml", "tests", "layers")]
    for name, site in sites.items():
        binds += [("--ro-bind", _venv(tmp_path / name, info), f"/opt/{name}"),
                  ("--ro-bind", site, f"/opt/{name}/{_site_packages(info)}")]
    probe = (f"{ORACLE}/bin/python -c 'import sys, importlib.metadata as m; "
             "print(\"oracle:\", sys.version.split()[0], m.version(\"azureml-inference-server-http\"))' && "
             f"exec {OURS}/bin/python -m pytest -p no:cacheprovider --confcutdir={SRC}/tests/app -o addopts= "
             + " ".join(SUITE))
    command = _bwrap(rootfs, binds, {ORACLE_PYTHON_VAR: f"{ORACLE}/bin/python"}, ["/bin/sh", "-c", probe], cwd=SRC)
    proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=SANDBOX_TIMEOUT_S)
    out = proc.stdout
    assert proc.returncode == 0, f"tests/app on Python {python} failed:\n{out[-6000:]}"
    assert f"oracle: {info.python_full} {ORACLE_VERSION}" in out, out[:2000]
    assert re.search(rf"^platform linux -- Python {re.escape(info.python_full)},", out, re.M), out[:2000]
    # every collected test passed: none skipped (e.g. by a missing import), none deselected
    summary = out.rstrip().splitlines()[-1]
    assert re.fullmatch(r"=+ \d+ passed in [\d.]+s(?: \([\d:]+\))? =+", summary), summary
