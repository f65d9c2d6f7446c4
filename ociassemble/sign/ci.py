"""Which CI run this is, from the environment: GitHub Actions, GitLab CI, Azure Pipelines.

Read for the provenance's builder and invocation, never trusted for anything else (any
process can set these variables; what makes the provenance trustworthy is the key that
signs it, held by the CI's secret store).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CiRun", "ci_run"]


@dataclass(frozen=True)
class CiRun:
    """One CI run: ``builder_id`` names the pipeline definition (SLSA's builder.id),
    ``invocation_id`` this run of it; ``source`` the repository (``git+URL@REF``) and
    ``commit`` its revision; ``parameters`` what the CI says about the trigger."""

    platform: str
    builder_id: str
    invocation_id: str
    source: str | None = None
    commit: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict, hash=False)


def _github(env: Mapping[str, str]) -> CiRun:
    server = env.get("GITHUB_SERVER_URL", "https://github.com")
    repo = env.get("GITHUB_REPOSITORY", "")
    run = f"{server}/{repo}/actions/runs/{env.get('GITHUB_RUN_ID', '')}/attempts/{env.get('GITHUB_RUN_ATTEMPT', '1')}"
    workflow = env.get("GITHUB_WORKFLOW_REF") or f"{repo}/{env.get('GITHUB_WORKFLOW', '')}"
    params = {k: env[v] for k, v in (("event", "GITHUB_EVENT_NAME"), ("ref", "GITHUB_REF"), ("workflow", "GITHUB_WORKFLOW_REF"),
                                     ("repositoryId", "GITHUB_REPOSITORY_ID"), ("runnerEnvironment", "RUNNER_ENVIRONMENT"))
              if env.get(v)}
    return CiRun("github-actions", f"{server}/{workflow}", run, f"git+{server}/{repo}@{env.get('GITHUB_REF', '')}",
                 env.get("GITHUB_SHA"), params)


def _gitlab(env: Mapping[str, str]) -> CiRun:
    server = env.get("CI_SERVER_URL", "")
    project = env.get("CI_PROJECT_PATH", "")
    builder = f"{server}/{project}/-/runners/{env['CI_RUNNER_ID']}" if env.get("CI_RUNNER_ID") else f"{server}/{project}"
    params = {k: env[v] for k, v in (("pipelineSource", "CI_PIPELINE_SOURCE"), ("ref", "CI_COMMIT_REF_NAME"),
                                     ("pipelineId", "CI_PIPELINE_ID"), ("jobName", "CI_JOB_NAME"),
                                     ("configPath", "CI_CONFIG_PATH")) if env.get(v)}
    source = env.get("CI_PROJECT_URL") or f"{server}/{project}"
    return CiRun("gitlab-ci", builder, env.get("CI_JOB_URL", ""), f"git+{source}@{env.get('CI_COMMIT_REF_NAME', '')}",
                 env.get("CI_COMMIT_SHA"), params)


def _azure(env: Mapping[str, str]) -> CiRun:
    collection = env.get("SYSTEM_COLLECTIONURI", "")
    project = env.get("SYSTEM_TEAMPROJECT", "")
    base = f"{collection.rstrip('/')}/{project}"
    params = {k: env[v] for k, v in (("reason", "BUILD_REASON"), ("ref", "BUILD_SOURCEBRANCH"),
                                     ("definitionName", "BUILD_DEFINITIONNAME"), ("jobAttempt", "SYSTEM_JOBATTEMPT"))
              if env.get(v)}
    return CiRun("azure-pipelines", f"{base}/_build?definitionId={env.get('SYSTEM_DEFINITIONID', '')}",
                 f"{base}/_build/results?buildId={env.get('BUILD_BUILDID', '')}",
                 f"git+{env['BUILD_REPOSITORY_URI']}@{env.get('BUILD_SOURCEBRANCH', '')}"
                 if env.get("BUILD_REPOSITORY_URI") else None, env.get("BUILD_SOURCEVERSION"), params)


def ci_run(env: Mapping[str, str]) -> CiRun | None:
    """The CI run ``env`` describes, or None outside the three CIs we know.

    ``env`` is the process environment, handed here whole by the one caller (``pushjob``'s
    provenance) and not read into ``Settings``: the CI's variables are facts of the run, set by
    the CI for every step (which run, which commit), not choices a user makes by flag or config
    file; they are read only to state them, never to decide anything.
    """
    if env.get("GITHUB_ACTIONS") == "true":
        return _github(env)
    if env.get("GITLAB_CI") == "true":
        return _gitlab(env)
    if env.get("TF_BUILD", "").lower() == "true":
        return _azure(env)
    return None
