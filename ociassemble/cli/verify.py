"""``ociassemble verify``: rebuild from the inputs (writing nothing) and compare with ``--against``;
or, with ``--key``, check a pushed image's signature (and ``--provenance``).

Exit 0 and the digest when they are the same image, 1 and the first difference otherwise.
With ``--key``: exit 0 and what verified, 1 and one line saying why not (no signature, another
key, another digest), 2 when the registry cannot be read.
"""

from __future__ import annotations

import argparse

from ..errors import EXIT_USER, UsageError
from ..transport.spec import parse_spec
from .options import assemble, registry_options
from .output import Out

__all__ = ["cmd_verify"]


def cmd_verify(args: argparse.Namespace, out: Out) -> int:
    if args.key:
        return _verify_signature(args, out)
    if args.provenance:
        raise UsageError("--provenance checks a signed image: give the public key, e.g. verify IMAGE --key cosign.pub "
                         "--provenance")
    if not args.against:
        raise UsageError("verify needs --against IMAGE (rebuild and compare) or IMAGE --key cosign.pub (check its "
                         "signature)")
    return _verify_rebuild(args, out)


def _verify_signature(args: argparse.Namespace, out: Out) -> int:
    """``verify IMAGE --key cosign.pub [--provenance]``: the signature cosign (or we) stored."""
    from pathlib import Path

    from ..errors import InputError
    from ..registry.cosign import verify_image
    from ..sign.keys import load_public_key

    if args.against:
        raise UsageError("--key checks a signature and --against rebuilds: give one (verify IMAGE --key cosign.pub)")
    image = args.path
    if image in (None, "."):
        raise UsageError("verify --key needs the image, e.g. 'ociassemble verify registry.example.com/team/model:1.0 "
                         "--key cosign.pub'")
    spec = parse_spec(image)
    if spec.kind != "docker":
        raise UsageError(f"{image}: signatures live in a registry; give a registry reference, e.g. "
                         "registry.example.com/team/model:1.0")
    try:
        data = Path(args.key).read_bytes()
    except OSError as exc:
        raise InputError(f"public key {args.key} cannot be read: {exc.strerror}; give cosign.pub") from None
    key = load_public_key(data, f"public key {args.key}")
    name = image.removeprefix("docker://")
    out.log(f"checking the signature{' and provenance' if args.provenance else ''} of {name}")
    report = verify_image(name, key, provenance=args.provenance, options=registry_options(args))
    out.result(report.to_json(), report.render())
    return 0


def _verify_rebuild(args: argparse.Namespace, out: Out) -> int:
    from ..image.assemble import Image
    from ..image.verify import compare_images
    from ..imageio import load_image

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
