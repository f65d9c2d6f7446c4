"""The copy-paste CI recipes (examples/ci/) parse, keep secrets out of argv, and their ociassemble
commands, taken from the YAML's run:/script: steps as written, work against a real registry."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from ociassemble.image.cache import BlobCache
from tests.conftest import REPO, run_cli

RECIPES = REPO / "examples" / "ci"
GITHUB = RECIPES / "github-actions.yml"
GITLAB = RECIPES / "gitlab-ci.yml"
#: the command word at the start of a line or after a pipe (not `pip install ociassemble`)
_INVOKES = re.compile(r"(?:^|\|)\s*ociassemble\s")


def _commands(script: str) -> list[str]:
    """The shell commands of a run:/script: text that invoke ociassemble (continuations joined)."""
    joined = re.sub(r"\\\n\s*", " ", script)
    return [line.strip() for line in joined.splitlines() if _INVOKES.search(line)]


def _github_steps(doc: dict) -> list[tuple[dict[str, str], str]]:
    """(job env + step env, run text) for every run: step of every job."""
    out = []
    for job in doc["jobs"].values():
        for step in job["steps"]:
            if "run" in step:
                out.append(({**job.get("env", {}), **step.get("env", {})}, step["run"]))
    return out


def _gitlab_jobs(doc: dict) -> list[tuple[dict[str, str], list[str]]]:
    """(variables, before_script + script) of every job (a mapping with a script)."""
    out = []
    for job in doc.values():
        if isinstance(job, dict) and "script" in job:
            out.append(({**doc.get("variables", {}), **job.get("variables", {})},
                        list(job.get("before_script", [])) + list(job["script"])))
    return out


def test_recipes_parse_and_keep_secrets_out_of_argv() -> None:
    github = yaml.safe_load(GITHUB.read_text())
    gitlab = yaml.safe_load(GITLAB.read_text())
    gh_cmds = [c for _, run in _github_steps(github) for c in _commands(run)]
    gl_cmds = [c for _, lines in _gitlab_jobs(gitlab) for line in lines for c in _commands(line)]
    for cmds in (gh_cmds, gl_cmds):
        verbs = [re.search(r"ociassemble (\S+)", c).group(1) for c in cmds]  # type: ignore[union-attr]
        assert {"login", "push", "inspect"} <= set(verbs), cmds
        login = next(c for c in cmds if "ociassemble login" in c)
        assert "--password-stdin" in login and login.index("|") < login.index("ociassemble login")
        push = next(c for c in cmds if "ociassemble push" in c)
        assert "--sbom" in push and "--digest-file" in push
        for c in cmds:
            assert not re.search(r"--password(?!-stdin)|-p\s", c), c
    # no docker daemon anywhere: no docker:dind service, no docker command, no privileged runner
    for doc in (github, gitlab):
        text = json.dumps(doc)  # what CI runs (comments dropped)
        assert "dind" not in text and "docker build" not in text and "docker login" not in text
        assert "privileged" not in text and "services" not in text


#: What GitHub would put in for each ${{ … }} expression the recipe uses.
_GITHUB_EXPRESSIONS = {
    "github.repository": "team/my-model",
    "github.repository_owner": "team",
    "github.actor": "ci-bot",
    "secrets.GITHUB_TOKEN": "test-token",
}


def _github_expr(value: str, registry: str) -> str:
    def sub(m: re.Match[str]) -> str:
        expr = m.group(1).strip()
        assert expr in _GITHUB_EXPRESSIONS, f"the recipe uses ${{{{ {expr} }}}}: add it to the test's table"
        return _GITHUB_EXPRESSIONS[expr]

    return re.sub(r"\$\{\{(.*?)\}\}", sub, str(value)).replace("ghcr.io", registry)


def _expand(value: str, env: dict[str, str]) -> str:
    """GitLab's expansion of $VAR / ${VAR} inside variables."""
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m.group(1), ""), str(value))


