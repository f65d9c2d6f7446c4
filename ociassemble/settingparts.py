"""The parts of ``settings.Settings`` that say how a run reaches things: registries (and where their
credentials are kept), the registry layer cache, the signing key; and the environment variables that
may give them (``settingsload`` reads them, nothing else does)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ENV_ALLOW_SECRETS", "ENV_CACHE", "ENV_CACHE_REPO", "ENV_COSIGN_PASSWORD", "ENV_DOCKER_CONFIG",
           "ENV_PASSWORD", "ENV_REGISTRY_AUTH_FILE", "ENV_SIGN_KEY", "ENV_SOURCE_DATE_EPOCH", "ENV_USERNAME",
           "LayerCacheSettings", "RegistrySettings", "SigningSettings"]

ENV_CACHE = "OCIASSEMBLE_CACHE"
ENV_USERNAME = "OCIASSEMBLE_USERNAME"
ENV_PASSWORD = "OCIASSEMBLE_PASSWORD"
ENV_CACHE_REPO = "OCIASSEMBLE_CACHE_REPO"
ENV_SIGN_KEY = "OCIASSEMBLE_SIGN_KEY"
ENV_COSIGN_PASSWORD = "COSIGN_PASSWORD"
ENV_ALLOW_SECRETS = "OCIASSEMBLE_ALLOW_SECRETS"
#: ``0``/``off``/``false``/``no``: a push that builds hashes each new layer before uploading it
ENV_SPECULATIVE_UPLOAD = "OCIASSEMBLE_SPECULATIVE_UPLOAD"
#: every timestamp in the image (reproducible-builds.org's variable); unset: 0, 1970-01-01
ENV_SOURCE_DATE_EPOCH = "SOURCE_DATE_EPOCH"
#: podman's auth.json, read before docker's config (and the file ``login`` writes when set)
ENV_REGISTRY_AUTH_FILE = "REGISTRY_AUTH_FILE"
#: the folder of docker's config.json (default ~/.docker)
ENV_DOCKER_CONFIG = "DOCKER_CONFIG"
#: what ``$OCIASSEMBLE_CACHE_REPO`` may say to mean "no registry layer cache"
_CACHE_REPO_OFF = ("", "off", "none", "0", "false")



@dataclass(frozen=True)
class RegistrySettings:
    """How to reach registries: explicit credentials (else the docker config's), TLS, plain-HTTP hosts."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a repr, a log or a traceback
    ca_cert: Path | None = None
    insecure_registries: tuple[str, ...] = ()
    #: where stored credentials are looked up, in this order, and ``login`` keeps them (the first):
    #: podman's auth.json (``$REGISTRY_AUTH_FILE``), then docker's config.json in ``docker_config``
    #: (``$DOCKER_CONFIG``; None: ~/.docker). ``registry.credentials.CredentialFiles``
    auth_file: Path | None = None
    docker_config: Path | None = None


@dataclass(frozen=True)
class LayerCacheSettings:
    """The registry layer cache (docs/registry-cache.md): off unless a repository is named."""

    repo: str | None = None  # read, and written on push (``--cache-repo``, ``$OCIASSEMBLE_CACHE_REPO``)
    read_from: str | None = None  # only read (``--cache-from``)
    write_to: str | None = None  # only written, after a push (``--cache-to``)
    off: bool = False  # ``--no-cache-repo``


@dataclass(frozen=True)
class SigningSettings:
    """What ``push`` signs with (docs/signing.md): a key file (or Sigstore keyless) and its password."""

    key: Path | None = None  # ``--sign-key``, else ``$OCIASSEMBLE_SIGN_KEY``, else the config's ``sign_key``
    password: bytes | None = field(default=None, repr=False)  # stdin or ``$COSIGN_PASSWORD``; None: ask or empty
    provenance: bool = False
    keyless: bool = False
    key_from: str | None = None  # where ``key`` was named: "--sign-key", "$OCIASSEMBLE_SIGN_KEY" or "config"
