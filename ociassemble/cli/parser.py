"""The command line's grammar: the commands, their flags and help texts, and argparse's exit code made ours.

Each command is set as its module's ``cmd_*`` function, looked up when the parser is
built (a test may replace one).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

from .. import __version__
from ..errors import EXIT_USER
from .progress import PROG
from . import build, cache, completion, init, inspect, keygen, lock, login, make_base, pull, push, run, verify

__all__ = ["EPILOG", "build_parser"]

# The environment the settings are read from (settingsload, settingparts.ENV_*), named here as
# text so that `--help` and completion do not import the registry code (test_cli checks they agree).
ENV_USERNAME = "OCIASSEMBLE_USERNAME"
ENV_PASSWORD = "OCIASSEMBLE_PASSWORD"
ENV_CACHE_REPO = "OCIASSEMBLE_CACHE_REPO"
ENV_SIGN_KEY = "OCIASSEMBLE_SIGN_KEY"
ENV_COSIGN_PASSWORD = "COSIGN_PASSWORD"
# The default bases' Pythons (azureml.debianbase.RELEASES, named here as text for the same reason)
PYTHONS = ("3.9", "3.11", "3.13")
PYTHON_CHOICES = "3.9 (Debian bullseye), 3.11 (bookworm) or 3.13 (trixie)"

EPILOG = """\
examples:
  ociassemble make-base                            # once: a Debian base with python3, nginx, runit
  ociassemble build --model model.pkl -o oci-archive:image.tar   # in a folder with score.py
  ociassemble run oci-archive:image.tar --publish 8080:5001      # serve it, no daemon
  ociassemble push localhost:5000/team/model:1.0   # build and push from the cache
  ociassemble make-base --platform linux/arm64     # once: the arm64 base (no qemu needed)
  ociassemble push --platform linux/amd64,linux/arm64 localhost:5000/team/model:1.0   # one tag, both
  ociassemble push --sign-key cosign.key --provenance localhost:5000/team/model:1.0   # signed, as cosign does
  ociassemble verify localhost:5000/team/model:1.0 --key cosign.pub --provenance

