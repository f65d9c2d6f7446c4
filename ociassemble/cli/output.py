"""What the commands print: steps and progress to stderr, one result on stdout (text or ``--json``).

Also the JSON pieces the building commands share (``layers``, ``work``, ``registry_cache``:
docs/json.md) and the one line an error is printed as. Everything printed passes through
``redact.clean`` with the run's ``secrets``: no credential we sent, no terminal control
byte (a registry's or an image's text) reaches the terminal.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from ..progress import Reporter, make_reporter
from ..redact import Secrets, clean

if TYPE_CHECKING:
    from ..build import Built, BuiltSet
    from ..image.layer import BuiltLayer

__all__ = ["Out", "error_line", "layers_json", "platform_json", "work_json"]


class Out:
    """Where messages go: steps and progress to stderr (unless --quiet/--json), results to stdout."""

    def __init__(self, quiet: bool, as_json: bool, reporter: Reporter | None = None,
                 secrets: Secrets | None = None) -> None:
        self.quiet = quiet
        self.as_json = as_json
        self.reporter = reporter if reporter is not None else make_reporter(sys.stderr, quiet=quiet or as_json)
        #: the credentials of this run (the registry options add theirs): cleaned from all output
        self.secrets = secrets if secrets is not None else Secrets()

    def clean(self, text: str) -> str:
        return clean(text, self.secrets)

    def log(self, msg: str) -> None:
        self.reporter.step(self.clean(msg))

    def print(self, text: str) -> None:
        """A line of a result on stdout (``inspect --list`` prints one per file)."""
        print(self.clean(text))

    def result(self, data: dict[str, Any], text: str) -> None:
        self.reporter.close()  # the live display ends before the result is printed
        if self.as_json:
            print(self.clean(json.dumps(data, indent=2, sort_keys=True)))
        elif text:
            print(self.clean(text))


def error_line(exc: BaseException, secrets: Secrets | None = None) -> str:
    """An error's message as one line: its lines joined by "; " (the CLI never prints more),
    cleaned (``redact.clean``)."""
    return clean("; ".join(line.strip() for line in str(exc).splitlines() if line.strip()), secrets)


def layers_json(layers: list[tuple[str, BuiltLayer]]) -> list[dict[str, Any]]:
    return [{"what": kind, "digest": l.descriptor.digest, "size": l.descriptor.size, "mediaType": l.descriptor.media_type,
             "diffID": l.diff_id, "reused": l.reused, "source": l.outcome} for kind, l in layers]


def platform_json(built: Built) -> dict[str, Any]:
    """One platform's image of a build: its platform, manifest digest and new layers."""
    from ..image.platform import normalize

    return {"platform": str(normalize(built.image.platform)), "digest": built.image.digest,
            "config": built.image.manifest.config.digest, "layers": layers_json(built.layers),
            "pex_ran": built.pex_ran}


def work_json(built: Built | BuiltSet | None, out: Out) -> dict[str, Any]:
    """``work`` and ``registry_cache`` of a build's result: what was compressed, held by
    reference or stored uncompressed, reused, taken from the registry cache, whether pex
    ran; the counts also go to the log (a kind this build did not do is left out there)."""
    layers = [l for _, l in built.layers] if built else []
    work = {"layers_compressed": sum(l.outcome == "compressed" for l in layers),
            "layers_held_by_reference": sum(l.outcome == "held" for l in layers),
            "layers_stored_uncompressed": sum(l.outcome == "uncompressed" for l in layers),
            "layers_reused": sum(l.outcome == "reused" for l in layers),
            "layers_from_registry_cache": sum(l.outcome == "registry" for l in layers),
            "pex_ran": bool(built and built.pex_ran), "locked": bool(built and built.locked)}
    lc = built.layer_cache if built else None
    if built:
        made = [f"{work['layers_compressed']} compressed"]
        if work["layers_held_by_reference"]:
            made.append(f"{work['layers_held_by_reference']} held by reference")
        if work["layers_stored_uncompressed"]:
            made.append(f"{work['layers_stored_uncompressed']} stored uncompressed")
        out.log(f"layers: {', '.join(made)}, {work['layers_reused']} reused from the local "
                f"index, {work['layers_from_registry_cache']} from the registry cache"
                + ("; pex ran" if work["pex_ran"] else "") + ("; locked" if work["locked"] else ""))
    return {"work": work, "registry_cache": None if lc is None else
            {"repository": lc.name, "read": lc.read, "write": lc.write_enabled, **lc.stats.to_json()}}
