"""The JSON pieces the building jobs' results share (``layers``, ``work``, ``registry_cache``: docs/json.md)."""

from __future__ import annotations

from typing import Any

from ..built import Built, BuiltSet
from ..image.layer import BuiltLayer

__all__ = ["layers_json", "platform_json", "work_json", "work_line"]


def layers_json(layers: list[tuple[str, BuiltLayer]]) -> list[dict[str, Any]]:
    return [{"what": kind, "digest": l.descriptor.digest, "size": l.descriptor.size, "mediaType": l.descriptor.media_type,
             "diffID": l.diff_id, "reused": l.reused, "source": l.outcome} for kind, l in layers]


def platform_json(built: Built) -> dict[str, Any]:
    """One platform's image of a build: its platform, manifest digest and new layers."""
    from ..image.platform import normalize

    return {"platform": str(normalize(built.image.platform)), "digest": built.image.digest,
            "config": built.image.manifest.config.digest, "layers": layers_json(built.layers),
            "pex_ran": built.pex_ran}


def _work(built: Built | BuiltSet | None) -> dict[str, Any]:
    layers = [l for _, l in built.layers] if built else []
    return {"layers_compressed": sum(l.outcome == "compressed" for l in layers),
            "layers_held_by_reference": sum(l.outcome == "held" for l in layers),
            "layers_stored_uncompressed": sum(l.outcome == "uncompressed" for l in layers),
            "layers_reused": sum(l.outcome == "reused" for l in layers),
            "layers_from_registry_cache": sum(l.outcome == "registry" for l in layers),
            "pex_ran": bool(built and built.pex_ran), "locked": bool(built and built.locked)}


def work_json(built: Built | BuiltSet | None) -> dict[str, Any]:
    """``work`` and ``registry_cache`` of a build's result: what was compressed, held by
    reference or stored uncompressed, reused, taken from the registry cache, whether pex ran."""
    lc = built.layer_cache if built else None
    return {"work": _work(built), "registry_cache": None if lc is None else
            {"repository": lc.name, "read": lc.read, "write": lc.write_enabled, **lc.stats.to_json()}}


def work_line(built: Built | BuiltSet) -> str:
    """The counts of ``work_json`` for people (a kind this build did not do is left out)."""
    work = _work(built)
    made = [f"{work['layers_compressed']} compressed"]
    if work["layers_held_by_reference"]:
        made.append(f"{work['layers_held_by_reference']} held by reference")
    if work["layers_stored_uncompressed"]:
        made.append(f"{work['layers_stored_uncompressed']} stored uncompressed")
    return (f"layers: {', '.join(made)}, {work['layers_reused']} reused from the local "
            f"index, {work['layers_from_registry_cache']} from the registry cache"
            + ("; pex ran" if work["pex_ran"] else "") + ("; locked" if work["locked"] else ""))
