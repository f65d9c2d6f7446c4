"""``ociassemble push``: build (from the cache) or read an image, push it, then its cache entries and SBOM.

A multi-platform image (``--platform linux/amd64,linux/arm64``, or ``--from`` an index)
is pushed whole: the tags name the index; with ``--sbom`` each platform's image gets
its own SBOM, referring to that platform's manifest.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..progress import human_size
from ..transport.spec import is_registry
from .options import assemble, blob_cache, registry_options
from .output import Out, layers_json, platform_json, work_json

if TYPE_CHECKING:
    from ..build import Built, BuiltSet
    from ..image.assemble import Image
    from ..image.cache import BlobCache
    from ..image.oci import Platform

__all__ = ["cmd_push"]


def from_platform(value: str | None) -> Platform | str:
    """What ``push --from`` reads: every platform (``all``, the default) or the one ``--platform`` names."""
    from ..image.platform import ALL, parse_platforms

    if value is None or value.strip() == ALL:
        return ALL
    wanted = parse_platforms(value)
    if len(wanted) > 1:
        raise UsageError(f"--platform {value}: push --from pushes one platform's image, or all of them "
                         "(leave out --platform); give one, e.g. --platform " + str(wanted[0]))
    return wanted[0]


def cmd_push(args: argparse.Namespace, out: Out) -> int:
    from ..image.imageindex import ImageIndex, for_platform
    from ..image.platform import ALL, normalize
    from ..registry.push import push_image
    from ..registry.reference import parse_reference

    cache = blob_cache(args)
    built: BuiltSet | None = None
    if args.source:
        from ..inputs.base import load_image

        want = from_platform(getattr(args, "platform", None))  # a bad --platform fails before any reading
        opts = registry_options(args) if is_registry(args.source) else None
        target = load_image(args.source, cache, registry_options=opts, verify_diff_ids=True, platform=want)
        if want != ALL:  # an image of one platform must be that platform's
            target = for_platform(target, want, args.source)  # type: ignore[arg-type]
    else:
        args.output = None
        built = assemble(args, out)
        target, cache = built.target, built.cache
        if not args.refs and built.project.image:
            args.refs = [built.project.image]
    if not args.refs:
        raise UsageError("push needs a destination, e.g. 'ociassemble push registry.example.com/team/model:1.0'")
    images: list[Image] = list(target.images) if isinstance(target, ImageIndex) else [target]
    what = f"{target.digest} ({', '.join(str(normalize(i.platform)) for i in images)})" if len(images) > 1 \
        else target.digest
    out.log(f"pushing {what} to {', '.join(args.refs)}")
    options = replace(registry_options(args), on_wait=lambda registry, seconds: out.log(
        f"registry {registry} asked to slow down: waiting {seconds:.1f} s before any request to it"))
    res = push_image(target, cache, list(args.refs), options=options, on_bytes=out.reporter.blob_bytes)
    if args.digest_file:
        Path(args.digest_file).write_text(res.digest + "\n")  # an index's digest: what the tags name
    out.log(f"pushed: {len(res.blobs_uploaded)} blobs uploaded ({human_size(res.bytes_uploaded)}), "
            f"{len(res.blobs_mounted)} mounted, {len(res.blobs_skipped)} already there")
    lc = built.layer_cache if built else None
    if built and lc is not None and lc.write_enabled:  # only once the image is pushed
        pushed = parse_reference(args.refs[0])
        written = lc.write([l for _, l in built.layers], mount_from=f"{pushed.registry}/{pushed.repository}")
        out.log(f"registry cache {lc.name}: {written} entries written")
    data = {**res.to_json(), "layers": layers_json(built.builds[0].layers if built else []), **work_json(built, out)}
    if built is not None and built.index is not None:
        data["platforms"] = [platform_json(b) for b in built.builds]
    if args.sbom:
        data["sbom"] = _push_sboms(args, out, images, built, cache, options, several=isinstance(target, ImageIndex))
    out.result(data, res.digest)
    return 0


def _push_sboms(args: argparse.Namespace, out: Out, images: list[Image], built: BuiltSet | None, cache: BlobCache,
                options: Any, several: bool) -> dict[str, Any] | list[dict[str, Any]]:
    """Each image's SBOM, pushed as an artifact whose subject is that image's manifest: one
    document for one image, a list naming each platform for a multi-platform one."""
    from ..build import image_sbom
    from ..image.layer import source_date_epoch
    from ..image.platform import normalize
    from ..image.sbom import SPDX_MEDIA_TYPE
    from ..registry.reference import parse_reference
    from ..registry.sbom import push_sbom

    first = parse_reference(args.refs[0])
    builds: list[Built | None] = list(built.builds) if built is not None else [None] * len(images)
    docs = []
    for image, b in zip(images, builds):
        platform = str(normalize(image.platform))
        out.log("listing packages for the SBOM" + (f" of {platform}" if several else ""))
        sbom = image_sbom(image, cache, name=str(first), repository=f"{first.registry}/{first.repository}",
                          site=b.deps_site if b else None, scan=b.scan_layers if b else None)
        artifact, refs = push_sbom(image, cache, sbom, list(args.refs), options=options, created=source_date_epoch())
        doc: dict[str, Any] = {"digest": artifact.digest, "refs": refs, "artifactType": SPDX_MEDIA_TYPE, "size": len(sbom)}
        if several:
            doc = {"platform": platform, "subject": image.digest, **doc}
        docs.append(doc)
        out.log(f"pushed the SBOM {artifact.digest[:19]}" + (f" of {platform}" if several else "") + f" as {', '.join(refs)}")
    return docs if several else docs[0]
