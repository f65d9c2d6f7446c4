"""The command line: thin commands over the library, one error line per failure.

Each command parses its flags, calls one library function and prints its result
(``--json``: one JSON document on stdout, nothing else there). Progress goes to stderr:
bars on a terminal, one line per step otherwise (``ociassemble.progress``).

Exit codes (``ociassemble.errors``): 0 ok; 1 the user's input or environment (bad flags
included: argparse's own 2 is remapped); 2 a registry or the network; 3 a bug (the
traceback is printed, with one line saying so); 130 interrupted (Ctrl-C or SIGTERM).
Errors of the ``OciAssembleError`` family print as one line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

from .. import __version__
from ..errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USER, NotAnImageError, OciAssembleError, UsageError
from ..progress import PROG, Reporter, human_size, make_reporter

__all__ = ["ENV_PASSWORD", "ENV_USERNAME", "build_parser", "completion_script", "main"]

#: Secrets never need to be on the command line: these are read when the flags are absent.
ENV_USERNAME = "OCIASSEMBLE_USERNAME"
ENV_PASSWORD = "OCIASSEMBLE_PASSWORD"
#: The registry layer cache (``--cache-repo``) when no flag names one; off when unset.
ENV_CACHE_REPO = "OCIASSEMBLE_CACHE_REPO"


class _Out:
    """Where messages go: steps and progress to stderr (unless --quiet/--json), results to stdout."""

    def __init__(self, quiet: bool, as_json: bool, reporter: Reporter | None = None) -> None:
        self.quiet = quiet
        self.as_json = as_json
        self.reporter = reporter if reporter is not None else make_reporter(sys.stderr, quiet=quiet or as_json)

    def log(self, msg: str) -> None:
        self.reporter.step(msg)

    def result(self, data: dict[str, Any], text: str) -> None:
        self.reporter.close()  # the live display ends before the result is printed
        if self.as_json:
            print(json.dumps(data, indent=2, sort_keys=True))
        elif text:
            print(text)


def _kv(items: Sequence[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _cache(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from ..image.cache import BlobCache, default_cache_dir

    return BlobCache(Path(args.cache_dir) if args.cache_dir else default_cache_dir())


def _registry_options(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The registry settings of the flags and environment; stdin is read once per run."""
    from ..registry import RegistryOptions

    if getattr(args, "_registry_options", None) is not None:
        return args._registry_options
    password = None
    if getattr(args, "password_stdin", False):
        password = sys.stdin.readline().rstrip("\r\n")
    elif os.environ.get(ENV_PASSWORD):
        password = os.environ[ENV_PASSWORD]
    opts = RegistryOptions(
        username=getattr(args, "username", None) or os.environ.get(ENV_USERNAME),
        password=password,
        ca_cert=getattr(args, "ca_cert", None),
        insecure_registries=tuple(getattr(args, "insecure_registry", None) or ()),
    )
    args._registry_options = opts
    return opts


def _layer_cache(args: argparse.Namespace, cache: Any):  # type: ignore[no-untyped-def]
    """The registry layer cache the flags ask for, or None (the default: off).

    ``--cache-repo REF`` (or ``$OCIASSEMBLE_CACHE_REPO``) reads and, on ``push``, writes;
    ``--cache-from REF`` only reads; ``--cache-to REF`` only writes (``push`` only: a build
    pushes nothing); ``--no-cache-repo`` turns all of it off.
    """
    if getattr(args, "no_cache_repo", False):
        return None
    repo = getattr(args, "cache_repo", None) or None
    read_from = getattr(args, "cache_from", None) or None
    write_to = getattr(args, "cache_to", None) or None
    if not (repo or read_from or write_to):
        env = os.environ.get(ENV_CACHE_REPO, "").strip()
        if env.lower() in ("", "off", "none", "0", "false"):
            return None
        repo = env
    pushing = args.command == "push"
    if write_to and not pushing:
        raise UsageError("--cache-to writes the registry cache after a push: use it with 'ociassemble push' "
                         "(a build reads it with --cache-from or --cache-repo)")
    names = {n for n in (repo, read_from, write_to) if n}
    if len(names) > 1:
        raise UsageError(f"--cache-repo, --cache-from and --cache-to name different repositories ({', '.join(sorted(names))}): "
                         "one cache repository per run")
    from ..registry.layercache import RegistryLayerCache

    read = bool(repo or read_from)
    write = pushing and bool(repo or write_to)
    return RegistryLayerCache(names.pop(), cache, _registry_options(args), read=read, write=write)


# -- build -----------------------------------------------------------------

def _uses_recipe(args: argparse.Namespace, project: Any) -> bool:
    if args.plain:
        return False
    if project.config_file is not None:
        return True
    if args.entry_script or args.model or args.requirements or args.conda_file:
        return True
    return not args.layer and (Path(args.path) / "score.py").is_file()


