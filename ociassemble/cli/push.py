"""``ociassemble push``: build (from the cache) or read an image, push it, then its cache entries and SBOM."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..progress import human_size
from ..transport.spec import is_registry
from .options import assemble, blob_cache, registry_options
from .output import Out, layers_json, work_json

if TYPE_CHECKING:
    from ..build import Built

__all__ = ["cmd_push"]


def cmd_push(args: argparse.Namespace, out: Out) -> int:
    from ..build import image_sbom
    from ..registry.push import push_image
    from ..registry.reference import parse_reference

    cache = blob_cache(args)
    built: Built | None = None
    if args.source:
        from ..inputs.base import load_image

        opts = registry_options(args) if is_registry(args.source) else None
        image = load_image(args.source, cache, registry_options=opts, verify_diff_ids=True)
    else:
        args.output = None
        built_set = assemble(args, out)
        if built_set.index is not None:
            raise UsageError("pushing a multi-platform image is not built yet")  # the index push lands next
        built = built_set.builds[0]
        image, cache = built.image, built.cache
        if not args.refs and built.project.image:
            args.refs = [built.project.image]
    if not args.refs:
        raise UsageError("push needs a destination, e.g. 'ociassemble push registry.example.com/team/model:1.0'")
    out.log(f"pushing {image.digest} to {', '.join(args.refs)}")
    options = replace(registry_options(args), on_wait=lambda registry, seconds: out.log(
        f"registry {registry} asked to slow down: waiting {seconds:.1f} s before any request to it"))
    res = push_image(image, cache, list(args.refs), options=options, on_bytes=out.reporter.blob_bytes)
    if args.digest_file:
        Path(args.digest_file).write_text(res.digest + "\n")
    out.log(f"pushed: {len(res.blobs_uploaded)} blobs uploaded ({human_size(res.bytes_uploaded)}), "
            f"{len(res.blobs_mounted)} mounted, {len(res.blobs_skipped)} already there")
    lc = built.layer_cache if built else None
    if built and lc is not None and lc.write_enabled:  # only once the image is pushed
        pushed = parse_reference(args.refs[0])
        written = lc.write([l for _, l in built.layers], mount_from=f"{pushed.registry}/{pushed.repository}")
        out.log(f"registry cache {lc.name}: {written} entries written")
    data = {**res.to_json(), "layers": layers_json(built.layers if built else []), **work_json(built, out)}
    if args.sbom:
        from ..image.layer import source_date_epoch
        from ..image.sbom import SPDX_MEDIA_TYPE
        from ..registry.sbom import push_sbom

        first = parse_reference(args.refs[0])
        out.log("listing packages for the SBOM")
        sbom = image_sbom(image, cache, name=str(first), repository=f"{first.registry}/{first.repository}",
                          site=built.deps_site if built else None, scan=built.scan_layers if built else None)
        artifact, refs = push_sbom(image, cache, sbom, list(args.refs), options=options, created=source_date_epoch())
        data["sbom"] = {"digest": artifact.digest, "refs": refs, "artifactType": SPDX_MEDIA_TYPE, "size": len(sbom)}
        out.log(f"pushed the SBOM {artifact.digest[:19]} as {', '.join(refs)}")
    out.result(data, res.digest)
    return 0
