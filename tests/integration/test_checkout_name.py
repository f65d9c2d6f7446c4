"""Where a checkout sits and what its folder is called never reach the image: the source folder's
in-image name comes from ``source_name`` (default ``src``), so two checkouts of one project in
differently named folders, and a build by a non-root user, give one digest."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from recipe_fixtures import QuickRecipe

from tests.conftest import run_cli

NOBODY = 65534


def _layout_blobs(layout: Path) -> dict[str, bytes]:
    """Every blob of an OCI layout, a gzip layer decompressed (small test images only)."""
    out = {}
    for blob in sorted((layout / "blobs" / "sha256").iterdir()):
        data = blob.read_bytes()
        out[blob.name] = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    return out


def _config(layout: Path) -> dict:
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]).read_text())
    return json.loads((layout / "blobs" / "sha256" / manifest["config"]["digest"].split(":")[1]).read_text())


def _as_nobody(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """The CLI run as uid/gid 65534 with no groups. It keeps CAP_DAC_READ_SEARCH (ambient) only
    so that it can read this test's interpreter wherever it lives (a pyenv under /root is not
    readable by other users); it writes as 65534, which is what this test is about."""
    cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
           "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search",
           sys.executable, "-m", "ociassemble.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "HOME": str(home)})


def test_two_checkouts_and_a_non_root_user_build_one_digest(quick_recipe: QuickRecipe) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("building as another user needs root and setpriv (util-linux)")
    work = quick_recipe.work
    first = quick_recipe.project("checkouts-a9/myproj-7c1")
    second = work / "ci-ws-b3/job@2"
    shutil.copytree(first, second)
    os.utime(second / "score.py", (1_600_000_000, 1_600_000_000))
    a = quick_recipe.build(first, "-o", f"oci:{work / 'out-myproj'}")
    b = quick_recipe.build(second, "-o", f"oci:{work / 'out-job'}")

    # a third checkout owned by, and built by, an unprivileged user, in a cache of its own (the
    # resolved deps copied in, so pex does not run again; every layer is written anew)
    nobody = work / "nobody"
    third = nobody / "builds/job@2"
    shutil.copytree(first, third)
    quick_recipe.fresh_cache(nobody / "cache")
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(nobody)], check=True)
    proc = _as_nobody("build", str(third), "--model", str(third / "model.bin"), "--base", quick_recipe.base,
                      "-o", f"oci:{nobody / 'out'}", "--cache-dir", str(nobody / "cache"), "--json", home=nobody)
    assert proc.returncode == 0, proc.stderr
    c = json.loads(proc.stdout)
    built = sum(c["work"][k] for k in ("layers_compressed", "layers_held_by_reference", "layers_stored_uncompressed"))
    assert built == len(c["layers"]) and not c["work"]["pex_ran"]
    assert (nobody / "out" / "index.json").stat().st_uid == NOBODY

    assert a["digest"] == b["digest"] == c["digest"]
    env = dict(e.split("=", 1) for e in _config(work / "out-myproj")["config"]["Env"])
    assert env["AZUREML_ENTRY_SCRIPT"] == "src/score.py" and env["AZUREML_SOURCE_DIRECTORY"] == "src"
    # distinctive names: the deps layer's own text holds words like "myproject" and "workspace"
    forbidden = [b"myproj-7c1", b"checkouts-a9", b"job@2", b"job_2", b"ci-ws-b3", str(work).encode(), work.name.encode()]
    for out in (work / "out-myproj", work / "out-job", nobody / "out"):
        blobs = _layout_blobs(out)
        assert any(b"var/azureml-app/src/score.py" in data for data in blobs.values())
        for name, data in blobs.items():
            found = [f.decode() for f in forbidden if f in data]
            assert not found, f"blob {name} of {out.name} holds {found}"


def test_source_name_from_the_config_and_the_flag(quick_recipe: QuickRecipe) -> None:
    p = quick_recipe.project("named/proj", config='entry_script = "score.py"\nsource_name = "scoring"\n')
    quick_recipe.build(p, "-o", f"oci:{quick_recipe.work / 'out-named'}")
    cfg = _config(quick_recipe.work / "out-named")
    assert "AZUREML_ENTRY_SCRIPT=scoring/score.py" in cfg["config"]["Env"]
    assert cfg["history"][-1]["created_by"] == "ociassemble: source scoring"
    assert any(b"var/azureml-app/scoring/score.py" in d for d in _layout_blobs(quick_recipe.work / "out-named").values())

    quick_recipe.build(p, "--source-name", "app_v2", "-o", f"oci:{quick_recipe.work / 'out-flag'}")
    assert "AZUREML_ENTRY_SCRIPT=app_v2/score.py" in _config(quick_recipe.work / "out-flag")["config"]["Env"]


@pytest.mark.parametrize("name,pattern", [
    ("a/b", "give one folder name"),
    ("..", "give one folder name"),
    (".hidden", "give one folder name"),
    ("", "give one folder name"),
    ("my src", "give one folder name"),
    ("azureml-models", "is taken by the scoring server"),
    ("wsgi.py", "is taken by the scoring server"),
])
def test_a_bad_source_name_is_refused_in_one_line(quick_recipe: QuickRecipe, name: str, pattern: str) -> None:
    p = quick_recipe.project(f"bad/{abs(hash(name))}")
    for how in (["--source-name", name], []):
        if not how:
            (p / "ociassemble.toml").write_text(f"source_name = {json.dumps(name)}\n")
        proc = run_cli("build", str(p), "--model", str(p / "model.bin"), "--base", quick_recipe.base,
                       "-o", f"oci:{p / 'image'}", "--cache-dir", str(quick_recipe.cache), *how)
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"ociassemble: error: source_name {name!r}"), proc.stderr
        assert pattern in lines[0]
        assert not (p / "image").exists()


def test_init_writes_source_name_into_its_template(tmp_path: Path) -> None:
    from ociassemble.settings import Settings

    assert run_cli("init", str(tmp_path)).returncode == 0
    text = (tmp_path / "ociassemble.toml").read_text()
    assert '# source_name = "src"' in text
    (tmp_path / "ociassemble.toml").write_text(text.replace('# source_name = "src"', 'source_name = "serving"'))
    assert Settings.load(tmp_path, environ={}).source_name == "serving"