def _project(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from ..azureml.project import ModelSpec, load_project

    root = Path(args.path)
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder: give the project folder (default: .)")
    project = load_project(root, Path(args.config) if args.config else None)
    cwd = Path.cwd()
    if args.entry_script:
        project.entry_script = cwd / args.entry_script
    if args.source_dir:
        project.source_dir = cwd / args.source_dir
    if args.source_name is not None:
        project.source_name = args.source_name
    if args.model:
        project.models = [ModelSpec.parse(m, cwd) for m in args.model]
    if args.requirements:
        project.requirements, project.conda_file = cwd / args.requirements, None
    if args.conda_file:
        project.conda_file, project.requirements = cwd / args.conda_file, None
    if project.requirements is None and project.conda_file is None and args.requirements is None:
        default = project.root / "requirements.txt"
        if default.is_file() and project.config_file is None:
            project.requirements = default
    if getattr(args, "install_serving_stack", None):
        project.install_serving_stack = True
    if args.base:
        project.base = args.base
    if args.output:
        project.output = args.output
    if args.compression:
        project.compression = args.compression
    if getattr(args, "compression_level", None) is not None:
        project.compression_level = args.compression_level
    project.env.update(_kv(args.env, "--env"))
    project.labels.update(_kv(args.label, "--label"))
    if args.source_url:
        project.source_url = args.source_url
    if args.revision:
        project.revision = args.revision
    return project


@dataclass
class _Built:
    """What a build produced, and what its SBOM needs."""

    image: Any
    layers: list[tuple[str, Any]]
    project: Any
    cache: Any
    deps_site: Path | None = None  # the recipe's pex site-packages
    scan_layers: Any = None  # the layers whose dpkg status (and dist-infos) the SBOM reads
    pex_ran: bool = False  # the recipe ran pex (its deps were in no cache)
    layer_cache: Any = None  # the registry layer cache (registry.layercache), if on


def _assemble(args: argparse.Namespace, out: _Out) -> _Built:
    """Build the image the flags describe (recipe or plain)."""
    from ..image.assemble import ImageBuilder
    from ..image.compress import Compression
    from ..image.layer import LayerSource, build_layer, scan_sources, source_date_epoch
    from ..inputs.context import check_secrets, secrets_allowed

    cache = _cache(args)
    project = _project(args)
    extra = [LayerSource.parse(s) for s in args.layer or []]
    opts = _registry_options(args) if _needs_registry(project.base) else None
    lc = _layer_cache(args, cache)
    if _uses_recipe(args, project):
        from ..azureml.recipe import build_azureml_image

        res = build_azureml_image(project, cache, extra_layers=extra, log=out.log, registry_options=opts,
                                  on_bytes=out.reporter.layer_bytes, allow_secrets=secrets_allowed(args.allow_secrets),
                                  layer_cache=lc, debug=args.debug)
        image, layers = res.image, res.layers
        base_count = len(image.manifest.layers) - len(layers)
        scan = list(image.manifest.layers[:base_count])
        if res.deps_site is None:  # the deps layer came from the registry cache: the SBOM reads its dist-infos
            scan += [l.descriptor for kind, l in layers if kind == "python-deps"]
        return _Built(image, layers, project, cache, res.deps_site, scan, res.pex_ran, lc)
    from ..inputs.base import load_base

    if not project.base and not extra:
        raise UsageError("nothing to build: give --base and/or --layer SRC:DEST, or a score.py (see 'ociassemble build --help')")
    scanned = [scan_sources([src]) for src in extra]  # once: checked here, built below
    check_secrets([e for entries in scanned for e in entries], allow=secrets_allowed(args.allow_secrets), warn=out.log)
    # "scratch" is the empty base, as in a Dockerfile's FROM scratch (never Docker Hub's library/scratch)
    base = load_base(project.base, cache, registry_options=opts) if project.base not in (None, "", "scratch") else None
    b = ImageBuilder(cache, base)
    compression = Compression.parse(project.compression, args.compression_level)
    layers = []
    for src, entries in zip(extra, scanned):
        out.log(f"layer {src.src} -> {src.dest}")
        layer = build_layer(cache, [src], compression=compression, entries=entries, on_bytes=out.reporter.layer_bytes,
                            remote=lc)
        b.add_layer(layer, src.created_by())
        layers.append((f"{src.dest}", layer))
    cfg = b.config.with_env(project.env)
    if project.labels:
        cfg = replace(cfg, labels={**cfg.labels, **project.labels})
    if args.cmd is not None:
        cfg = replace(cfg, cmd=tuple(json.loads(args.cmd)) if args.cmd.startswith("[") else tuple(args.cmd.split()))
    if args.entrypoint is not None:
        cfg = replace(cfg, entrypoint=tuple(json.loads(args.entrypoint)) if args.entrypoint.startswith("[") else tuple(args.entrypoint.split()))
    if args.port:
        cfg = replace(cfg, exposed_ports=tuple(sorted(set(cfg.exposed_ports) | {p if "/" in p else f"{p}/tcp" for p in args.port})))
    if args.workdir:
        cfg = replace(cfg, working_dir=args.workdir)
    b.config = cfg
    image = b.build(created=source_date_epoch())
    return _Built(image, layers, project, cache, layer_cache=lc)


def _needs_registry(base: str | None) -> bool:
    if not base:
        return False
    from ..transport.spec import parse_spec

    return parse_spec(base).kind == "docker"


def _write_output(image: Any, cache: Any, spec_text: str) -> None:
    from ..transport.archive import write_docker_archive, write_oci_archive
    from ..transport.layout import write_layout
    from ..transport.spec import parse_spec

    spec = parse_spec(spec_text, for_output=True)
    assert spec.path is not None
    try:
        if spec.kind == "oci":
            write_layout(image, cache, spec.path, spec.tag)
        elif spec.kind == "oci-archive":
            write_oci_archive(image, cache, spec.path, spec.tag)
        else:
            write_docker_archive(image, cache, spec.path, spec.tag)
    except OSError as exc:
        from ..image.cache import disk_full

        full = disk_full(exc, spec.path.parent.resolve(), "write the output elsewhere (--output)")
        if full is None:
            raise
        raise full from exc


def _layers_json(layers: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    return [{"what": kind, "digest": l.descriptor.digest, "size": l.descriptor.size, "mediaType": l.descriptor.media_type,
             "diffID": l.diff_id, "reused": l.reused, "source": l.outcome} for kind, l in layers]


def _work_json(built: _Built | None, out: _Out) -> dict[str, Any]:
    """``work`` and ``registry_cache`` of a build's result: what was compressed, held by
    reference or stored uncompressed, reused, taken from the registry cache, whether pex
    ran; the counts also go to the log (a kind this build did not do is left out there)."""
    layers = [l for _, l in built.layers] if built else []
    work = {"layers_compressed": sum(l.outcome == "compressed" for l in layers),
            "layers_held_by_reference": sum(l.outcome == "held" for l in layers),
            "layers_stored_uncompressed": sum(l.outcome == "uncompressed" for l in layers),
            "layers_reused": sum(l.outcome == "reused" for l in layers),
            "layers_from_registry_cache": sum(l.outcome == "registry" for l in layers),
            "pex_ran": bool(built and built.pex_ran)}
    lc = built.layer_cache if built else None
    if built:
        made = [f"{work['layers_compressed']} compressed"]
        if work["layers_held_by_reference"]:
            made.append(f"{work['layers_held_by_reference']} held by reference")
        if work["layers_stored_uncompressed"]:
            made.append(f"{work['layers_stored_uncompressed']} stored uncompressed")
        out.log(f"layers: {', '.join(made)}, {work['layers_reused']} reused from the local "
                f"index, {work['layers_from_registry_cache']} from the registry cache"
                + ("; pex ran" if work["pex_ran"] else ""))
    return {"work": work, "registry_cache": None if lc is None else
            {"repository": lc.name, "read": lc.read, "write": lc.write_enabled, **lc.stats.to_json()}}


def _sbom(image: Any, cache: Any, out: _Out, *, name: str, repository: str | None = None,
          site: Path | None = None, scan: Any = None) -> bytes:
    """The image's SPDX SBOM bytes (see ``ociassemble.image.sbom``)."""
    from ..image.layer import source_date_epoch
    from ..image.sbom import image_packages, sbom_bytes, spdx_document

    out.log("listing packages for the SBOM")
    packages = image_packages(image, cache, site=site, layers=scan)
    return sbom_bytes(spdx_document(image, packages, name=name, created=source_date_epoch(), repository=repository))


def cmd_build(args: argparse.Namespace, out: _Out) -> int:
    from ..transport.spec import parse_spec

    spec = args.output or None
    if spec:
        parse_spec(spec, for_output=True)  # a bad --output fails before any work
    built = _assemble(args, out)
    image, cache = built.image, built.cache
    spec = built.project.output or "oci-archive:image.tar"
    _write_output(image, cache, spec)
    data: dict[str, Any] = {"digest": image.digest, "output": spec, "layers": _layers_json(built.layers),
                            "config": image.manifest.config.digest, **_work_json(built, out)}
    out.log(f"wrote {spec}")
    if args.sbom:
        from ..image.sbom import sbom_path

        target = parse_spec(spec, for_output=True).path
        assert target is not None
        path = sbom_path(target)
        # the SBOM names the output by its file name only: a folder (the checkout's) is not the image's
        named = f"{parse_spec(spec, for_output=True).kind}:{target.name}"
        path.write_bytes(_sbom(image, cache, out, name=named, site=built.deps_site, scan=built.scan_layers))
        data["sbom"] = str(path)
        out.log(f"wrote {path}")
    out.result(data, image.digest)
    return 0


def cmd_push(args: argparse.Namespace, out: _Out) -> int:
    from ..registry.push import push_image

    cache = _cache(args)
    built: _Built | None = None
    if args.source:
        from ..inputs.base import load_image

        opts = _registry_options(args) if _needs_registry(args.source) else None
        image = load_image(args.source, cache, registry_options=opts, verify_diff_ids=True)
    else:
        args.output = None
        built = _assemble(args, out)
        image, cache = built.image, built.cache
        if not args.refs and built.project.image:
            args.refs = [built.project.image]
    if not args.refs:
        raise UsageError("push needs a destination, e.g. 'ociassemble push registry.example.com/team/model:1.0'")
    out.log(f"pushing {image.digest} to {', '.join(args.refs)}")
    options = replace(_registry_options(args), on_wait=lambda registry, seconds: out.log(
        f"registry {registry} asked to slow down: waiting {seconds:.1f} s before any request to it"))
    res = push_image(image, cache, list(args.refs), options=options, on_bytes=out.reporter.blob_bytes)
    if args.digest_file:
        Path(args.digest_file).write_text(res.digest + "\n")
    out.log(f"pushed: {len(res.blobs_uploaded)} blobs uploaded ({human_size(res.bytes_uploaded)}), "
            f"{len(res.blobs_mounted)} mounted, {len(res.blobs_skipped)} already there")
    lc = built.layer_cache if built else None
    if built and lc is not None and lc.write_enabled:  # only once the image is pushed
        from ..registry.reference import parse_reference as _ref

        pushed = _ref(args.refs[0])
        written = lc.write([l for _, l in built.layers], mount_from=f"{pushed.registry}/{pushed.repository}")
        out.log(f"registry cache {lc.name}: {written} entries written")
    data = {**res.to_json(), "layers": _layers_json(built.layers if built else []), **_work_json(built, out)}
    if args.sbom:
        from ..image.layer import source_date_epoch
        from ..image.sbom import SPDX_MEDIA_TYPE
        from ..registry.reference import parse_reference
        from ..registry.sbom import push_sbom

        first = parse_reference(args.refs[0])
        sbom = _sbom(image, cache, out, name=str(first), repository=f"{first.registry}/{first.repository}",
                     site=built.deps_site if built else None, scan=built.scan_layers if built else None)
        artifact, refs = push_sbom(image, cache, sbom, list(args.refs), options=options, created=source_date_epoch())
        data["sbom"] = {"digest": artifact.digest, "refs": refs, "artifactType": SPDX_MEDIA_TYPE, "size": len(sbom)}
        out.log(f"pushed the SBOM {artifact.digest[:19]} as {', '.join(refs)}")
    out.result(data, res.digest)
    return 0


def cmd_verify(args: argparse.Namespace, out: _Out) -> int:
    """Rebuild from the inputs (as ``build`` would, writing no output) and compare with ``--against``:
    0 and the digest when they are the same image, 1 and the first difference otherwise."""
    from ..image.verify import compare_images
    from ..inputs.base import load_image
    from ..transport.spec import parse_spec

    if args.sbom:
        raise UsageError("verify writes nothing: drop --sbom (build and push make SBOMs)")
    spec = parse_spec(args.against)  # a bad --against fails before any work
    if spec.kind == "rootfs":
        raise UsageError(f"--against {args.against}: a rootfs is not an image; give a registry reference, "
                         "oci:DIR, oci-archive:FILE or docker-archive:FILE")
    args.output = None
    built = _assemble(args, out)
    opts = _registry_options(args) if spec.kind == "docker" else None
    out.log(f"comparing with {args.against}")
    given = load_image(spec, built.cache, registry_options=opts)
    report = compare_images(built.image, given, built.cache, name=args.against,
                            compressed_comparable=spec.kind != "docker-archive")
    if report.equal:
        out.log(f"{args.against} is the image these inputs build"
                + (" (compared by config: a docker-archive keeps no compressed layers)"
                   if report.compared_by == "config" else ""))
    out.result(report.to_json(), report.render())
    return 0 if report.equal else EXIT_USER


def cmd_pull(args: argparse.Namespace, out: _Out) -> int:
    from ..registry.pull import pull_image

    cache = _cache(args)
    image = pull_image(args.ref, cache, options=_registry_options(args))
    _write_output(image, cache, args.dest)  # fetches the layers into the cache, verified
    out.result({"digest": image.digest, "output": args.dest}, image.digest)
    return 0


def cmd_inspect(args: argparse.Namespace, out: _Out) -> int:
    from ..image.describe import INSPECT_SCHEMA_VERSION, describe_image, layer_entries, render_entry, render_image
    from ..inputs.base import load_image

    if args.list and args.layer is None:
        raise UsageError("--list needs --layer N (the layer's index, from 'ociassemble inspect IMAGE')")
    cache = _cache(args)
    opts = _registry_options(args) if _needs_registry(args.image) else None
    try:
        image = load_image(args.image, cache, registry_options=opts)
    except NotAnImageError as exc:
        from ..image.describe import describe_artifact, render_artifact

        if args.layer is not None:
            raise UsageError(f"{args.image} is an OCI artifact, not an image: it has blobs, not layers; "
                             "drop --layer") from None
        art = describe_artifact(exc.manifest, exc.manifest_bytes, name=args.image)
        out.result(art, render_artifact(art))
        return 0
    doc = describe_image(image, name=args.image)
    if args.layer is None:
        out.result(doc, render_image(doc))
        return 0
    if not 0 <= args.layer < len(doc["layers"]):
        raise UsageError(f"--layer {args.layer}: the image has {len(doc['layers'])} layers, numbered 0 to "
                         f"{len(doc['layers']) - 1}")
    layer = doc["layers"][args.layer]
    if not args.list:
        out.result({"schemaVersion": INSPECT_SCHEMA_VERSION, "digest": doc["digest"], "layer": layer},
                   "\n".join(f"{k}: {v}" for k, v in layer.items()))
        return 0
    out.reporter.close()
    if out.as_json:
        entries = list(layer_entries(image, cache, args.layer))
        out.result({"schemaVersion": INSPECT_SCHEMA_VERSION, "digest": doc["digest"], "layer": layer,
                    "entries": entries}, "")
        return 0
    for entry in layer_entries(image, cache, args.layer):  # streamed: a big layer prints as it is read
        print(render_entry(entry))
    return 0


def parse_publish(items: Sequence[str]) -> dict[int, int]:
    """``[127.0.0.1:]HOSTPORT:PORT`` flags as {host port: container port} (loopback only)."""
    out: dict[int, int] = {}
    for item in items:
        parts = item.split(":")
        if len(parts) == 3:
            host, parts = parts[0], parts[1:]
            if host not in ("127.0.0.1", "localhost"):
                raise UsageError(f"--publish {item!r}: ports are published on 127.0.0.1 only")
        try:
            host_port, port = (int(parts[0]), int(parts[1])) if len(parts) == 2 else (int(parts[0]), int(parts[0]))
        except (ValueError, IndexError):
            raise UsageError(f"--publish {item!r}: expected [127.0.0.1:]HOSTPORT:PORT, e.g. 8080:5001") from None
        if not (0 < host_port < 65536 and 0 < port < 65536):
            raise UsageError(f"--publish {item!r}: ports are 1 to 65535")
        out[host_port] = port
    return out


def cmd_run(args: argparse.Namespace, out: _Out) -> int:
    from ..inputs.base import load_image
    from ..run.container import run_image

    cache = _cache(args)
    opts = _registry_options(args) if _needs_registry(args.image) else None
    image = load_image(args.image, cache, registry_options=opts)
    publish = parse_publish(args.publish or [])

    def ready(_: object) -> None:
        urls = ", ".join(f"http://127.0.0.1:{h}/ -> {c}" for h, c in publish.items())
        out.log(f"running {image.digest[:19]}" + (f"; serving {urls}" if urls else "") + "; Ctrl-C stops it")

    return run_image(image, cache, publish=publish, env=_kv(args.env, "--env"), on_ready=ready)


def cmd_cache(args: argparse.Namespace, out: _Out) -> int:
    """``cache verify [--fix]`` (exit 1 if unsound and not fixed) and ``cache prune --older-than DAYS``."""
    cache = _cache(args)
    if args.action == "verify":
        report = cache.verify(fix=args.fix)
        out.result(report.to_json(), report.summary())
        return 0 if report.clean or args.fix else EXIT_USER
    if args.older_than is None:
        raise UsageError("cache prune needs --older-than DAYS, e.g. 'ociassemble cache prune --older-than 30'")
    pruned = cache.prune(args.older_than, dry_run=args.dry_run)
    out.result(pruned.to_json(), f"{'would remove' if args.dry_run else 'removed'} {len(pruned.removed)} blobs "
                                 f"({human_size(pruned.bytes)}) not used by the layer index for {args.older_than:g} days")
    return 0


def cmd_make_base(args: argparse.Namespace, out: _Out) -> int:
    from ..azureml.debianbase import make_base

    path = make_base(_cache(args), force=args.force, log=out.log)
    out.result({"base": f"oci:{path}"}, f"oci:{path}")
    return 0


def cmd_init(args: argparse.Namespace, out: _Out) -> int:
    from ..azureml.project import STARTER_CONFIG

    target = Path(args.path) / "ociassemble.toml"
    if target.exists() and not args.force:
        raise UsageError(f"{target} already exists; pass --force to overwrite it")
    target.write_text(STARTER_CONFIG)
    out.result({"config": str(target)}, f"wrote {target}")
    return 0


def cmd_login(args: argparse.Namespace, out: _Out) -> int:
    from ..registry.login import login

    opts = _registry_options(args)
    if not opts.username or opts.password is None:
        raise UsageError("login needs --username and --password-stdin (e.g. echo \"$TOKEN\" | ociassemble login REG -u USER --password-stdin)")
    login(args.registry, opts.username, opts.password, options=opts)
    out.result({"registry": args.registry, "username": opts.username}, f"Login Succeeded for {args.registry}")
    return 0


# -- completion ----------------------------------------------------------------

def _parser_words(parser: argparse.ArgumentParser) -> tuple[dict[str, list[str]], dict[str, list[str]], list[str]]:
    """(flags of each command, the choices of flags/positionals that have some, flags taking a path)."""
    commands: dict[str, list[str]] = {}
    choices: dict[str, list[str]] = {}
    paths: set[str] = set()
    for action in parser._actions:  # argparse keeps its parsers here; shtab reads the same
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                flags = []
                for a in sub._actions:
                    flags += a.option_strings
                    if a.choices and a.option_strings:
                        for o in a.option_strings:
                            choices[o] = [str(c) for c in a.choices]
                    elif a.choices:
                        choices[f"@{name}"] = [str(c) for c in a.choices]
                    if a.metavar in ("FILE", "DIR", "SPEC", "IMAGE", "SRC:DEST") and a.option_strings:
                        paths.update(a.option_strings)
                commands[name] = sorted(flags)
    return commands, choices, sorted(paths)


def completion_script(shell: str, parser: argparse.ArgumentParser | None = None) -> str:
    """A completion script for ``shell`` (bash or zsh), generated from the parser itself so it
    never falls behind the flags. zsh loads the bash function through ``bashcompinit``.

    Example::

        source <(ociassemble completion bash)
    """
    commands, choices, paths = _parser_words(parser or build_parser())
    cases = "\n".join(f"        {name}) opts=\"{' '.join(flags)}\" ;;" for name, flags in sorted(commands.items()))
    value_cases = "\n".join(f"        {flag}) COMPREPLY=($(compgen -W \"{' '.join(words)}\" -- \"$cur\")); return ;;"
                             for flag, words in sorted(choices.items()) if not flag.startswith("@"))
    positional = "\n".join(f"        {flag[1:]}) COMPREPLY=($(compgen -W \"{' '.join(words)}\" -- \"$cur\")); return ;;"
                            for flag, words in sorted(choices.items()) if flag.startswith("@"))
    script = f"""# {PROG} {shell} completion, generated by '{PROG} completion {shell}'
_{PROG.replace('-', '_')}() {{
    local cur prev cmd opts i
    COMPREPLY=()
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    cmd=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
            -*) ;;
            *) cmd="${{COMP_WORDS[i]}}"; break ;;
        esac
    done
    if [[ -z "$cmd" ]]; then
        COMPREPLY=($(compgen -W "{' '.join(sorted(commands))} --help --version" -- "$cur"))
        return
    fi
    case "$prev" in
{value_cases}
        {'|'.join(paths) or '--no-such-flag'}) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    esac
    case "$cmd" in
{cases}
        *) opts="" ;;
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        return
    fi
    case "$cmd" in
{positional}
    esac
    COMPREPLY=($(compgen -W "oci: oci-archive: docker-archive: docker://" -- "$cur") $(compgen -f -- "$cur"))
}}
complete -o default -F _{PROG.replace('-', '_')} {PROG}
"""
    if shell == "zsh":
        return f"#compdef {PROG}\n# load with: autoload -U compinit && compinit; source <({PROG} completion zsh)\n" \
               f"autoload -U +X bashcompinit && bashcompinit\n" + script
    return script


def cmd_completion(args: argparse.Namespace, out: _Out) -> int:
    sys.stdout.write(completion_script(args.shell))
    return 0


# -- parser ------------------------------------------------------------------

EPILOG = """\
examples:
  ociassemble make-base                            # once: a Debian base with python3, nginx, runit
  ociassemble build --model model.pkl -o oci-archive:image.tar   # in a folder with score.py
  ociassemble run oci-archive:image.tar --publish 8080:5001      # serve it, no daemon
  ociassemble push localhost:5000/team/model:1.0   # build and push from the cache

exit codes: 0 ok, 1 bad input or environment, 2 registry or network, 3 internal error (a bug), 130 interrupted.
environment: OCIASSEMBLE_USERNAME, OCIASSEMBLE_PASSWORD (registry credentials), OCIASSEMBLE_CACHE (the cache),
             OCIASSEMBLE_CACHE_REPO (a registry layer cache, as --cache-repo; off when unset),
             SOURCE_DATE_EPOCH (every timestamp in the image; default 0).
docs: docs/index.md in the source tree; shell completion: ociassemble completion bash|zsh
"""


class _Parser(argparse.ArgumentParser):
    """argparse with ociassemble's exit code for bad flags (1: the user's input), not argparse's 2
    (which ociassemble means as "registry or network")."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USER, f"{self.prog}: error: {message}\n")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", metavar="DIR", help="blob cache (default $OCIASSEMBLE_CACHE or ~/.cache/ociassemble)")
    p.add_argument("--json", action="store_true", help="print one JSON result on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the result")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")


def _registry_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("registry")
    g.add_argument("-u", "--username", help=f"registry user (or ${ENV_USERNAME}; default: docker config)")
    g.add_argument("--password-stdin", action="store_true",
                   help=f"read the password or token from stdin (or ${ENV_PASSWORD}); never on the command line")
    g.add_argument("--ca-cert", metavar="FILE", help="trust this CA certificate for the registry's TLS")
    g.add_argument("--insecure-registry", action="append", metavar="HOST[:PORT]",
                   help="allow plain HTTP to this registry (localhost is always allowed)")


def _build_flags(p: argparse.ArgumentParser, with_output: bool = True) -> None:
    p.add_argument("path", nargs="?", default=".", help="project folder (default: .)")
    p.add_argument("--config", metavar="FILE", help="config file (default: ./ociassemble.toml or [tool.ociassemble] in pyproject.toml)")
    g = p.add_argument_group("scoring image (the AzureML recipe)")
    g.add_argument("--entry-script", metavar="FILE", help="the script with init() and run() (default: score.py)")
    g.add_argument("--source-dir", metavar="DIR", help="folder shipped with it (default: the entry script's folder)")
    g.add_argument("--source-name", metavar="NAME",
                   help="its folder's name in the image, /var/azureml-app/NAME (default: src, whatever the checkout's "
                        "folder is called)")
    g.add_argument("-m", "--model", action="append", metavar="PATH[:NAME[:VERSION]]", help="model file or folder (repeatable)")
    g.add_argument("-r", "--requirements", metavar="FILE", help="requirements.txt for run()'s Python packages")
    g.add_argument("--conda-file", metavar="FILE", help="conda environment .yml (its pip list and PyPI-available packages)")
    g.add_argument("--install-serving-stack", action="store_true", default=None,
                   help="install azureml-defaults, azureml-inference-server-http and azureml-contrib-services when "
                        "the environment lists them (default: the image provides them; not installed)")
    g.add_argument("--plain", action="store_true", help="ignore the recipe: assemble only --base and --layer")
    g2 = p.add_argument_group("image")
    g2.add_argument("--base", metavar="IMAGE", help="base image: oci:DIR, oci-archive:FILE, docker-archive:FILE, a registry reference, a rootfs tarball/folder, or scratch (empty; the default with --plain)")
    g2.add_argument("--layer", action="append", metavar="SRC:DEST", help="add a layer with SRC at in-image DEST (repeatable)")
    g2.add_argument("--cmd", help="image Cmd: a JSON array or a space-separated string")
    g2.add_argument("--entrypoint", help="image Entrypoint: a JSON array or a space-separated string")
    g2.add_argument("-e", "--env", action="append", metavar="KEY=VALUE", help="environment variable (repeatable)")
    g2.add_argument("-p", "--port", action="append", metavar="PORT[/PROTO]", help="exposed port (repeatable)")
    g2.add_argument("--label", action="append", metavar="KEY=VALUE", help="image label (repeatable)")
    g2.add_argument("--workdir", metavar="DIR", help="image WorkingDir")
    g2.add_argument("--source-url", help="org.opencontainers.image.source label")
    g2.add_argument("--revision", help="org.opencontainers.image.revision label (e.g. the git commit)")
    g2.add_argument("--compression", choices=("auto", "gzip", "zstd", "none"),
                    help="layer compression (default auto: gzip, or none where content barely compresses)")
    g2.add_argument("--compression-level", type=int, metavar="N", help="gzip 0-12 (libdeflate; default 1, 6 = gzip -6's size), zstd 1-19 (default 3)")
    g2.add_argument("--allow-secrets", action="store_true",
                    help="include files named like secrets (.env, *.pem, id_rsa, .netrc, …) instead of refusing "
                         "them, with a warning (or $OCIASSEMBLE_ALLOW_SECRETS=1)")
    g3 = p.add_argument_group("registry layer cache (off unless named; see docs/registry-cache.md)")
    g3.add_argument("--cache-repo", metavar="REF",
                    help=f"a registry repository shared by runners as the layer cache: read on build, read and "
                         f"written on push (or ${ENV_CACHE_REPO})")
    g3.add_argument("--cache-from", metavar="REF", help="only read the layer cache in this repository")
    g3.add_argument("--cache-to", metavar="REF", help="push: write the layer cache entries there after the image push")
    g3.add_argument("--no-cache-repo", action="store_true", help=f"no registry layer cache, whatever ${ENV_CACHE_REPO} says")
    p.add_argument("--sbom", action="store_true",
                   help="also make an SPDX 2.3 SBOM (Python and Debian packages): written beside the output as "
                        "<output>.sbom.spdx.json; on push, pushed as an OCI artifact referring to the image")
    if with_output:
        p.add_argument("-o", "--output", metavar="SPEC", help="oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME:TAG] (default: oci-archive:image.tar)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Assemble OCI images for Python model serving, deterministically, with no Docker daemon.",
        epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, func: Callable[..., int], help_: str, example: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_, epilog=f"example:\n  {example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        _common(p)
        return p

    p = add("build", cmd_build, "Build an image: the scoring image from score.py + model, or any image from --base + --layer.",
            "ociassemble build --model model.pkl -r requirements.txt -o oci-archive:image.tar")
    _build_flags(p)
    _registry_flags(p)

    p = add("push", cmd_push, "Build (from the cache) and push to a registry, or push an image already built (--from).",
            "ociassemble push registry.example.com/team/model:1.0 --model model.pkl")
    p.add_argument("refs", nargs="*", metavar="REF", help="destination reference(s); several tags push one image")
    p.add_argument("--from", dest="source", metavar="IMAGE", help="push this image instead of building: oci:DIR, oci-archive:FILE, …")
    p.add_argument("--digest-file", metavar="FILE", help="write the pushed manifest digest here")
    _build_flags(p, with_output=False)
    p.set_defaults(path=".")
    _registry_flags(p)

    p = add("verify", cmd_verify, "Rebuild the project from its inputs and compare with an image: exit 0 and its "
            "digest when they are the same, 1 and the first difference (a layer's file, only its compression, the "
            "config key) when not.",
            "ociassemble verify . --against registry.example.com/team/model:1.0")
    p.add_argument("--against", required=True, metavar="IMAGE",
                   help="the image to check: a registry reference (docker://REF), oci:DIR[:TAG], oci-archive:FILE[:TAG] "
                        "or docker-archive:FILE[:NAME:TAG]")
    _build_flags(p, with_output=False)
    _registry_flags(p)

    p = add("pull", cmd_pull, "Pull an image from a registry into an OCI layout or archive.",
            "ociassemble pull localhost:5000/team/model:1.0 oci:./model-image")
    p.add_argument("ref", help="registry reference, e.g. localhost:5000/team/model:1.0")
    p.add_argument("dest", metavar="SPEC", help="oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME:TAG]")
    _registry_flags(p)

    p = add("inspect", cmd_inspect, "Show an image's digest, platform, config and layers (a registry image: "
            "manifest and config only), or list the files of one layer.",
            "ociassemble inspect oci-archive:image.tar --json\n"
            "  ociassemble inspect localhost:5000/team/model:1.0 --layer 3 --list")
    p.add_argument("image", metavar="IMAGE", help="oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG] "
                   "or a registry reference")
    p.add_argument("--layer", type=int, metavar="N", help="only layer N (0 is the bottom one)")
    p.add_argument("--list", action="store_true", help="with --layer N: list its files (a registry image: fetches that layer only)")
    _registry_flags(p)

    p = add("run", cmd_run, "Run an image without a daemon (namespaces + chroot); publish its port on 127.0.0.1.",
            "ociassemble run oci-archive:image.tar --publish 8080:5001")
    p.add_argument("image", metavar="IMAGE", help="the image to run (any transport, or a registry reference)")
    p.add_argument("--publish", action="append", metavar="[127.0.0.1:]HOSTPORT:PORT", help="publish a container port on the host's loopback")
    p.add_argument("-e", "--env", action="append", metavar="KEY=VALUE", help="extra environment (repeatable)")
    _registry_flags(p)

    p = add("make-base", cmd_make_base, "Build the default base (Debian bookworm + python3, nginx, runit) with mmdebstrap.",
            "ociassemble make-base")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")

    p = add("init", cmd_init, "Write a commented starter ociassemble.toml.", "ociassemble init")
    p.add_argument("path", nargs="?", default=".", help="project folder (default: .)")
    p.add_argument("--force", action="store_true", help="overwrite an existing ociassemble.toml")

    p = add("login", cmd_login, "Store registry credentials in the docker config.",
            "echo \"$TOKEN\" | ociassemble login registry.example.com -u ci --password-stdin")
    p.add_argument("registry", help="registry host[:port]")
    _registry_flags(p)

    p = add("cache", cmd_cache, "Check the blob cache (re-hash every blob; --fix removes what is unsound), "
            "or prune blobs the layer index does not use.",
            "ociassemble cache verify --fix\n  ociassemble cache prune --older-than 30")
    p.add_argument("action", choices=("verify", "prune"), help="verify: re-hash and check; prune: remove old unused blobs")
    p.add_argument("--fix", action="store_true", help="verify: remove corrupt blobs, abandoned temp files and "
                   "layer-index records naming missing blobs")
    p.add_argument("--older-than", type=float, metavar="DAYS", help="prune: blobs unmodified for this many days")
    p.add_argument("--dry-run", action="store_true", help="prune: only list what would go")

    p = add("completion", cmd_completion, "Print a shell completion script for bash or zsh.",
            "source <(ociassemble completion bash)      # or add it to ~/.bashrc")
    p.add_argument("shell", choices=("bash", "zsh"), help="the shell to complete for")
    return parser


#: Seconds the cleanup after Ctrl-C/SIGTERM may take before the process leaves anyway.
INTERRUPT_GRACE = 15


class _Interrupts:
    """Ctrl-C and SIGTERM: the first raises KeyboardInterrupt, so the cleanup paths run
    (temp files removed, the cache left consistent), and arms an alarm; when the cleanup
    does not finish within ``grace`` seconds (a lock held by the interrupted code), or a
    second signal comes, the process exits 130 at once. What that can leave (a temp file
    in the cache's tmp/, a ``.<output>.tmp-<pid>-…`` beside the output) the next run or
    ``cache verify --fix`` removes: outputs are only ever renamed into place whole."""

    def __init__(self, grace: float = INTERRUPT_GRACE) -> None:
        self.grace = grace
        self.count = 0

    def install(self) -> None:
        self._previous = {sig: signal.signal(sig, handler) for sig, handler in
                          ((signal.SIGINT, self.on_signal), (signal.SIGTERM, self.on_signal),
                           (signal.SIGALRM, self.on_alarm))}

    def uninstall(self) -> None:
        """Disarm and put the previous handlers back (``main`` may run inside another program).

        After an interrupt they stay: the deadline must also cover the interpreter's exit,
        which joins the worker threads (concurrent.futures) and could wait there.
        """
        if self.count:
            return
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in getattr(self, "_previous", {}).items():
            signal.signal(sig, handler)

    def on_signal(self, signum: int, frame: object) -> None:
        self.count += 1
        if self.count > 1:
            self._leave("interrupted again; leaving now")
        signal.setitimer(signal.ITIMER_REAL, self.grace)
        raise KeyboardInterrupt

    def on_alarm(self, signum: int, frame: object) -> None:
        self._leave(f"interrupted; the cleanup did not finish in {self.grace:g} s, leaving now "
                    "(the next run removes what it left)")

    @staticmethod
    def _leave(message: str) -> None:
        try:
            os.write(2, f"{PROG}: {message}\n".encode())
        finally:
            os._exit(EXIT_INTERRUPTED)


def _error_line(exc: BaseException) -> str:
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER
    out = _Out(args.quiet or args.json, args.json)
    # SIGTERM behaves like Ctrl-C: the same cleanup paths (temp files removed) run, in bounded time.
    interrupts = _Interrupts()
    interrupts.install()
    try:
        return args.func(args, out)
    except OciAssembleError as exc:
        out.reporter.close()
        if args.debug:
            traceback.print_exc()
        print(f"{PROG}: error: {_error_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        out.reporter.close()
        print(f"{PROG}: interrupted; nothing was left half-written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (e.g. `inspect --layer 0 --list | head`): not an error of ours
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return EXIT_USER
    except OSError as exc:
        out.reporter.close()
        if args.debug:
            traceback.print_exc()
        import errno

        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            print(f"{PROG}: error: no space left on device ({exc.filename or 'output'}): free space or use --cache-dir elsewhere", file=sys.stderr)
        else:
            print(f"{PROG}: error: {exc.filename or ''}: {exc.strerror}", file=sys.stderr)
        return EXIT_USER
    except Exception:  # noqa: BLE001 - anything else is a bug: keep its traceback, say so, exit 3
        out.reporter.close()
        traceback.print_exc()
        print(f"{PROG}: this is a bug in ociassemble {__version__}: please report it with the traceback above",
              file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        out.reporter.close()
        interrupts.uninstall()


def entry() -> None:
    """The console script: ``main``, then leave with its exit code.

    After an interrupt (exit 130) the cleanup has already run, and the process leaves at
    once: the interpreter's own exit (joining worker threads) is where a signal that came
    in during the cleanup was seen to surface as a second KeyboardInterrupt, ending the
    process by SIGINT (exit -2, about one run in 100 with SIGTERM at a random early point).
    """
    code = main()
    if code == EXIT_INTERRUPTED:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
