"""``ociassemble build``: build the image and write it to ``--output`` (and an SBOM beside it)."""

from __future__ import annotations

import argparse
from typing import Any

from ..transport.spec import parse_spec
from .options import assemble
from .output import Out, layers_json, work_json

__all__ = ["cmd_build"]


def cmd_build(args: argparse.Namespace, out: Out) -> int:
    from ..build import image_sbom
    from ..transport.write import write_image

    spec = args.output or None
    if spec:
        parse_spec(spec, for_output=True)  # a bad --output fails before any work
    built = assemble(args, out)
    image, cache = built.image, built.cache
    spec = built.project.output or "oci-archive:image.tar"
    write_image(image, cache, spec)
    data: dict[str, Any] = {"digest": image.digest, "output": spec, "layers": layers_json(built.layers),
                            "config": image.manifest.config.digest, **work_json(built, out)}
    out.log(f"wrote {spec}")
    if args.sbom:
        from ..image.sbom import sbom_path

        target = parse_spec(spec, for_output=True).path
        assert target is not None
        path = sbom_path(target)
        # the SBOM names the output by its file name only: a folder (the checkout's) is not the image's
        named = f"{parse_spec(spec, for_output=True).kind}:{target.name}"
        out.log("listing packages for the SBOM")
        path.write_bytes(image_sbom(image, cache, name=named, site=built.deps_site, scan=built.scan_layers))
        data["sbom"] = str(path)
        out.log(f"wrote {path}")
    out.result(data, image.digest)
    return 0
