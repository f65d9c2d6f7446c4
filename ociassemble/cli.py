"""The command line: thin commands over the library, one error line per failure.

Each command parses its flags, calls one library function and prints its result
(``--json`` for machines). Errors of the ``OciAssembleError`` family print as one
line and set the exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

from . import __version__
from .errors import EXIT_INTERRUPTED, EXIT_USER, OciAssembleError, UsageError

__all__ = ["main"]

PROG = "ociassemble"


class _Out:
    """Where messages go: progress lines to stderr (unless --quiet), results to stdout."""

    def __init__(self, quiet: bool, as_json: bool) -> None:
        self.quiet = quiet
        self.as_json = as_json

    def log(self, msg: str) -> None:
        if not self.quiet:
            print(f"{PROG}: {msg}", file=sys.stderr, flush=True)

    def result(self, data: dict[str, Any], text: str) -> None:
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
    from .cache import BlobCache, default_cache_dir

    return BlobCache(Path(args.cache_dir) if args.cache_dir else default_cache_dir())


def _registry_options(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from .registry import RegistryOptions

    password = None
    if getattr(args, "password_stdin", False):
        password = sys.stdin.readline().rstrip("\r\n")
    elif os.environ.get("OCIASSEMBLE_PASSWORD"):
        password = os.environ["OCIASSEMBLE_PASSWORD"]
    return RegistryOptions(
        username=getattr(args, "username", None) or os.environ.get("OCIASSEMBLE_USERNAME"),
        password=password,
        ca_cert=getattr(args, "ca_cert", None),
        insecure_registries=tuple(getattr(args, "insecure_registry", None) or ()),
    )


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
    from .azureml.project import ModelSpec, load_project

    root = Path(args.path)
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder: give the project folder (default: .)")
    project = load_project(root, Path(args.config) if args.config else None)
    cwd = Path.cwd()
    if args.entry_script:
        project.entry_script = cwd / args.entry_script
    if args.source_dir:
        project.source_dir = cwd / args.source_dir
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
    if args.base:
        project.base = args.base
    if args.output:
        project.output = args.output
    if args.compression:
        project.compression = args.compression
    project.env.update(_kv(args.env, "--env"))
    project.labels.update(_kv(args.label, "--label"))
    if args.source_url:
        project.source_url = args.source_url
    if args.revision:
        project.revision = args.revision
    return project


def _assemble(args: argparse.Namespace, out: _Out):  # type: ignore[no-untyped-def]
    """Build the image the flags describe (recipe or plain) and return (image, layers, project)."""
    from .compress import Compression
    from .image import ImageBuilder
    from .layer import LayerSource, build_layer, source_date_epoch

    cache = _cache(args)
    project = _project(args)
    extra = [LayerSource.parse(s) for s in args.layer or []]
    opts = _registry_options(args) if _needs_registry(project.base) else None
    if _uses_recipe(args, project):
        from .azureml.recipe import build_azureml_image

        res = build_azureml_image(project, cache, extra_layers=extra, log=out.log, registry_options=opts)
        image, layers = res.image, res.layers
    else:
        from .base import load_base

        if not project.base and not extra:
            raise UsageError("nothing to build: give --base and/or --layer SRC:DEST, or a score.py (see 'ociassemble build --help')")
        base = load_base(project.base, _cache(args), registry_options=opts) if project.base else None
        b = ImageBuilder(cache, base)
        compression = Compression.parse(project.compression, args.compression_level)
        layers = []
        for src in extra:
            out.log(f"layer {src.src} -> {src.dest}")
            layer = build_layer(cache, [src], compression=compression)
            b.add_layer(layer, f"ociassemble: layer {src.src.name} -> {src.dest}")
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
    return image, layers, project, cache


def _needs_registry(base: str | None) -> bool:
    if not base:
        return False
    from .transport import parse_spec

    return parse_spec(base).kind == "docker"


def _write_output(image: Any, cache: Any, spec_text: str) -> None:
    from .archive import write_docker_archive, write_oci_archive
    from .layout import write_layout
    from .transport import parse_spec

    spec = parse_spec(spec_text, for_output=True)
    assert spec.path is not None
    if spec.kind == "oci":
        write_layout(image, cache, spec.path, spec.tag)
    elif spec.kind == "oci-archive":
        write_oci_archive(image, cache, spec.path, spec.tag)
    else:
        write_docker_archive(image, cache, spec.path, spec.tag)


def _layers_json(layers: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    return [{"what": kind, "digest": l.descriptor.digest, "size": l.descriptor.size, "mediaType": l.descriptor.media_type,
             "diffID": l.diff_id, "reused": l.reused} for kind, l in layers]


def cmd_build(args: argparse.Namespace, out: _Out) -> int:
    from .transport import parse_spec

    spec = args.output or None
    if spec:
        parse_spec(spec, for_output=True)  # a bad --output fails before any work
    image, layers, project, cache = _assemble(args, out)
    spec = project.output or "oci-archive:image.tar"
    _write_output(image, cache, spec)
    data = {"digest": image.digest, "output": spec, "layers": _layers_json(layers), "config": image.manifest.config.digest}
    out.log(f"wrote {spec}")
    out.result(data, image.digest)
    return 0


def cmd_push(args: argparse.Namespace, out: _Out) -> int:
    from .registry.push import push_image

    cache = _cache(args)
    layers: list[tuple[str, Any]] = []
    if args.source:
        from .base import load_image

        image = load_image(args.source, cache)
    else:
        args.output = None
        image, layers, project, cache = _assemble(args, out)
        if not args.refs and project.image:
            args.refs = [project.image]
    if not args.refs:
        raise UsageError("push needs a destination, e.g. 'ociassemble push registry.example.com/team/model:1.0'")
    out.log(f"pushing {image.digest} to {', '.join(args.refs)}")
    res = push_image(image, cache, list(args.refs), options=_registry_options(args))
    if args.digest_file:
        Path(args.digest_file).write_text(res.digest + "\n")
    out.log(f"pushed: {len(res.blobs_uploaded)} blobs uploaded ({_human(res.bytes_uploaded)}), "
            f"{len(res.blobs_mounted)} mounted, {len(res.blobs_skipped)} already there")
    data = {**res.to_json(), "layers": _layers_json(layers)}
    out.result(data, res.digest)
    return 0


def cmd_pull(args: argparse.Namespace, out: _Out) -> int:
    from .registry.pull import pull_image

    cache = _cache(args)
    image = pull_image(args.ref, cache, options=_registry_options(args))
    _write_output(image, cache, args.dest)  # fetches the layers into the cache, verified
    out.result({"digest": image.digest, "output": args.dest}, image.digest)
    return 0


def cmd_inspect(args: argparse.Namespace, out: _Out) -> int:
    from .base import load_image

    cache = _cache(args)
    opts = _registry_options(args) if _needs_registry(args.image) else None
    image = load_image(args.image, cache, registry_options=opts)
    cfg = image.config
    hist = [h for h in cfg.history if not h.empty_layer]
    layers = []
    for i, (d, diff) in enumerate(zip(image.manifest.layers, cfg.diff_ids)):
        layers.append({"digest": d.digest, "size": d.size, "mediaType": d.media_type, "diffID": diff,
                       "createdBy": hist[i].created_by if i < len(hist) else ""})
    data = {"digest": image.digest, "platform": str(cfg.platform), "config": image.manifest.config.digest,
            "cmd": list(cfg.cmd) if cfg.cmd is not None else None,
            "entrypoint": list(cfg.entrypoint) if cfg.entrypoint is not None else None,
            "env": list(cfg.env), "exposedPorts": list(cfg.exposed_ports), "workingDir": cfg.working_dir,
            "labels": cfg.labels, "created": cfg.created, "layers": layers}
    lines = [f"Digest:     {image.digest}", f"Platform:   {cfg.platform}", f"Created:    {cfg.created}",
             f"Cmd:        {json.dumps(data['cmd'])}", f"Entrypoint: {json.dumps(data['entrypoint'])}",
             f"WorkingDir: {cfg.working_dir or ''}", f"Ports:      {' '.join(cfg.exposed_ports)}", "Env:"]
    lines += [f"  {e}" for e in cfg.env]
    lines += ["Labels:"] + [f"  {k}={v}" for k, v in sorted(cfg.labels.items())]
    lines.append(f"Layers ({len(layers)}):")
    for i, l in enumerate(layers):
        lines.append(f"  {i:>2}  {l['digest'][7:19]}  {_human(l['size']):>9}  {l['createdBy']}")
    out.result(data, "\n".join(lines))
    return 0


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


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
    from .base import load_image
    from .run import run_image

    cache = _cache(args)
    opts = _registry_options(args) if _needs_registry(args.image) else None
    image = load_image(args.image, cache, registry_options=opts)
    publish = parse_publish(args.publish or [])

    def ready(_: object) -> None:
        urls = ", ".join(f"http://127.0.0.1:{h}/ -> {c}" for h, c in publish.items())
        out.log(f"running {image.digest[:19]}" + (f"; serving {urls}" if urls else "") + "; Ctrl-C stops it")

    return run_image(image, cache, publish=publish, env=_kv(args.env, "--env"), on_ready=ready)


def cmd_make_base(args: argparse.Namespace, out: _Out) -> int:
    from .azureml.debianbase import make_base

    path = make_base(_cache(args), force=args.force, log=out.log)
    out.result({"base": f"oci:{path}"}, f"oci:{path}")
    return 0


def cmd_init(args: argparse.Namespace, out: _Out) -> int:
    from .azureml.project import STARTER_CONFIG

    target = Path(args.path) / "ociassemble.toml"
    if target.exists() and not args.force:
        raise UsageError(f"{target} already exists; pass --force to overwrite it")
    target.write_text(STARTER_CONFIG)
    out.result({"config": str(target)}, f"wrote {target}")
    return 0


def cmd_login(args: argparse.Namespace, out: _Out) -> int:
    from .registry.auth import login

    opts = _registry_options(args)
    if not opts.username or opts.password is None:
        raise UsageError("login needs --username and --password-stdin (e.g. echo \"$TOKEN\" | ociassemble login REG -u USER --password-stdin)")
    login(args.registry, opts.username, opts.password, options=opts)
    out.result({"registry": args.registry, "username": opts.username}, f"Login Succeeded for {args.registry}")
    return 0


# -- parser ------------------------------------------------------------------

EPILOG = """\
examples:
  ociassemble make-base                            # once: a Debian base with python3, nginx, runit
  ociassemble build --model model.pkl -o oci-archive:image.tar   # in a folder with score.py
  ociassemble run oci-archive:image.tar --publish 8080:5001      # serve it, no daemon
  ociassemble push localhost:5000/team/model:1.0   # build and push from the cache

