"""One registry's distribution API: manifests and blobs, each request authorized and its answer judged.

Every request to a registry goes through ``RegistryClient.request``: it applies the
Authorization header for the operation's scopes (``auth``), answers one 401 challenge,
and turns each outcome into a return value or one of two errors:
``TransientRegistryError`` (connection failures, timeouts, 5xx, 408, 429: worth
retrying) or a plain ``RegistryError``/``AuthError`` (anything else: retrying cannot
help). The HTTP session, TLS and network failures are ``http``'s; retrying a whole
operation and the shared waits are ``retry``'s; the upload requests are ``upload``'s.
Nothing from ``requests`` or ``urllib3`` leaves this package.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import requests
import urllib3.exceptions

from ..errors import AuthError, RegistryError, TransientRegistryError
from ..image.digest import CHUNK
from ..redact import Secrets, clean
from .auth import Authenticator
from .credentials import CredentialFiles, Credentials, resolve_credentials, same_registry
from .http import ANSWER_MAX, DEFAULT_TIMEOUT, Origin, RegistryHttp, registry_errors, short_reason
from .retry import DEFAULT_RETRY, FAST_RETRY, RetryPolicy, call_with_retry, parse_retry_after

__all__ = [
    "DEFAULT_RETRY",
    "FAST_RETRY",
    "MANIFEST_ACCEPT",
    "RegistryClient",
    "RegistryOptions",
    "RetryPolicy",
    "TransientRegistryError",
    "call_with_retry",
]

log = logging.getLogger("ociassemble.registry")


#: What we accept for a manifest GET: OCI and docker schema2, manifests and indexes.
MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
#: Blobs up to this size go up in one PUT; bigger ones in PATCH chunks.
DEFAULT_MONOLITHIC_MAX = 8 << 20
#: Size of one PATCH: big enough that per-request overhead is noise, small enough that
#: a dropped connection costs little when the registry can resume.
DEFAULT_CHUNK_SIZE = 64 << 20
#: Uploads running at once in a push (go-containerregistry and skopeo use 4 too).
DEFAULT_CONCURRENCY = 4


@dataclass(frozen=True)
class RegistryOptions:
    """How to reach registries: credentials, TLS, retries, parallelism (for push and pull).

    ``username``/``password`` override the docker config for one registry only:
    ``credentials_registry`` (host[:port]; None: the registry of the one operation these
    options are given to, e.g. ``push_image``'s target, which fills it in). Every other
    registry the operation reads (a base, a layer cache) gets its own credentials from the
    docker config or its helpers, never these. ``credential_files`` say where the stored
    credentials are (``Settings.registry``: ``$REGISTRY_AUTH_FILE``, ``$DOCKER_CONFIG``; default
    ~/.docker/config.json); ``docker_config``, a config.json (or its directory), is the one
    file read and written by ``login`` instead. ``secrets`` collects every credential
    sent (passwords, tokens) so that output can be cleaned of them (``redact.clean``); the
    copies ``dataclasses.replace`` makes share it. A host in
    ``insecure_registries`` is tried over HTTPS without verification, then plain HTTP;
    loopback hosts may use plain HTTP but their certificates are still verified.

    Example::

        RegistryOptions(ca_cert=Path("ca.pem"), retry=FAST_RETRY, concurrency=2)
    """

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_cert: Path | str | None = None
    insecure_registries: tuple[str, ...] = ()
    retry: RetryPolicy = DEFAULT_RETRY
    concurrency: int = DEFAULT_CONCURRENCY
    docker_config: Path | str | None = None
    credential_files: CredentialFiles = CredentialFiles()
    chunk_size: int = DEFAULT_CHUNK_SIZE
    monolithic_max: int = DEFAULT_MONOLITHIC_MAX
    timeout: tuple[float, float] = DEFAULT_TIMEOUT
    #: Told ``(registry, seconds)`` when a registry asks us to wait and every request to
    #: it pauses (the CLI prints it as a progress line). Called from upload threads.
    on_wait: Callable[[str, float], None] | None = field(default=None, compare=False)
    credentials_registry: str | None = None
    secrets: Secrets = field(default_factory=Secrets, compare=False)

    def __post_init__(self) -> None:
        if self.password and self.username:
            self.secrets.add_login(self.username, self.password)
        elif self.password:
            self.secrets.add(self.password)

    def scoped_to(self, registries: tuple[str, ...] | list[str]) -> RegistryOptions:
        """These options with the explicit credentials bound to ``registries``' one registry,
        unless bound already. Raises UsageError when explicit credentials would have to
        serve several registries."""
        from ..errors import UsageError

        if self.credentials_registry is not None or not (self.username or self.password):
            return self
        distinct = list(dict.fromkeys(registries))
        if len(distinct) > 1:
            raise UsageError(f"--username/--password-stdin (or $OCIASSEMBLE_USERNAME/$OCIASSEMBLE_PASSWORD) are for one "
                             f"registry, and {', '.join(distinct)} are several: push to one registry at a time, or "
                             "'ociassemble login' to each and leave the credentials to the docker config")
        return replace(self, credentials_registry=distinct[0]) if distinct else self

    def __repr__(self) -> str:
        hidden = "<hidden>" if self.password else None
        return (f"RegistryOptions(username={self.username!r}, password={hidden}, "
                f"credentials_registry={self.credentials_registry!r}, ca_cert={self.ca_cert!r}, "
                f"insecure_registries={self.insecure_registries!r}, retry={self.retry!r}, "
                f"concurrency={self.concurrency}, docker_config={self.docker_config!r}, "
                f"credential_files={self.credential_files!r})")




_STATUS_HINTS = {
    403: "the account may not do this; check its permissions on the repository",
    404: "",
    405: "the registry does not allow this operation (is it a read-only mirror?)",
    413: "the registry or a proxy in front of it refuses a request this big; raise its body-size limit "
         "(e.g. nginx client_max_body_size)",
    507: "the registry is out of storage; free space on it or ask its operator",
}




class RegistryClient:
    """Talks to one registry host; one per registry, shared by a push's or pull's threads.

    Example::

        client = RegistryClient("127.0.0.1:5000", RegistryOptions())
        exists = client.blob_exists("team/app", "sha256:…", client.scopes("team/app", push=True))
    """

    def __init__(self, registry: str, options: RegistryOptions | None = None) -> None:
        self.registry = registry
        self.options = options or RegistryOptions()
        o = self.options
        self.http = RegistryHttp(registry, ca_cert=o.ca_cert, insecure_registries=o.insecure_registries,
                                 concurrency=o.concurrency, timeout=o.timeout, retry=o.retry, on_wait=o.on_wait)
        self._base: str | None = None
        self._ping_lock = threading.Lock()
        self.secrets = o.secrets
        mine = o.credentials_registry is None or same_registry(o.credentials_registry, registry)
        if (o.username or o.password) and not mine:
            log.debug("the credentials given are for %s: %s gets its own from the docker config, if any",
                      o.credentials_registry, registry)
        self.credentials: Credentials | None = resolve_credentials(
            registry, username=o.username if mine else None, password=o.password if mine else None,
            config_path=o.docker_config, files=o.credential_files)
        if self.credentials is not None:
            self.secrets.add_login(self.credentials.username, self.credentials.password)
        self.auth = Authenticator(registry, self.credentials, self.http, self.secrets)

    def __repr__(self) -> str:
        return f"RegistryClient({self.registry!r}, base={self._base!r}, auth={self.auth!r})"

    def close(self) -> None:
        self.http.close()

    # -- scopes -------------------------------------------------------------
    @staticmethod
    def scopes(repo: str, *, push: bool = False, mount_from: tuple[str, ...] = ()) -> tuple[str, ...]:
        """The token scopes an operation on ``repo`` needs (plus pull on mount sources)."""
        own = f"repository:{repo}:pull,push" if push else f"repository:{repo}:pull"
        return tuple(sorted({own, *(f"repository:{r}:pull" for r in mount_from if r != repo)}))

    # -- where the registry answers ------------------------------------------------------------
    def base_url(self) -> str:
        """``https://host`` or, where allowed and the registry does not speak TLS, ``http://host``.

        The first call pings ``/v2/`` (learning the auth challenge); later calls are free.
        """
        if self._base is not None:
            return self._base
        with self._ping_lock:
            if self._base is None:
                self._base = self._ping()
        return self._base

    def _ping(self) -> str:
        https = f"https://{self.http.host}"
        try:
            resp = self.http.send("GET", https + "/v2/", what="contacting the registry")
            base = https
        except RegistryError as exc:
            tls = RegistryHttp.is_tls_failure(exc)
            verify_failed = "TLS verification" in str(exc)
            if not (self.http.plain_ok and tls and (not verify_failed or self.http.explicit_insecure)):
                raise
            log.debug("%s does not speak TLS; using plain HTTP (allowed for this host)", self.registry)
            base = f"http://{self.http.host}"
            resp = self.http.send("GET", base + "/v2/", what="contacting the registry")
        if resp.status_code == 401:
            self.auth.unauthorized(resp.headers.get("WWW-Authenticate"), (), None)
        elif resp.status_code >= 500 or resp.status_code == 429:
            raise TransientRegistryError(f"registry {self.registry} answered HTTP {resp.status_code} to /v2/",
                                         status=resp.status_code, retry_after=parse_retry_after(resp.headers.get("Retry-After")))
        elif resp.status_code == 404:
            raise RegistryError(f"{self.registry} is not a container registry (HTTP 404 on /v2/): check the host and port",
                                status=404)
        resp.close()
        return base

    def url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return self.base_url() + path_or_url

    def request(self, method: str, path_or_url: str, *, scopes: tuple[str, ...], what: str,
                ok: tuple[int, ...] = (200,), headers: dict[str, str] | None = None, data: Any = None,
                params: Any = None, stream: bool = False, digest: str | None = None,
                repo: str | None = None, body_max: int = ANSWER_MAX) -> requests.Response:
        """Send with auth; return the response if its status is in ``ok``.

        Unless ``stream``, the body is read now, at most ``body_max`` bytes (``http.answer_body``).

        Answers one 401 challenge (fetching or refreshing a token) and resends. Raises
        TransientRegistryError for 5xx/408/429 (with Retry-After) and network failures,
        AuthError for refused credentials, RegistryError for any other status; each
        message is one line naming ``what``, the status and the registry's error codes.
        """
        url = self.url(path_or_url)
        base = self.base_url()
        # credentials only for the registry's own origin (an upload Location may name another)
        ours = Origin.of(url) == Origin.of(base)
        authorization = self.auth.authorization(scopes) if ours else None
        resp = self.http.send(method, url, headers=headers, data=data, params=params, auth=authorization,
                              origin=base, stream=stream, what=what, body_max=body_max)
        # a challenge counts only from the registry itself: another origin (reached by a
        # Location or a redirect) must not point our credentials at a realm of its choosing
        if resp.status_code == 401 and ours and Origin.of(resp.url) == Origin.of(base):
            retry_scopes = self.auth.unauthorized(resp.headers.get("WWW-Authenticate"), scopes, authorization)
            if retry_scopes is not None:
                resp.close()
                authorization = self.auth.authorization(retry_scopes)
                resp = self.http.send(method, url, headers=headers, data=data, params=params, auth=authorization,
                                      origin=base, stream=stream, what=what, body_max=body_max)
        if resp.status_code in ok:
            return resp
        raise self.error(resp, what, digest=digest, repo=repo)

    def error(self, resp: requests.Response, what: str, *, digest: str | None = None,
              repo: str | None = None) -> RegistryError:
        """The one-line error for an unexpected response (and close it)."""
        status = resp.status_code
        codes, detail = registry_errors(resp) if resp.request.method != "HEAD" else ((), "")
        resp.close()
        where = f"{self.registry}/{repo}" if repo else self.registry
        # the registry's own words: no credential it echoes, no terminal control bytes
        detail, phrase = clean(detail, self.secrets)[:500], clean(str(resp.reason or ""), self.secrets)[:100]
        codes = tuple(clean(c, self.secrets)[:100] for c in codes)
        reason = f"HTTP {status}" + (f" {detail}" if detail else f" {phrase}" if phrase else "")
        message = f"{what} at {where} failed: {reason}"
        if status in (408, 429) or status >= 500 and status != 507:
            if status >= 500:
                message += " (the registry failed; it may recover, try again later)"
            return TransientRegistryError(message, status=status, codes=codes, digest=digest,
                                          retry_after=parse_retry_after(resp.headers.get("Retry-After")))
        if status == 401:
            if self.credentials is None:
                return AuthError(f"{message}: this needs credentials; run 'ociassemble login {self.registry}' "
                                 "or pass --username and --password-stdin", status=status, codes=codes, digest=digest)
            if self.auth.challenge is not None and self.auth.challenge.scheme == "bearer":
                # the token server accepted the credentials, the registry not the token's access
                return AuthError(f"{message}: user {self.credentials.username!r} was not granted this access; "
                                 "check the account's permissions on the repository", status=status, codes=codes,
                                 digest=digest)
            return AuthError(f"{message}: the registry refused the credentials of user {self.credentials.username!r}"
                             f" (from {self.credentials.source}); check them or run 'ociassemble login {self.registry}'",
                             status=status, codes=codes, digest=digest)
        if status == 403 or "DENIED" in codes:
            return AuthError(f"{message}: {_STATUS_HINTS[403]}", status=status, codes=codes, digest=digest)
        hint = _STATUS_HINTS.get(status, "")
        if "NAME_INVALID" in codes or "NAME_UNKNOWN" in codes:
            hint = f"the registry refuses the repository name {repo!r}; choose another name or create it on the registry"
        return RegistryError(f"{message}: {hint}" if hint else message, status=status, codes=codes, digest=digest)

    # -- the distribution API ---------------------------------------------------
    def blob_exists(self, repo: str, digest: str, scopes: tuple[str, ...]) -> bool:
        resp = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scopes=scopes, ok=(200, 404),
                            what=f"checking blob {digest}", digest=digest, repo=repo)
        resp.close()
        return resp.status_code == 200

    def blob_info(self, repo: str, digest: str, scopes: tuple[str, ...]) -> tuple[int, str] | None:
        """HEAD a blob: (its Content-Length, the Docker-Content-Digest or "") if the repository has it, else None."""
        resp = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scopes=scopes, ok=(200, 404),
                            what=f"checking blob {digest}", digest=digest, repo=repo)
        resp.close()
        if resp.status_code != 200:
            return None
        try:
            size = int(resp.headers.get("Content-Length", "-1"))
        except ValueError:
            size = -1
        return size, resp.headers.get("Docker-Content-Digest", "")

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str, scopes: tuple[str, ...]) -> str:
        """PUT a manifest by tag or digest; returns the digest the registry reports (if any)."""
        resp = self.request("PUT", f"/v2/{repo}/manifests/{reference}", scopes=scopes, ok=(201, 200, 202),
                            data=data, headers={"Content-Type": media_type},
                            what=f"pushing manifest {reference}", repo=repo)
        resp.close()
        return resp.headers.get("Docker-Content-Digest", "")

    def get_manifest(self, repo: str, reference: str, scopes: tuple[str, ...]) -> tuple[bytes, str, str]:
        """(exact bytes, Content-Type, Docker-Content-Digest or "") of a manifest or index."""
        from ..image.oci import MANIFEST_MAX  # (here: login and the other commands that read none skip image.oci)

        resp = self.request("GET", f"/v2/{repo}/manifests/{reference}", scopes=scopes, ok=(200,),
                            headers={"Accept": MANIFEST_ACCEPT}, stream=True,
                            what=f"reading manifest {reference}", repo=repo)
        try:
            data = self._read_limited(resp, MANIFEST_MAX, f"manifest {reference}")
        finally:
            resp.close()
        ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
        return data, ctype, resp.headers.get("Docker-Content-Digest", "")

    def open_blob(self, repo: str, digest: str, scopes: tuple[str, ...]) -> requests.Response:
        """A streaming response for a blob (redirects followed); the caller closes it."""
        return self.request("GET", f"/v2/{repo}/blobs/{digest}", scopes=scopes, ok=(200,), stream=True,
                            what=f"downloading blob {digest}", digest=digest, repo=repo)

    def read_blob(self, repo: str, digest: str, scopes: tuple[str, ...], limit: int) -> bytes:
        resp = self.open_blob(repo, digest, scopes)
        try:
            return self._read_limited(resp, limit, f"blob {digest}")
        finally:
            resp.close()

    def _read_limited(self, resp: requests.Response, limit: int, what: str) -> bytes:
        """At most ``limit`` bytes of the body, as sent (never decompressed: a small compressed
        answer must not grow past the limit in memory), else RegistryError."""
        encoding = (resp.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding != "identity":
            raise RegistryError(f"{what} from {self.registry} came with Content-Encoding {clean(encoding)[:40]}, "
                                "although none was asked for: a proxy in front of the registry may be compressing it")
        chunks, total = [], 0
        try:
            while True:
                chunk = resp.raw.read(min(CHUNK, limit + 1 - total), decode_content=False)
                if not chunk:
                    break
                total += len(chunk)
                if total > limit:
                    raise RegistryError(f"{what} from {self.registry} is bigger than {limit} bytes: refusing it")
                chunks.append(chunk)
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise TransientRegistryError(f"reading {what} from {self.registry}: connection failed ({short_reason(exc)})") from exc
        return b"".join(chunks)
