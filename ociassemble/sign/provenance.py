"""The SLSA v1 provenance statement of a build: an in-toto Statement v1 saying what was built, from what, by whom.

``https://in-toto.io/Statement/v1`` with predicate ``https://slsa.dev/provenance/v1``:

- ``subject``: the pushed manifest (its repository and sha256);
- ``predicate.buildDefinition``: ``buildType`` (ociassemble's), ``externalParameters``
  (what the user asked: the references, the platforms, the project's settings that shape
  the image), ``resolvedDependencies`` (every input by digest: the base's manifest, the
  lock file, each model file, the requirements, the source tree as the layer holds it, the
  CI's checkout);
- ``predicate.runDetails``: ``builder.id`` (the CI pipeline, or ``LOCAL_BUILDER``) with
  ociassemble's version, ``metadata.invocationId`` (the CI run), ``byproducts`` (the SBOM
  by digest).

No clock is read: the same inputs in the same CI run give the same bytes (and, with a
deterministic signature, the same attestation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import __version__
from .ci import CiRun

__all__ = ["BUILD_TYPE", "LOCAL_BUILDER", "SLSA_PREDICATE_TYPE", "STATEMENT_TYPE", "Material", "provenance_statement"]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
#: Names how ociassemble builds (the parameters' meaning): a URI, as SLSA asks; a URN, as
#: the project has no web page of its own to point at (docs/signing.md describes it).
BUILD_TYPE = "urn:ociassemble:buildtype:image:v1"
#: builder.id outside a CI we recognise: the build ran on someone's machine.
LOCAL_BUILDER = "urn:ociassemble:builder:local"


@dataclass(frozen=True)
class Material:
    """One input by digest: SLSA's ResourceDescriptor (``name``, ``uri``, ``digest``, ``annotations``)."""

    name: str
    digest: dict[str, str]
    uri: str | None = None
    annotations: dict[str, Any] = field(default_factory=dict, hash=False)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name, "digest": dict(self.digest)}
        if self.uri:
            doc["uri"] = self.uri
        if self.annotations:
            doc["annotations"] = dict(self.annotations)
        return doc


def provenance_statement(subject_name: str, subject_digest: str, *, materials: Sequence[Material],
                         parameters: dict[str, Any], ci: CiRun | None = None,
                         byproducts: Sequence[Material] = ()) -> dict[str, Any]:
    """The statement about manifest ``subject_digest`` pushed as ``subject_name`` (``registry/repo``)."""
    deps = [m.to_json() for m in materials]
    if ci is not None and ci.source and ci.commit:
        deps.append({"name": "source", "uri": ci.source, "digest": {"gitCommit": ci.commit}})
    run: dict[str, Any] = {"builder": {"id": ci.builder_id if ci else LOCAL_BUILDER,
                                       "version": {"ociassemble": __version__}}}
    if ci is not None:
        run["metadata"] = {"invocationId": ci.invocation_id}
    if byproducts:
        run["byproducts"] = [b.to_json() for b in byproducts]
    internal: dict[str, Any] = {"ociassemble": __version__}
    if ci is not None:
        internal["ci"] = {"platform": ci.platform, **ci.parameters}
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject_name, "digest": {"sha256": subject_digest.split(":", 1)[1]}}],
        "predicateType": SLSA_PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {"buildType": BUILD_TYPE, "externalParameters": parameters,
                                "internalParameters": internal, "resolvedDependencies": deps},
            "runDetails": run,
        },
    }
