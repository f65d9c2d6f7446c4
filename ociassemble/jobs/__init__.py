"""The library's jobs: each does what one command does, whole, from a ``settings.Settings``.

``build``, ``push``, ``pull``, ``verify`` (and ``verify_signature``) and ``run`` each return
a result with ``to_json()`` (the command's ``--json``); they tell their progress to an
``events.Progress`` and never print. The command line parses its flags into one
``Settings``, calls one of these and prints the result (docs/library.md)::

    settings = Settings.load(Path("my-model"), models=["my-model/model.bin"], output="oci:./image")
    result = jobs.build(settings)
    print(result.digest)
"""

from __future__ import annotations

from .build import BuildResult, build
from .pull import PullResult, pull
from .push import PushOutcome, push
from .run import RunResult, run
from .verify import verify, verify_signature

__all__ = ["BuildResult", "PullResult", "PushOutcome", "RunResult", "build", "pull", "push", "run", "verify",
           "verify_signature"]
