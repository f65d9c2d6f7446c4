"""docs/library.md's example runs as written (only its settings lines pointed at this test's
cache, folders, bases and registry): every job it shows (build, push, inspect, pull, verify, run) is
called as a program calls it, and builds the digests the CLI builds from the same inputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from recipe_fixtures import QuickRecipe
from registry_fixtures import Registry

from ociassemble.image.cache import BlobCache
from ociassemble.registry import pull_image
from tests.conftest import run_cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "library.md"


def _example() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, "docs/library.md has one example"
    return blocks[0]


def _with_settings(code: str, **settings: str) -> str:
    """The example with each ``name = …`` settings line replaced (each must be there, once)."""
    for name, value in settings.items():
        code, n = re.subn(rf"^{name} = .*$", lambda _: f"{name} = {value}", code, flags=re.MULTILINE)
        assert n == 1, f"the example no longer sets {name!r} on a line of its own"
    return code


def test_the_library_example_runs_and_matches_the_cli(quick_recipe: QuickRecipe, plain_registry: Registry,
                                                      debian_base: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    project = quick_recipe.project(f"lib-doc-{tmp_path.name}")
    cache_dir = quick_recipe.fresh_cache(tmp_path / "cache")
    code = _with_settings(_example(), cache_dir=f"Path({str(cache_dir)!r})",
                          project_dir=f"Path({str(project)!r})", base=repr(quick_recipe.base),
                          shell_base=repr(debian_base), registry=repr(plain_registry.host))
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(compile(code, str(DOC), "exec"), scope)  # noqa: S102 - the doc's own code, run as a reader would
    printed = capsys.readouterr().out
    built, plain, ran = scope["built"], scope["plain"], scope["ran"]
    assert (tmp_path / "model-image" / "index.json").is_file() and (tmp_path / "site.tar").is_file()
    assert (tmp_path / "pulled.tar").is_file() and scope["report"].equal  # type: ignore[attr-defined]
    assert f"{plain.digest} 0" in printed and ran.status == 0  # type: ignore[attr-defined]
    assert built.to_json()["digest"] == built.digest  # type: ignore[attr-defined]

    # what the registry holds is that image
    assert pull_image(f"{plain_registry.host}/team/model:1.0", BlobCache(tmp_path / "pull")).digest == \
        built.digest  # type: ignore[attr-defined]
    # inspect: the document the CLI prints for the same image
    res = run_cli("inspect", f"{plain_registry.host}/team/model:1.0", "--json", "--cache-dir", str(tmp_path / "ic"),
                  env={"DOCKER_CONFIG": str(tmp_path / "docker-config")})
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == scope["shown"].to_json()  # type: ignore[attr-defined]
    assert scope["shown"].to_json()["digest"] == built.digest  # type: ignore[attr-defined]
    # the CLI builds the same digests from the same inputs
    (tmp_path / "cli").mkdir()
    res = run_cli("build", str(project), "--model", str(project / "model.bin"), "--base", quick_recipe.base,
                  "--cache-dir", str(cache_dir), "-o", f"oci:{tmp_path / 'cli' / 'image'}", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["digest"] == built.digest  # type: ignore[attr-defined]
    res = run_cli("build", "--plain", "--base", debian_base, "--layer", "site:/srv/site", "-e", "LANG=C.UTF-8",
                  "--cmd", '["/bin/sh", "-c", "test -s /srv/site/index.html"]', "--cache-dir", str(cache_dir),
                  "-o", f"oci:{tmp_path / 'cli' / 'site'}", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["digest"] == plain.digest  # type: ignore[attr-defined]