exit codes: 0 ok, 1 bad input or environment, 2 registry or network, 3 internal error (a bug), 130 interrupted.
environment: OCIASSEMBLE_USERNAME, OCIASSEMBLE_PASSWORD (registry credentials), OCIASSEMBLE_CACHE (the cache),
             OCIASSEMBLE_CACHE_REPO (a registry layer cache, as --cache-repo; off when unset),
             OCIASSEMBLE_SIGN_KEY (push --sign-key), COSIGN_PASSWORD (the signing key's password),
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


def _apt_flags(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    g = p.add_argument_group("Debian packages (see docs/debian-packages.md)")
    g.add_argument("--apt-mirror", metavar="URL",
                   help="the Debian mirror (the folder holding dists/ and pool/; default: this machine's apt sources)")
    g.add_argument("--apt-keyring", metavar="FILE",
                   help="check the mirror's InRelease with this OpenPGP keyring (default: the apt source's Signed-By, "
                        "else /usr/share/keyrings/debian-archive-keyring.gpg)")
    return g


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
    g.add_argument("--python", metavar="3.X",
                   help=f"the image's Python, which picks the default base: {PYTHON_CHOICES} (default: the conda "
                        "file's python pin, else 3.11)")
    g.add_argument("--plain", action="store_true", help="ignore the recipe: assemble only --base and --layer")
    gv = p.add_argument_group("Azure ML v1 files (see docs/azureml-v1.md)")
    gv.add_argument("--inference-config", metavar="FILE",
                    help="an inferenceconfig.json (or .yml), as 'az ml model deploy --ic' takes (default: the project "
                         "folder's inferenceconfig.json)")
    gv.add_argument("--deploy-config", metavar="FILE",
                    help="a deploymentconfig.json, as 'az ml model deploy --dc' takes: its container settings become "
                         "image Env (default: the deploymentconfig.json beside the inference config)")
    gv.add_argument("--environment", metavar="DIR",
                    help="an Azure ML environment as 'az ml environment scaffold' or Environment.save_to_directory "
                         "write it (a folder with azureml_environment.json, or that file)")
    g2 = p.add_argument_group("image")
    g2.add_argument("--base", metavar="IMAGE", help="base image: oci:DIR, oci-archive:FILE, docker-archive:FILE, a registry reference, a rootfs tarball/folder, or scratch (empty; the default with --plain)")
    g2.add_argument("--platform", metavar="OS/ARCH[,...]",
                    help="build for this platform, e.g. linux/arm64, or for several as one multi-platform image (an OCI "
                         "index): linux/amd64,linux/arm64. Each needs its base: 'make-base --platform', or a "
                         "multi-platform --base (default: the base's own, this machine's)")
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
    p.add_argument("--locked", action="store_true",
                   help="fail (exit 1, nothing built) unless ociassemble.lock matches the inputs, instead of resolving "
                        "without it (for CI; see 'ociassemble lock')")
    g4 = _apt_flags(p)
    g4.add_argument("--apt-package", action="append", metavar="NAME",
                    help="add this Debian package (and what it depends on) from the base's own release, e.g. "
                         "libgomp1 (repeatable; or apt = [...] in the config)")
    p.add_argument("--sbom", action="store_true",
                   help="also make an SPDX 2.3 SBOM (Python and Debian packages): written beside the output as "
                        "<output>.sbom.spdx.json; on push, pushed as an OCI artifact referring to the image")
    if with_output:
        p.add_argument("-o", "--output", metavar="SPEC", help="oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME:TAG] (default: oci-archive:image.tar)")


#: ``add(name, cmd_function, help, example)``: a command's subparser, with the common flags
_Adder = Callable[[str, Callable[..., int], str, str], argparse.ArgumentParser]


def _add_build(add: _Adder) -> None:
    p = add("build", build.cmd_build, "Build an image: the scoring image from score.py + model, or any image from --base + --layer.",
            "ociassemble build --model model.pkl -r requirements.txt -o oci-archive:image.tar")
    _build_flags(p)
    _registry_flags(p)


def _add_push(add: _Adder) -> None:
    p = add("push", push.cmd_push, "Build (from the cache) and push to a registry, or push an image already built (--from).",
            "ociassemble push registry.example.com/team/model:1.0 --model model.pkl")
    p.add_argument("refs", nargs="*", metavar="REF", help="destination reference(s); several tags push one image")
    p.add_argument("--from", dest="source", metavar="IMAGE", help="push this image instead of building: oci:DIR, oci-archive:FILE, …")
    p.add_argument("--digest-file", metavar="FILE", help="write the pushed manifest digest here")
    p.add_argument("--no-speculative-upload", action="store_true",
                   help="hash each new model layer before uploading it (two reads), instead of hashing it as it is "
                        "uploaded (one read): for a registry likely to hold it already (or "
                        "$OCIASSEMBLE_SPECULATIVE_UPLOAD=0)")
    g = p.add_argument_group("signing (see docs/signing.md)")
    g.add_argument("--sign-key", metavar="FILE",
                   help=f"sign the pushed image as cosign does (sha256-<hex>.sig), with cosign.key or a PEM ECDSA "
                        f"P-256 key (or ${ENV_SIGN_KEY}, or sign_key in the config)")
    g.add_argument("--sign-key-password-stdin", action="store_true",
                   help=f"read the signing key's password from stdin (or ${ENV_COSIGN_PASSWORD})")
    g.add_argument("--provenance", action="store_true",
                   help="also attach a signed SLSA v1 provenance statement (in-toto, DSSE; sha256-<hex>.att): the "
                        "inputs by digest, the builder, the CI run, the SBOM")
    g.add_argument("--keyless", action="store_true",
                   help="sign with Sigstore (Fulcio certificate from the CI's OIDC token, logged in Rekor) instead of "
                        "a key; needs the sigstore package and the internet (off by default)")
    _build_flags(p, with_output=False)
    p.set_defaults(path=".")
    _registry_flags(p)


def _add_verify(add: _Adder) -> None:
    p = add("verify", verify.cmd_verify, "Rebuild the project from its inputs and compare with an image: exit 0 and its "
            "digest when they are the same, 1 and the first difference (a layer's file, only its compression, the "
            "config key) when not. With --key: check a pushed image's signature (and --provenance) instead.",
            "ociassemble verify . --against registry.example.com/team/model:1.0\n"
            "  ociassemble verify registry.example.com/team/model:1.0 --key cosign.pub --provenance")
    p.add_argument("--against", metavar="IMAGE",
                   help="the image to check: a registry reference (docker://REF), oci:DIR[:TAG], oci-archive:FILE[:TAG] "
                        "or docker-archive:FILE[:NAME:TAG]")
    g = p.add_argument_group("signatures (verify IMAGE --key cosign.pub)")
    g.add_argument("--key", metavar="FILE",
                   help="check the signature of the registry image given as the first argument with this public key "
                        "(cosign.pub): exit 0 and what verified, 1 and why not")
    g.add_argument("--provenance", action="store_true", help="with --key: also check its signed SLSA provenance")
    _build_flags(p, with_output=False)
    _registry_flags(p)


def _add_lock(add: _Adder) -> None:
    p = add("lock", lock.cmd_lock, "Write ociassemble.lock beside the config: each platform's base by digest and every "
            "Python distribution of the deps layer (version, file, index, sha256), and the .debs of its Debian packages "
            "(version, pool path, sha256), so build and push install exactly those files later.",
            "ociassemble lock && git add ociassemble.lock\n  ociassemble lock --upgrade numpy    # re-resolve numpy only")
    p.add_argument("path", nargs="?", default=".", help="project folder (default: .)")
    p.add_argument("--config", metavar="FILE", help="config file (default: ./ociassemble.toml or [tool.ociassemble] in pyproject.toml)")
    p.add_argument("--upgrade", nargs="*", metavar="PKG",
                   help="re-resolve instead of keeping what the lock pins: every distribution and the base (no PKG), "
                        "or only these distributions")
    p.add_argument("-r", "--requirements", metavar="FILE", help="requirements.txt for run()'s Python packages")
    p.add_argument("--conda-file", metavar="FILE", help="conda environment .yml (its pip list and PyPI-available packages)")
    p.add_argument("--install-serving-stack", action="store_true", default=None,
                   help="lock azureml-defaults & co. too when the environment lists them (as build's flag)")
    p.add_argument("--base", metavar="IMAGE", help="base image (as build's --base; default: the make-base one)")
    p.add_argument("--platform", metavar="OS/ARCH[,...]", help="lock for these platforms (default: the config's, else the base's)")
    p.set_defaults(entry_script=None, source_dir=None, source_name=None, model=None, output=None, compression=None,
                   env=None, label=None, source_url=None, revision=None)
    g4 = _apt_flags(p)
    g4.add_argument("--apt-package", action="append", metavar="NAME",
                    help="lock this Debian package too (as build's --apt-package; or apt = [...] in the config)")
    _registry_flags(p)


def _add_pull(add: _Adder) -> None:
    p = add("pull", pull.cmd_pull, "Pull an image from a registry into an OCI layout or archive.",
            "ociassemble pull localhost:5000/team/model:1.0 oci:./model-image")
    p.add_argument("ref", help="registry reference, e.g. localhost:5000/team/model:1.0")
    p.add_argument("dest", metavar="SPEC", help="oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME:TAG]")
    p.add_argument("--platform", metavar="OS/ARCH",
                   help="which image of a multi-platform one, e.g. linux/arm64 (default: this machine's); 'all': "
                        "every platform, kept as an index (oci: and oci-archive: only)")
    _registry_flags(p)


def _add_inspect(add: _Adder) -> None:
    p = add("inspect", inspect.cmd_inspect, "Show an image's digest, platform, config and layers (a registry image: "
            "manifest and config only), or list the files of one layer.",
            "ociassemble inspect oci-archive:image.tar --json\n"
            "  ociassemble inspect localhost:5000/team/model:1.0 --layer 3 --list")
    p.add_argument("image", metavar="IMAGE", help="oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG] "
                   "or a registry reference")
    p.add_argument("--layer", type=int, metavar="N", help="only layer N (0 is the bottom one)")
    p.add_argument("--list", action="store_true", help="with --layer N: list its files (a registry image: fetches that layer only)")
    p.add_argument("--platform", metavar="OS/ARCH",
                   help="show this platform's image of a multi-platform one, e.g. linux/arm64 (default: list the "
                        "platforms it has)")
    _registry_flags(p)


def _add_run(add: _Adder) -> None:
    p = add("run", run.cmd_run, "Run an image without a daemon (namespaces + chroot); publish its port on 127.0.0.1.",
            "ociassemble run oci-archive:image.tar --publish 8080:5001")
    p.add_argument("image", metavar="IMAGE", help="the image to run (any transport, or a registry reference)")
    p.add_argument("--publish", action="append", metavar="[127.0.0.1:]HOSTPORT:PORT", help="publish a container port on the host's loopback")
    p.add_argument("-e", "--env", action="append", metavar="KEY=VALUE", help="extra environment (repeatable)")
    p.add_argument("--platform", metavar="OS/ARCH",
                   help="which image of a multi-platform one to run (default: this machine's); an image for another "
                        "architecture runs through qemu user emulation (qemu-user-static, binfmt_misc)")
    _registry_flags(p)


def _add_make_base(add: _Adder) -> None:
    p = add("make-base", make_base.cmd_make_base, "Build a default base (Debian + python3, nginx, runit) from Debian's .debs: "
            "bookworm (Python 3.11), or bullseye (3.9) or trixie (3.13) with --python.",
            "ociassemble make-base --python 3.9")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.add_argument("--python", choices=PYTHONS, metavar="3.X",
                   help=f"the base's Python: {PYTHON_CHOICES} (default 3.11)")
    p.add_argument("--platform", metavar="OS/ARCH[,...]",
                   help="make the base for this platform, e.g. linux/arm64, or a comma list (default: this machine's); "
                        "any architecture, no emulation (with --with-mmdebstrap, another architecture needs "
                        "qemu-user-static and binfmt-support: mmdebstrap runs its package scripts under emulation)")
    engine = p.add_mutually_exclusive_group()
    engine.add_argument("--from-debs", action="store_true",
                        help="make it from Debian's .debs as ociassemble unpacks them (the default: no mmdebstrap, no "
                             "root, no qemu, any architecture in seconds; maintainer scripts are not run, see "
                             "docs/debian-packages.md)")
    engine.add_argument("--with-mmdebstrap", action="store_true",
                        help="make it with mmdebstrap instead, its maintainer scripts run (needs root and mmdebstrap, "
                             "and qemu for another architecture)")
    _apt_flags(p)


def _add_init(add: _Adder) -> None:
    p = add("init", init.cmd_init, "Write a commented starter ociassemble.toml.", "ociassemble init")
    p.add_argument("path", nargs="?", default=".", help="project folder (default: .)")
    p.add_argument("--force", action="store_true", help="overwrite an existing ociassemble.toml")


def _add_keygen(add: _Adder) -> None:
    p = add("keygen", keygen.cmd_keygen, "Make a signing key pair cosign reads: <prefix>.key (ECDSA P-256, "
            "encrypted with a password) and <prefix>.pub.",
            "COSIGN_PASSWORD=... ociassemble keygen            # writes cosign.key and cosign.pub")
    p.add_argument("--output-key-prefix", default="cosign", metavar="PREFIX",
                   help="write PREFIX.key and PREFIX.pub (default: cosign)")
    p.add_argument("--password-stdin", action="store_true",
                   help=f"read the private key's password from stdin (or ${ENV_COSIGN_PASSWORD}; a terminal asks)")
    p.add_argument("--force", action="store_true", help="replace existing key files")


def _add_login(add: _Adder) -> None:
    p = add("login", login.cmd_login, "Store registry credentials in the docker config.",
            "echo \"$TOKEN\" | ociassemble login registry.example.com -u ci --password-stdin")
    p.add_argument("registry", help="registry host[:port]")
    _registry_flags(p)


def _add_cache(add: _Adder) -> None:
    p = add("cache", cache.cmd_cache, "Check the blob cache (re-hash every blob; --fix removes what is unsound), "
            "or prune blobs the layer index does not use.",
            "ociassemble cache verify --fix\n  ociassemble cache prune --older-than 30")
    p.add_argument("action", choices=("verify", "prune"), help="verify: re-hash and check; prune: remove old unused blobs")
    p.add_argument("--fix", action="store_true", help="verify: remove corrupt blobs, abandoned temp files and "
                   "layer-index records naming missing blobs")
    p.add_argument("--older-than", type=float, metavar="DAYS", help="prune: blobs unmodified for this many days")
    p.add_argument("--dry-run", action="store_true", help="prune: only list what would go")


def _add_completion(add: _Adder, parser: argparse.ArgumentParser) -> None:
    p = add("completion", completion.cmd_completion, "Print a shell completion script for bash or zsh.",
            "source <(ociassemble completion bash)      # or add it to ~/.bashrc")
    p.add_argument("shell", choices=("bash", "zsh"), help="the shell to complete for")
    p.set_defaults(root_parser=parser)  # the script is generated from this very parser


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

    for adder in (_add_build, _add_push, _add_verify, _add_lock, _add_pull, _add_inspect, _add_run, _add_make_base,
                  _add_init, _add_keygen, _add_login, _add_cache):
        adder(add)
    _add_completion(add, parser)
    return parser
