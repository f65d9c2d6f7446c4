"""Azure ML v1's ``extraDockerfileSteps``, read for what ociassemble can do without a Dockerfile:
``RUN apt-get update && apt-get install -y PKG… && rm -rf /var/lib/apt/lists/*`` becomes the
project's ``apt`` list; any other instruction or command is refused in one line naming it.

Example::

    apt_from_dockerfile_steps("RUN apt-get update && apt-get install -y libgomp1")  # ["libgomp1"]
"""

from __future__ import annotations

import re
import shlex

from ..errors import UsageError

__all__ = ["apt_from_dockerfile_steps"]

#: apt-get/apt options that change nothing about which packages are installed
_QUIET_OPTIONS = re.compile(r"^(-y|--yes|--assume-yes|-q+|--quiet|--no-install-recommends|--no-install-suggests|"
                            r"-o=?\S*|--allow-\S+|--fix-missing|-f)$")
_FIX = ('ociassemble runs no Dockerfile step: list Debian packages in apt = [...] (or --apt-package) and Python '
        'packages in your requirements')


def _instructions(text: str) -> list[str]:
    joined = re.sub(r"\\\s*\n", " ", text)
    return [l.strip() for l in joined.splitlines() if l.strip() and not l.strip().startswith("#")]


def _command(words: list[str], step: str) -> list[str]:
    """The packages one shell command installs ([] for update/clean/rm of apt's lists)."""
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):  # DEBIAN_FRONTEND=noninteractive
        words = words[1:]
    if words and words[0] == "sudo":
        words = words[1:]
    if not words:
        return []
    tool = words[0].rsplit("/", 1)[-1]
    args = [w for w in words[1:] if not _QUIET_OPTIONS.match(w)]
    if tool in ("apt-get", "apt") and args[:1] in (["update"], ["clean"], ["autoclean"], ["autoremove"]) and len(args) == 1:
        return []
    if tool in ("apt-get", "apt") and args[:1] == ["install"]:
        names = args[1:]
        bad = [n for n in names if n.startswith("-") or not re.fullmatch(r"[a-z0-9][a-z0-9+.-]*(=[A-Za-z0-9.+~:-]+)?", n)]
        if bad or not names:
            raise UsageError(f"extraDockerfileSteps: {step!r}: cannot read {' '.join(bad) or 'no package'} as Debian "
                             f"package names; {_FIX}")
        return names
    if tool == "rm" and all(a.startswith("-") or a.startswith("/var/lib/apt/lists") or a.startswith("/var/cache/apt")
                            for a in words[1:]):
        return []
    raise UsageError(f"extraDockerfileSteps: {step!r} runs {' '.join(words)[:60]!r}, which is not a Debian package "
                     f"installation; {_FIX}")


def apt_from_dockerfile_steps(text: str) -> list[str]:
    """The Debian packages ``text``'s ``RUN apt-get install`` lines name, in order, once each.

    Raises UsageError naming the first instruction (FROM, COPY, ENV, …) or command
    (pip install, curl, …) that is not one.
    """
    out: list[str] = []
    for step in _instructions(text):
        keyword, _, rest = step.partition(" ")
        if keyword.upper() != "RUN":
            raise UsageError(f"extraDockerfileSteps: {keyword.upper()} ({step[:60]!r}) is not supported; {_FIX}")
        try:
            words = shlex.split(rest)
        except ValueError:
            raise UsageError(f"extraDockerfileSteps: {step[:60]!r} is not a shell command ociassemble can read; {_FIX}") from None
        command: list[str] = []
        for word in [*words, "&&"]:
            if word in ("&&", ";", "||"):
                out += [n for n in _command(command, step[:80]) if n not in out]
                command = []
            else:
                command.append(word)
    return out