def _run(commands: list[str], env: dict[str, str], cwd: Path) -> list[subprocess.CompletedProcess[str]]:
    done = []
    for command in commands:
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", command], check=False, cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, f"{command}\nexit {proc.returncode}\n{proc.stderr}"
        assert "\x1b" not in proc.stdout + proc.stderr  # a CI log is not a terminal
        done.append(proc)
    return done


def _base_env(tmp_path: Path, shared_cache: BlobCache) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCIASSEMBLE_", "GITHUB_", "CI_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the installed CLI
    env["CI"] = "true"
    return env


def _publish_base(debian_base: str, ref: str, cache: BlobCache) -> None:
    proc = run_cli("push", ref, "--from", debian_base, "--cache-dir", str(cache.root), "-q")
    assert proc.returncode == 0, proc.stderr


def _check_pushed(registry: str, repo: str, digest_file: Path, inspect_out: str) -> None:
    digest = digest_file.read_text().strip()
    assert digest.startswith("sha256:") and digest in inspect_out
    assert "runsvdir" in inspect_out  # the scoring image's Cmd
    sbom = requests.get(f"http://{registry}/v2/{repo}/manifests/sha256-{digest[7:]}.sbom", timeout=10,
                        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert sbom.status_code == 200 and sbom.json()["subject"]["digest"] == digest


@pytest.mark.slow
def test_github_actions_recipe_pushes(plain_registry, debian_base: str, trained_example: Path,
                                      shared_cache: BlobCache, tmp_path: Path) -> None:
    host = plain_registry.host
    _publish_base(debian_base, f"{host}/team/azureml-base:bookworm", shared_cache)
    project = tmp_path / "project"
    shutil.copytree(trained_example, project)
    doc = yaml.safe_load(GITHUB.read_text())
    outputs = []
    for step_env, run in _github_steps(doc):
        commands = _commands(run)
        if not commands:
            continue
        env = _base_env(tmp_path, shared_cache)
        env.update({k: _github_expr(v, host) for k, v in step_env.items()})
        env.update({"GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567", "GITHUB_SERVER_URL": "https://github.com",
                    "GITHUB_REPOSITORY": "team/my-model", "OCIASSEMBLE_CACHE": str(shared_cache.root)})
        outputs += _run(commands, env, project)
    _check_pushed(host, "team/my-model", project / "digest.txt", outputs[-1].stdout)
    tags = run_cli("inspect", f"{host}/team/my-model:0123456789ab", "--json")
    assert json.loads(tags.stdout)["digest"] == (project / "digest.txt").read_text().strip()


@pytest.mark.slow
def test_gitlab_ci_recipe_pushes(plain_registry, debian_base: str, trained_example: Path,
                                 shared_cache: BlobCache, tmp_path: Path) -> None:
    host = plain_registry.host
    project = tmp_path / "project"
    shutil.copytree(trained_example, project)
    predefined = {"CI_REGISTRY": host, "CI_REGISTRY_IMAGE": f"{host}/team/my-model", "CI_REGISTRY_USER": "gitlab-ci-token",
                  "CI_REGISTRY_PASSWORD": "test-job-token", "CI_COMMIT_SHA": "89abcdef0123456789abcdef0123456789abcdef",
                  "CI_COMMIT_SHORT_SHA": "89abcdef", "CI_PROJECT_URL": "https://gitlab.example.com/team/my-model",
                  "CI_PROJECT_DIR": str(project)}
    _publish_base(debian_base, f"{host}/team/my-model/azureml-base:bookworm", shared_cache)
    doc = yaml.safe_load(GITLAB.read_text())
    outputs = []
    for variables, lines in _gitlab_jobs(doc):
        env = _base_env(tmp_path, shared_cache)
        env.update(predefined)
        env.update({k: _expand(v, env) for k, v in variables.items()})
        assert env["OCIASSEMBLE_CACHE"] == f"{project}/.ociassemble-cache"
        env["OCIASSEMBLE_CACHE"] = str(shared_cache.root)  # the test's warm cache (pex resolution is slow)
        outputs += _run([c for line in lines for c in _commands(line)], env, project)
    _check_pushed(host, "team/my-model", project / "digest.txt", outputs[-1].stdout)
