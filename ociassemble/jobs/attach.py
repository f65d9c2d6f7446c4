"""What ``push`` stores beside a pushed image: each platform's SBOM, the signatures, the SLSA provenance."""

from __future__ import annotations

import os
from typing import Any

from ..built import Built, BuiltSet
from ..events import Progress
from ..image.assemble import Image
from ..image.cache import BlobCache
from ..image.imageindex import Target

__all__ = ["push_sboms", "sign_pushed"]


def push_sboms(images: list[Image], built: BuiltSet | None, cache: BlobCache, refs: list[str], options: Any,
               progress: Progress, *, several: bool) -> dict[str, Any] | list[dict[str, Any]]:
    """Each image's SBOM, pushed as an artifact whose subject is that image's manifest: one
    document for one image, a list naming each platform for a multi-platform one."""
    from ..build import image_sbom
    from ..image.layer import source_date_epoch
    from ..image.platform import normalize
    from ..image.sbom import SPDX_MEDIA_TYPE
    from ..registry.reference import parse_reference
    from ..registry.sbom import push_sbom

    first = parse_reference(refs[0])
    builds: list[Built | None] = list(built.builds) if built is not None else [None] * len(images)
    docs = []
    for image, b in zip(images, builds):
        platform = str(normalize(image.platform))
        progress.log("listing packages for the SBOM" + (f" of {platform}" if several else ""))
        sbom = image_sbom(image, cache, name=str(first), repository=f"{first.registry}/{first.repository}",
                          site=b.deps_site if b else None, scan=b.scan_layers if b else None)
        artifact, pushed = push_sbom(image, cache, sbom, list(refs), options=options, created=source_date_epoch())
        doc: dict[str, Any] = {"digest": artifact.digest, "refs": pushed, "artifactType": SPDX_MEDIA_TYPE,
                               "size": len(sbom)}
        if several:
            doc = {"platform": platform, "subject": image.digest, **doc}
        docs.append(doc)
        progress.log(f"pushed the SBOM {artifact.digest[:19]}" + (f" of {platform}" if several else "")
                     + f" as {', '.join(pushed)}")
    return docs if several else docs[0]


def sign_pushed(target: Target, refs: list[str], key: Any, keyless: Any, provenance: bool, built: BuiltSet | None,
                cache: BlobCache, options: Any, sbom: Any, progress: Progress) -> dict[str, Any]:
    """Sign what was pushed (and attach its provenance); a failure says that the image itself was pushed."""
    from ..errors import RegistryError, SignaturePushError
    from ..registry.cosign import attest_image, sign_image

    what = "signature"
    try:
        stored = sign_image(target, refs, key, cache, options=options, keyless=keyless)
        added = sum(s.added for s in stored)
        by = f"key sha256:{key.public.keyid[:16]}…" if key is not None else "Sigstore keyless"
        progress.log(f"signed {target.digest} ({by}): "
                     f"{added} signature{'s' if added != 1 else ''} added, {len(stored) - added} already there")
        result: dict[str, Any] = {"signatures": [s.to_json() for s in stored]}
        if provenance:
            what = "provenance"
            statements = _statements(target, refs, built, options, sbom)
            attested = attest_image(target, refs, key, statements, cache, options=options)
            progress.log(f"attached the SLSA provenance to {len(statements)} manifest"
                         f"{'s' if len(statements) != 1 else ''}")
            result["provenance"] = [s.to_json() for s in attested]
        return result
    except RegistryError as exc:
        raise SignaturePushError(f"pushed {target.digest} as {', '.join(refs)}, but its {what} was not stored: {exc}",
                                 status=exc.status, codes=exc.codes) from exc


def _statements(target: Target, refs: list[str], built: BuiltSet | None, options: Any, sbom: Any) -> dict[str, bytes]:
    """The SLSA statement for each subject of ``target`` (the same inputs, each subject's own digest)."""
    from ..image.oci import canonical_json
    from ..registry.cosign import subjects
    from ..registry.reference import parse_reference
    from ..sign.ci import ci_run
    from ..sign.provenance import Material, provenance_statement

    materials: list[Material] = []
    params: dict[str, Any] = {"refs": refs}
    if built is not None:
        from ..materials import build_materials, build_parameters

        materials = build_materials(built, options)
        params = build_parameters(built, refs)
    else:  # push --from: an image built before; what it was made from is that build's to say
        params["pushedFrom"] = "an image built earlier (push --from)"
    byproducts = []
    for doc in (sbom if isinstance(sbom, list) else [sbom] if sbom else []):
        byproducts.append(Material("sbom" + (f" {doc['platform']}" if "platform" in doc else ""),
                                   {"sha256": doc["digest"].split(":", 1)[1]}, doc["refs"][0] if doc.get("refs") else None,
                                   {"mediaType": doc.get("artifactType", "")}))
    name = parse_reference(refs[0]).name
    ci = ci_run(os.environ)  # the CI run is the provenance's builder, read where it is stated
    return {d.digest: canonical_json(provenance_statement(name, d.digest, materials=materials, parameters=params, ci=ci,
                                                          byproducts=byproducts))
            for d in subjects(target)}
