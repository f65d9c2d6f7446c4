"""``ociassemble build``: build the image and write it to ``--output`` (and an SBOM beside it)."""

from __future__ import annotations

import argparse
from typing import Any

from ..transport.spec import parse_spec
from .options import assemble
from .output import Out, layers_json, platform_json, work_json

__all__ = ["cmd_build"]


def cmd_build(args: argparse.Namespace, out: Out) -> int:
    from ..build import image_sbom
    from ..image.platform import parse_platforms
    from ..imageio import check_output, write_image
    from .options import project

    spec = args.output or None
    if spec:
        parse_spec(spec, for_output=True)  # a bad --output fails before any work
    proj = project(args)
    # a bad --platform, or several for a docker-archive (flag or config), fails before any work too
    check_output(spec or proj.output or "oci-archive:image.tar", bool(proj.platform) and len(parse_platforms(proj.platform)) > 1)
    built = assemble(args, out, proj)
    target, cache = built.target, built.cache
    spec = built.project.output or "oci-archive:image.tar"
    write_image(target, cache, spec)
    first = built.builds[0]
    data: dict[str, Any] = {"digest": target.digest, "output": spec, "layers": layers_json(first.layers),
                            "config": first.image.manifest.config.digest, **work_json(built, out),
                            "platforms": [platform_json(b) for b in built.builds]}
    if built.index is not None:
        data["mediaType"] = built.index.descriptor.media_type
    out.log(f"wrote {spec}")
    if args.sbom:
        from ..image.sbom import sbom_path

        dest = parse_spec(spec, for_output=True).path
        assert dest is not None
        # the SBOM names the output by its file name only: a folder (the checkout's) is not the image's
        named = f"{parse_spec(spec, for_output=True).kind}:{dest.name}"
        out.log("listing packages for the SBOM")
        sboms = []
        for b in built.builds:
            path = sbom_path(dest, b.image.platform if built.index is not None else None)
            path.write_bytes(image_sbom(b.image, cache, name=named, site=b.deps_site, scan=b.scan_layers))
            sboms.append(str(path))
            out.log(f"wrote {path}")
        data["sbom"] = sboms[0] if built.index is None else sboms
    out.result(data, target.digest)
    return 0
