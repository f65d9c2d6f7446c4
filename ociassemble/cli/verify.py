"""``ociassemble verify``: rebuild from the inputs (writing nothing) and compare with ``--against``.

Exit 0 and the digest when they are the same image, 1 and the first difference otherwise.
"""

from __future__ import annotations

import argparse

from ..errors import EXIT_USER, UsageError
from ..transport.spec import parse_spec
from .options import assemble, registry_options
from .output import Out

__all__ = ["cmd_verify"]


def cmd_verify(args: argparse.Namespace, out: Out) -> int:
    from ..image.assemble import Image
    from ..image.verify import compare_images
    from ..inputs.base import load_image

    if args.sbom:
        raise UsageError("verify writes nothing: drop --sbom (build and push make SBOMs)")
    spec = parse_spec(args.against)  # a bad --against fails before any work
    if spec.kind == "rootfs":
        raise UsageError(f"--against {args.against}: a rootfs is not an image; give a registry reference, "
                         "oci:DIR, oci-archive:FILE or docker-archive:FILE")
    args.output = None
    built = assemble(args, out)
    opts = registry_options(args) if spec.kind == "docker" else None
    out.log(f"comparing with {args.against}")
    report = None
    for b in built.builds:  # each platform's image against the one for its platform there
        given = load_image(spec, built.cache, registry_options=opts, platform=b.image.platform)
        assert isinstance(given, Image)
        report = compare_images(b.image, given, built.cache, name=args.against,
                                compressed_comparable=spec.kind != "docker-archive")
        if not report.equal:
            break
    assert report is not None
    if report.equal:
        out.log(f"{args.against} is the image these inputs build"
                + (" (compared by config: a docker-archive keeps no compressed layers)"
                   if report.compared_by == "config" else ""))
    out.result(report.to_json(), report.render())
    return 0 if report.equal else EXIT_USER