exit codes: 0 ok, 1 bad input or environment, 2 registry or network, 3 internal error, 130 interrupted.
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", metavar="DIR", help="blob cache (default $OCIASSEMBLE_CACHE or ~/.cache/ociassemble)")
    p.add_argument("--json", action="store_true", help="print one JSON result on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the result")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")


def _registry_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("registry")
    g.add_argument("-u", "--username", help="registry user (or $OCIASSEMBLE_USERNAME; default: docker config)")
    g.add_argument("--password-stdin", action="store_true", help="read the password or token from stdin (or $OCIASSEMBLE_PASSWORD)")
    g.add_argument("--ca-cert", metavar="FILE", help="trust this CA certificate for the registry's TLS")
    g.add_argument("--insecure-registry", action="append", metavar="HOST[:PORT]",
                   help="allow plain HTTP to this registry (localhost is always allowed)")


def _build_flags(p: argparse.ArgumentParser, with_output: bool = True) -> None:
    p.add_argument("path", nargs="?", default=".", help="project folder (default: .)")
    p.add_argument("--config", metavar="FILE", help="config file (default: ./ociassemble.toml or [tool.ociassemble] in pyproject.toml)")
    g = p.add_argument_group("scoring image (the AzureML recipe)")
    g.add_argument("--entry-script", metavar="FILE", help="the script with init() and run() (default: score.py)")
    g.add_argument("--source-dir", metavar="DIR", help="folder shipped with it (default: the entry script's folder)")
    g.add_argument("-m", "--model", action="append", metavar="PATH[:NAME[:VERSION]]", help="model file or folder (repeatable)")
    g.add_argument("-r", "--requirements", metavar="FILE", help="requirements.txt for run()'s Python packages")
    g.add_argument("--conda-file", metavar="FILE", help="conda environment .yml (its pip list and PyPI-available packages)")
    g.add_argument("--plain", action="store_true", help="ignore the recipe: assemble only --base and --layer")
    g2 = p.add_argument_group("image")
    g2.add_argument("--base", metavar="IMAGE", help="base image: oci:DIR, oci-archive:FILE, docker-archive:FILE, a registry reference, or a rootfs tarball/folder")
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
    g2.add_argument("--compression-level", type=int, metavar="N", help="gzip 0-3 (ISA-L), zstd 1-19")
    if with_output:
        p.add_argument("-o", "--output", metavar="SPEC", help="oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME:TAG] (default: oci-archive:image.tar)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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

    p = add("pull", cmd_pull, "Pull an image from a registry into an OCI layout or archive.",
            "ociassemble pull localhost:5000/team/model:1.0 oci:./model-image")
    p.add_argument("ref")
    p.add_argument("dest", metavar="SPEC")
    _registry_flags(p)

    p = add("inspect", cmd_inspect, "Show an image's digest, platform, config and layers.",
            "ociassemble inspect oci-archive:image.tar --json")
    p.add_argument("image", metavar="IMAGE")
    _registry_flags(p)

    p = add("run", cmd_run, "Run an image without a daemon (namespaces + chroot); publish its port on 127.0.0.1.",
            "ociassemble run oci-archive:image.tar --publish 8080:5001")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--publish", action="append", metavar="[127.0.0.1:]HOSTPORT:PORT", help="publish a container port on the host's loopback")
    p.add_argument("-e", "--env", action="append", metavar="KEY=VALUE", help="extra environment (repeatable)")
    _registry_flags(p)

    p = add("make-base", cmd_make_base, "Build the default base (Debian bookworm + python3, nginx, runit) with mmdebstrap.",
            "ociassemble make-base")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")

    p = add("init", cmd_init, "Write a commented starter ociassemble.toml.", "ociassemble init")
    p.add_argument("path", nargs="?", default=".")
    p.add_argument("--force", action="store_true")

    p = add("login", cmd_login, "Store registry credentials in the docker config.",
            "echo \"$TOKEN\" | ociassemble login registry.example.com -u ci --password-stdin")
    p.add_argument("registry")
    _registry_flags(p)
    return parser


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER
    out = _Out(args.quiet or args.json, args.json)
    # SIGTERM behaves like Ctrl-C: the same cleanup paths (temp files removed) run.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return args.func(args, out)
    except OciAssembleError as exc:
        if args.debug:
            raise
        message = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing was left half-written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_USER
    except OSError as exc:
        if args.debug:
            raise
        import errno

        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            print(f"{PROG}: error: no space left on device ({exc.filename or 'output'}): free space or use --cache-dir elsewhere", file=sys.stderr)
        else:
            print(f"{PROG}: error: {exc.filename or ''}: {exc.strerror}", file=sys.stderr)
        return EXIT_USER


if __name__ == "__main__":
    sys.exit(main())
