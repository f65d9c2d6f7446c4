"""A quick scoring-image recipe for integration tests: a tiny fake Debian rootfs as the base and a
blob cache whose Python deps (the app's own: flask, gunicorn, …) pex resolves once per session.

The base only has to *look* like Debian with Python 3.11, nginx and runit (the recipe reads it,
never runs it), so a build takes about a second once the deps are resolved; the real default
base (``debian_base``) is for tests that run the image. Everything sits in a folder under /tmp
that any user can traverse, so a test can build as a non-root user too.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.unit.test_recipe_inputs import GOOD_SCORE, fake_base


@dataclass(frozen=True)
class QuickRecipe:
    """``work`` (world-traversable), ``base`` (``rootfs:…`` spec) and ``cache`` (deps resolved)."""

    work: Path
    base: str
    cache: Path

    def project(self, name: str, *, score: str = GOOD_SCORE, model: bytes = b"a tiny model\n",
                config: str | None = None) -> Path:
        """A project folder ``work/<name>``: score.py, model.bin and, if given, an ociassemble.toml."""
        p = self.work / name
        p.mkdir(parents=True)
        (p / "score.py").write_text(score)
        (p / "model.bin").write_bytes(model)
        if config is not None:
            (p / "ociassemble.toml").write_text(config)
        return p

    def inputs(self, project: Path, cache: Path | None = None) -> list[str]:
        """The flags that build ``project``: ``PROJECT --model PROJECT/model.bin --base … --cache-dir …``."""
        return [str(project), "--model", str(project / "model.bin"), "--base", self.base,
                "--cache-dir", str(cache or self.cache)]

    def fresh_cache(self, path: Path) -> Path:
        """An empty cache at ``path`` but for the resolved deps (pex need not run again)."""
        path.mkdir(parents=True)
        shutil.copytree(self.cache / "deps", path / "deps", symlinks=True)
        return path

    def build(self, project: Path, *args: str, cache: Path | None = None) -> dict:
        """``ociassemble build PROJECT --model PROJECT/model.bin --base … ARGS --json``: its result."""
        proc = run_cli("build", *self.inputs(project, cache), "--json", *args)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)


@pytest.fixture(scope="session")
def quick_recipe() -> Iterator[QuickRecipe]:
    work = Path(tempfile.mkdtemp(prefix="ociassemble-quick-recipe-", dir="/tmp"))
    try:
        work.chmod(0o755)
        base = fake_base(work / "base")
        recipe = QuickRecipe(work, f"rootfs:{base}", work / "cache")
        recipe.build(recipe.project("warm-up"), "-o", f"oci:{work / 'warm-up-image'}")  # pex runs here, once
        yield recipe
    finally:
        shutil.rmtree(work, ignore_errors=True)
