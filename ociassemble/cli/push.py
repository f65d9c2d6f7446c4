"""``ociassemble push``: build (from the cache) or read an image, push it, then its cache entries and SBOM.

A multi-platform image (``--platform linux/amd64,linux/arm64``, or ``--from`` an index)
is pushed whole: the tags name the index; with ``--sbom`` each platform's image gets
its own SBOM, referring to that platform's manifest.

With ``--sign-key`` (``signing``) the pushed manifest (an index and each platform's) is
signed as cosign signs, and with ``--provenance`` a signed SLSA statement is attached.
The key is opened before anything is built; the signature is stored after the image,
and a failure there says that the image itself was pushed.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..progress import human_size
from ..transport.spec import is_registry
from .options import assemble, blob_cache, project, registry_options
from .output import Out, layers_json, platform_json, work_json

if TYPE_CHECKING:
    from ..build import Built, BuiltSet
    from ..image.assemble import Image
    from ..image.cache import BlobCache
    from ..image.oci import Platform
    from ..registry.speculative import SpeculativeUploader

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

    from .signing import signing_key

    cache = blob_cache(args)
    built: BuiltSet | None = None
    keyless = _keyless_check(args) if args.keyless else None
    uploader: SpeculativeUploader | None = None
    key = None if keyless is not None else signing_key(args)  # a wrong password or an unsupported key stops here: nothing built, nothing pushed
    if args.provenance and key is None and not args.keyless and args.source:
        raise UsageError("--provenance is signed with the signing key: give --sign-key cosign.key (or "
                         "$OCIASSEMBLE_SIGN_KEY)")
    if args.source:
        from ..imageio import load_image

        want = from_platform(getattr(args, "platform", None))  # a bad --platform fails before any reading
        push_opts = registry_options(args)  # credentials bound to the destination (or refused) before any reading
        opts = push_opts if is_registry(args.source) else None
        target = load_image(args.source, cache, registry_options=opts, verify_diff_ids=True, platform=want)
        if want != ALL:  # an image of one platform must be that platform's
            target = for_platform(target, want, args.source)  # type: ignore[arg-type]
    else:
        args.output = None
        proj = project(args)
        if not args.refs and proj.image:  # known before the build: explicit credentials are for its registry
            args.refs = [proj.image]
        registry_options(args)  # credentials bound to the destination (or refused) before the build
        uploader = _speculative(args, out, proj.speculative_upload)
        try:
            built = assemble(args, out, proj, uploader=uploader)
        except BaseException:
            if uploader is not None:
                uploader.close()
            raise
        target, cache = built.target, built.cache
        if key is None and not args.keyless and built.project.sign_key is not None:
            key = signing_key(args, built.project.sign_key)
        if args.provenance and key is None and not args.keyless:
            raise UsageError("--provenance is signed with the signing key: give --sign-key cosign.key (or "
                             "$OCIASSEMBLE_SIGN_KEY, or sign_key in the config)")
    if not args.refs:
        raise UsageError("push needs a destination, e.g. 'ociassemble push registry.example.com/team/model:1.0'")
    images: list[Image] = list(target.images) if isinstance(target, ImageIndex) else [target]
    what = f"{target.digest} ({', '.join(str(normalize(i.platform)) for i in images)})" if len(images) > 1 \
        else target.digest
    out.log(f"pushing {what} to {', '.join(args.refs)}")
    options = replace(registry_options(args), on_wait=lambda registry, seconds: out.log(
        f"registry {registry} asked to slow down: waiting {seconds:.1f} s before any request to it"))
    committed = (uploader.client.registry, uploader.repo, uploader.outcomes()) if uploader is not None else None
    try:
        res = push_image(target, cache, list(args.refs), options=options, on_bytes=out.reporter.blob_bytes,
                         committed=committed)
    finally:
        if uploader is not None:
            uploader.close()
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
    if key is not None or keyless is not None:
        data.update(_sign(args, out, target, key, built, cache, options, data.get("sbom"), keyless))
    out.result(data, res.digest)
    return 0


def _speculative(args: argparse.Namespace, out: Out, configured: bool = True) -> SpeculativeUploader | None:
    """The uploader that sends new model layers to the first destination as they are hashed
    (``registry.speculative``), unless turned off (the flag, the variable, or
    ``speculative_upload = false`` in the config: ``configured``) or there is no destination yet."""
    import os

    from ..registry.client import RegistryClient
    from ..registry.reference import parse_reference
    from ..registry.speculative import SpeculativeUploader, speculation_wanted

    if not args.refs or not configured or not speculation_wanted(args.no_speculative_upload, dict(os.environ)):
        return None
    refs = [parse_reference(r) for r in args.refs]
    options = replace(registry_options(args).scoped_to([r.registry for r in refs]), on_wait=lambda registry, s: out.log(
        f"registry {registry} asked to slow down: waiting {s:.1f} s before any request to it"))
    return SpeculativeUploader(RegistryClient(refs[0].registry, options), refs[0].repository, options)


def _keyless_check(args: argparse.Namespace) -> Any:
    """``--keyless``: the Sigstore signer, or one line saying what is missing (the package, an
    OIDC token) before any work."""
    from ..sign.keyless import KeylessSigner

    if args.sign_key:
        raise UsageError("--keyless signs without a key: drop --sign-key (or drop --keyless)")
    if args.provenance:
        raise UsageError("--provenance is signed with a key (--sign-key cosign.key); with --keyless, attest after the "
                         "push with 'cosign attest' (docs/signing.md)")
    return KeylessSigner.from_environment()


def _sign(args: argparse.Namespace, out: Out, target: Any, key: Any, built: BuiltSet | None, cache: BlobCache,
          options: Any, sbom: Any, keyless: Any = None) -> dict[str, Any]:
    """Sign what was pushed (and attach its provenance); a failure says that the image itself was pushed."""
    from ..errors import RegistryError, SignaturePushError
    from ..registry.cosign import attest_image, sign_image

    refs = list(args.refs)
    what = "signature"
    try:
        stored = sign_image(target, refs, key, cache, options=options, keyless=keyless)
        added = sum(s.added for s in stored)
        by = f"key sha256:{key.public.keyid[:16]}…" if key is not None else "Sigstore keyless"
        out.log(f"signed {target.digest} ({by}): "
                f"{added} signature{'s' if added != 1 else ''} added, {len(stored) - added} already there")
        result: dict[str, Any] = {"signatures": [s.to_json() for s in stored]}
        if args.provenance:
            what = "provenance"
            statements = _statements(target, refs, built, options, sbom)
            attested = attest_image(target, refs, key, statements, cache, options=options)
            out.log(f"attached the SLSA provenance to {len(statements)} manifest{'s' if len(statements) != 1 else ''}")
            result["provenance"] = [s.to_json() for s in attested]
        return result
    except RegistryError as exc:
        raise SignaturePushError(f"pushed {target.digest} as {', '.join(refs)}, but its {what} was not stored: {exc}",
                                 status=exc.status, codes=exc.codes) from exc


def _statements(target: Any, refs: list[str], built: BuiltSet | None, options: Any, sbom: Any) -> dict[str, bytes]:
    """The SLSA statement for each subject of ``target`` (the same inputs, each subject's own digest)."""
    import os

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
    ci = ci_run(os.environ)
    return {d.digest: canonical_json(provenance_statement(name, d.digest, materials=materials, parameters=params, ci=ci,
                                                          byproducts=byproducts))
            for d in subjects(target)}



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
