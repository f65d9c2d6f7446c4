"""One registry over HTTP: a requests.Session, TLS and scheme choice, auth, retries, error translation.

Every request to a registry goes through ``RegistryClient.request``: it applies the
Authorization header for the operation's scopes, answers one 401 challenge, and turns
each outcome into a return value or one of two errors: ``TransientRegistryError``
(connection failures, timeouts, 5xx, 408, 429: worth retrying) or a plain
``RegistryError``/``AuthError`` (anything else: retrying cannot help). Nothing from
``requests`` or ``urllib3`` leaves this package.

Retrying is not done here but by ``call_with_retry`` around a whole operation (one
HEAD, one manifest PUT, one blob upload attempt), so there is exactly one retry layer.
Waiting is shared, though: after a 429 (or a 503 with ``Retry-After``) no request to
that registry starts, from any thread or client of this process, before the time it
asked for has passed (``RegistryGate``); a rate-limited registry otherwise keeps getting
the other parallel uploads' requests during the pause it asked for.
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions

from .. import __version__
from ..errors import AuthError, RegistryError
from ..image.digest import CHUNK
from .auth import Authenticator, Credentials, resolve_credentials

__all__ = [
    "DEFAULT_RETRY",
    "FAST_RETRY",
    "MANIFEST_ACCEPT",
    "BlobSlice",
    "RegistryClient",
    "RegistryGate",
    "RegistryOptions",
    "RetryPolicy",
    "TransientRegistryError",
    "call_with_retry",
]

log = logging.getLogger("ociassemble.registry")

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often one operation is tried and how long to wait between tries.

    The n-th wait is ``initial * factor**(n-1)`` capped at ``max_delay``, times a random
    jitter of ±``jitter``; a ``Retry-After`` from the registry replaces it, capped at
    ``max_retry_after``. After ``attempts`` tries the last error is raised.
    """

    attempts: int = 5
    initial: float = 1.0
    factor: float = 3.0
    max_delay: float = 30.0
    jitter: float = 0.2
    max_retry_after: float = 60.0

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return max(0.0, min(retry_after, self.max_retry_after))
        base = min(self.initial * self.factor ** max(failures - 1, 0), self.max_delay)
        return base * random.uniform(1 - self.jitter, 1 + self.jitter)


#: 5 tries, waiting about 1 s, 3 s, 9 s, 27 s (±20 %): rides out a registry restart or a
#: load balancer's burst of 503s (~40 s in all) without keeping CI waiting on a dead host.
DEFAULT_RETRY = RetryPolicy()
#: For tests: the same shape in milliseconds; a Retry-After is still honoured, up to 2 s.
FAST_RETRY = RetryPolicy(attempts=5, initial=0.02, factor=2.0, max_delay=0.2, max_retry_after=2.0)

#: What we accept for a manifest GET: OCI and docker schema2, manifests and indexes.
MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
#: Hosts that may be spoken to over plain HTTP without being named insecure.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
#: Connect within 10 s; a read that stalls for 5 min is a dead connection (a registry
#: may take a while to answer the final PUT of a big blob while it verifies the digest).
DEFAULT_TIMEOUT = (10.0, 300.0)
#: Blobs up to this size go up in one PUT; bigger ones in PATCH chunks.
DEFAULT_MONOLITHIC_MAX = 8 << 20
#: Size of one PATCH: big enough that per-request overhead is noise, small enough that
#: a dropped connection costs little when the registry can resume.
DEFAULT_CHUNK_SIZE = 64 << 20
#: Uploads running at once in a push (go-containerregistry and skopeo use 4 too).
DEFAULT_CONCURRENCY = 4
#: A manifest bigger than this is refused (distribution's own limit is 4 MiB).
MANIFEST_MAX = 4 << 20


@dataclass(frozen=True)
class RegistryOptions:
    """How to reach registries: credentials, TLS, retries, parallelism (for push and pull).

    ``username``/``password`` override the docker config; ``docker_config`` is a
    config.json (or its directory) to read and for ``login`` to write. A host in
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
    chunk_size: int = DEFAULT_CHUNK_SIZE
    monolithic_max: int = DEFAULT_MONOLITHIC_MAX
    timeout: tuple[float, float] = DEFAULT_TIMEOUT
    #: Told ``(registry, seconds)`` when a registry asks us to wait and every request to
    #: it pauses (the CLI prints it as a progress line). Called from upload threads.
    on_wait: Callable[[str, float], None] | None = field(default=None, compare=False)

    def __repr__(self) -> str:
        hidden = "<hidden>" if self.password else None
        return (f"RegistryOptions(username={self.username!r}, password={hidden}, ca_cert={self.ca_cert!r}, "
                f"insecure_registries={self.insecure_registries!r}, retry={self.retry!r}, "
                f"concurrency={self.concurrency}, docker_config={self.docker_config!r})")


class TransientRegistryError(RegistryError):
    """A failure worth retrying (connection lost, timeout, 5xx, 408, 429)."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


@dataclass
class BlobSlice:
    """``length`` bytes of a blob from ``offset``, as a re-iterable request body.

    Each iteration opens the file afresh (or asks ``reader`` for a stream positioned at
    ``offset``: a blob that is not one file, such as one held by reference, which the
    caller keeps open across slices and does not get closed here) and yields
    CHUNK-sized pieces, so a resent request streams again with flat memory;
    ``on_bytes`` counts bytes handed to the socket.
    """

    path: Path | None
    offset: int
    length: int
    on_bytes: Callable[[int], None] | None = None
    reader: Callable[[int], BinaryIO] | None = None

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[bytes]:
        if self.reader is not None:
            yield from self._pieces(self.reader(self.offset))
            return
        assert self.path is not None
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            yield from self._pieces(f)

    def _pieces(self, f: BinaryIO) -> Iterator[bytes]:
        left = self.length
        while left > 0:
            data = f.read(min(CHUNK, left))
            if not data:
                raise RegistryError(f"{self.path or 'a blob'} shrank while being uploaded: the cache was changed under us")
            left -= len(data)
            if self.on_bytes:
                self.on_bytes(len(data))
            yield data


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


#: A pause shorter than this added to one under way is not announced again (the other
#: parallel requests' 429s arrive within milliseconds of the first).
_ANNOUNCE_MIN = 0.5
#: The gate re-checks its deadline this often while waiting (it may be lengthened).
_GATE_TICK = 0.25


class RegistryGate:
    """When the next request to one registry may start: after the wait it asked for.

    Shared by every thread and client talking to the same registry in this process.
    Requests already under way go on; only new ones wait.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until = 0.0

    def hold(self, seconds: float) -> bool:
        """No request starts for ``seconds`` from now; True if this begins or noticeably lengthens a pause."""
        with self._lock:
            now = time.monotonic()
            until = now + seconds
            if until <= self._until:
                return False
            announce = self._until <= now or until - self._until >= _ANNOUNCE_MIN
            self._until = until
            return announce

    def remaining(self) -> float:
        with self._lock:
            return max(0.0, self._until - time.monotonic())

    def wait(self) -> None:
        """Block until the registry may be sent a request."""
        while True:
            left = self.remaining()
            if left <= 0:
                return
            time.sleep(min(left, _GATE_TICK))


_GATES: dict[str, RegistryGate] = {}
_GATES_LOCK = threading.Lock()


def registry_gate(registry: str) -> RegistryGate:
    """The process-wide gate of ``registry`` (a host[:port] as in references)."""
    with _GATES_LOCK:
        return _GATES.setdefault(registry, RegistryGate())


def call_with_retry(policy: RetryPolicy, what: str, op: Callable[[int], T]) -> T:
    """Run ``op(attempt)`` until it returns, retrying TransientRegistryError per ``policy``.

    ``attempt`` counts from 0, so an operation can tell a first try from a retry (e.g.
    settle a lost PUT with a HEAD). Raises the last TransientRegistryError after
    ``policy.attempts`` tries, and any other error at once.
    """
    failures = 0
    while True:
        try:
            return op(failures)
        except TransientRegistryError as exc:
            failures += 1
            if failures >= policy.attempts:
                if failures > 1:
                    exc.args = (f"{exc.args[0]} (gave up after {failures} tries)", *exc.args[1:])
                raise
            wait = policy.delay(failures, exc.retry_after)
            log.warning("%s; retry %d/%d in %.1f s", exc, failures, policy.attempts - 1, wait)
            time.sleep(wait)


class _HeaderAuth(requests.auth.AuthBase):
    """Sets (or, with None, only claims) the Authorization header: also keeps requests from
    adding ~/.netrc credentials of its own."""

    def __init__(self, value: str | None) -> None:
        self.value = value

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        if self.value:
            r.headers["Authorization"] = self.value
        return r

    def __repr__(self) -> str:
        return "_HeaderAuth(<hidden>)"


def _walk(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        for attr in ("reason", "__cause__", "__context__"):
            nxt = getattr(cur, attr, None)
            if isinstance(nxt, BaseException):
                cur = nxt
                break
        else:
            cur = None


#: urllib3 2 raises NameResolutionError; urllib3 1.26 a NewConnectionError over socket.gaierror.
_NAME_RESOLUTION_ERRORS: tuple[type[BaseException], ...] = tuple(
    t for t in (getattr(urllib3.exceptions, "NameResolutionError", None),) if t is not None)


def _is_dns_failure(exc: BaseException) -> bool:
    return any(isinstance(e, (socket.gaierror, *_NAME_RESOLUTION_ERRORS)) for e in _walk(exc))


def _short(exc: BaseException) -> str:
    """The innermost useful reason of a network error, without URLs or object reprs."""
    text = ""
    for e in _walk(exc):
        if isinstance(e, OSError) and e.strerror:
            return e.strerror
        if _NAME_RESOLUTION_ERRORS and isinstance(e, _NAME_RESOLUTION_ERRORS):
            continue
        text = str(e) or type(e).__name__
    text = re.sub(r"<[^>]*>", "", text)
    text = re.sub(r"\(Caused by .*", "", text)
    return text.strip(" :,") or type(exc).__name__


def _registry_errors(resp: requests.Response) -> tuple[tuple[str, ...], str]:
    """The OCI ``errors[]`` codes and a one-line ``CODE: message`` text (empty if none)."""
    try:
        body = resp.json() if resp.content and len(resp.content) < 65536 else None
    except (ValueError, requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError):
        body = None  # an error body that cannot be read still leaves the status to report
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return (), ""
    codes, parts = [], []
    for e in errors[:3]:
        if not isinstance(e, dict):
            continue
        code = str(e.get("code") or "").strip()
        msg = " ".join(str(e.get("message") or "").split())
        codes.append(code)
        parts.append(f"{code}: {msg}" if msg else code)
    return tuple(c for c in codes if c), "; ".join(parts)


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
        host = "registry-1.docker.io" if registry == "docker.io" else registry
        self._host = host
        hostname = host[1:host.index("]")] if host.startswith("[") else host.rsplit(":", 1)[0] if ":" in host else host
        self._explicit_insecure = registry in self.options.insecure_registries or hostname in self.options.insecure_registries
        self._plain_ok = hostname in LOOPBACK_HOSTS or self._explicit_insecure
        self._base: str | None = None
        self._ping_lock = threading.Lock()
        self.gate = registry_gate(registry)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"ociassemble/{__version__}"
        pool = max(self.options.concurrency, 1) + 2
        adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=pool, max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        # passed with every request, not set on the session: requests lets $REQUESTS_CA_BUNDLE
        # override a session's verify (psf/requests#3829, #4726), which would ignore --ca-cert
        self._verify: bool | str = True
        if self._explicit_insecure:
            self._verify = False
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        elif self.options.ca_cert:
            ca = Path(self.options.ca_cert).expanduser()
            if not ca.is_file():
                raise RegistryError(f"CA certificate {ca} does not exist: give the PEM file of the registry's CA with --ca-cert")
            self._verify = str(ca)
        self.credentials: Credentials | None = resolve_credentials(
            registry, username=self.options.username, password=self.options.password,
            config_path=self.options.docker_config)
        self.auth = Authenticator(registry, self.credentials, self._fetch_token)

    def __repr__(self) -> str:
        return f"RegistryClient({self.registry!r}, base={self._base!r}, auth={self.auth!r})"

    def close(self) -> None:
        self.session.close()

    # -- scopes -------------------------------------------------------------
    @staticmethod
    def scopes(repo: str, *, push: bool = False, mount_from: tuple[str, ...] = ()) -> tuple[str, ...]:
        """The token scopes an operation on ``repo`` needs (plus pull on mount sources)."""
        own = f"repository:{repo}:pull,push" if push else f"repository:{repo}:pull"
        return tuple(sorted({own, *(f"repository:{r}:pull" for r in mount_from if r != repo)}))

    # -- transport ------------------------------------------------------------
    def _raw(self, method: str, url: str, *, headers: dict[str, str] | None = None, data: Any = None,
             params: Any = None, auth: str | None = None, stream: bool = False, what: str = "",
             allow_redirects: bool = True) -> requests.Response:
        """One HTTP exchange; network failures become (Transient)RegistryError.

        Starts only once the registry's gate is open, and closes the gate for as long
        as a 429 (or a 503 with ``Retry-After``) asks.
        """
        self.gate.wait()
        try:
            resp = self.session.request(method, url, headers=headers, data=data, params=params,
                                        auth=_HeaderAuth(auth), stream=stream, timeout=self.options.timeout,
                                        allow_redirects=allow_redirects, verify=self._verify)
        except requests.exceptions.SSLError as exc:
            raise self._tls_error(exc) from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError) as exc:
            if _is_dns_failure(exc):
                raise RegistryError(
                    f"cannot resolve registry host {self._host.rsplit(':', 1)[0]!r} ({_short(exc)}): "
                    "check the registry name in the image reference and the network") from exc
            kind = "timed out" if isinstance(exc, requests.exceptions.Timeout) else "connection failed"
            raise TransientRegistryError(f"{what or method} at {self.registry}: {kind} ({_short(exc)})") from exc
        except requests.exceptions.RequestException as exc:
            raise RegistryError(f"{what or method} at {self.registry}: {type(exc).__name__} ({_short(exc)})") from exc
        log.debug("%s %s -> %d", method, url.split("?", 1)[0], resp.status_code)
        if resp.status_code in (429, 503):
            self._slow_down(resp)
        return resp

    def _slow_down(self, resp: requests.Response) -> None:
        """Close the gate after a 429, or a 503 that says how long to wait."""
        after = _retry_after(resp.headers.get("Retry-After"))
        if after is None:
            if resp.status_code != 429:
                return
            after = self.options.retry.delay(1)  # no time given: our first backoff step
        seconds = min(after, self.options.retry.max_retry_after)
        if seconds <= 0 or not self.gate.hold(seconds):
            return
        log.info("registry %s answered HTTP %d: no request to it for %.1f s", self.registry, resp.status_code, seconds)
        if self.options.on_wait is not None:
            self.options.on_wait(self.registry, seconds)

    def _tls_error(self, exc: BaseException) -> RegistryError:
        text = _short(exc)
        if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate verify failed" in text:
            return RegistryError(
                f"TLS verification of registry {self.registry} failed ({text}): pass --ca-cert FILE with "
                f"the registry's CA certificate (or --insecure-registry {self.registry} to skip verification)")
        return RegistryError(f"TLS connection to registry {self.registry} failed ({text}): "
                             "check the host and port, and that the registry speaks HTTPS there")

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
        https = f"https://{self._host}"
        try:
            resp = self._raw("GET", https + "/v2/", what="contacting the registry")
            base = https
        except RegistryError as exc:
            tls = isinstance(exc.__cause__, requests.exceptions.SSLError)
            verify_failed = "TLS verification" in str(exc)
            if not (self._plain_ok and tls and (not verify_failed or self._explicit_insecure)):
                raise
            log.debug("%s does not speak TLS; using plain HTTP (allowed for this host)", self.registry)
            base = f"http://{self._host}"
            resp = self._raw("GET", base + "/v2/", what="contacting the registry")
        if resp.status_code == 401:
            self.auth.unauthorized(resp.headers.get("WWW-Authenticate"), (), None)
        elif resp.status_code >= 500 or resp.status_code == 429:
            raise TransientRegistryError(f"registry {self.registry} answered HTTP {resp.status_code} to /v2/",
                                         status=resp.status_code, retry_after=_retry_after(resp.headers.get("Retry-After")))
        elif resp.status_code == 404:
            raise RegistryError(f"{self.registry} is not a container registry (HTTP 404 on /v2/): check the host and port",
                                status=404)
        resp.close()
        return base

    def _fetch_token(self, url: str, params: dict[str, Any], auth: str | None,
                     form: dict[str, str] | None) -> tuple[int, Any]:
        realm_host = (urlsplit(url).hostname or "").strip("[]")
        if url.startswith("http://") and (auth or form) and realm_host not in LOOPBACK_HOSTS \
                and realm_host not in self.options.insecure_registries:
            raise AuthError(f"registry {self.registry} sends logins to a plain-HTTP token server ({realm_host}): "
                            f"refusing to send credentials unencrypted; use --insecure-registry {realm_host} "
                            "if that is really wanted")
        if form is not None:
            resp = self._raw("POST", url, data=form, what="fetching a registry token")
        else:
            resp = self._raw("GET", url, params=params, auth=auth, what="fetching a registry token")
        if resp.status_code >= 500 or resp.status_code == 429:
            raise TransientRegistryError(f"the token server of {self.registry} answered HTTP {resp.status_code}",
                                         status=resp.status_code, retry_after=_retry_after(resp.headers.get("Retry-After")))
        try:
            body = resp.json()
        except ValueError:
            body = None
        return resp.status_code, body

    def url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return self.base_url() + path_or_url

    def request(self, method: str, path_or_url: str, *, scopes: tuple[str, ...], what: str,
                ok: tuple[int, ...] = (200,), headers: dict[str, str] | None = None, data: Any = None,
                params: Any = None, stream: bool = False, digest: str | None = None,
                repo: str | None = None) -> requests.Response:
        """Send with auth; return the response if its status is in ``ok``.

        Answers one 401 challenge (fetching or refreshing a token) and resends. Raises
        TransientRegistryError for 5xx/408/429 (with Retry-After) and network failures,
        AuthError for refused credentials, RegistryError for any other status; each
        message is one line naming ``what``, the status and the registry's error codes.
        """
        url = self.url(path_or_url)
        authorization = self.auth.authorization(scopes)
        resp = self._raw(method, url, headers=headers, data=data, params=params, auth=authorization,
                         stream=stream, what=what)
        if resp.status_code == 401:
            retry_scopes = self.auth.unauthorized(resp.headers.get("WWW-Authenticate"), scopes, authorization)
            if retry_scopes is not None:
                resp.close()
                authorization = self.auth.authorization(retry_scopes)
                resp = self._raw(method, url, headers=headers, data=data, params=params, auth=authorization,
                                 stream=stream, what=what)
        if resp.status_code in ok:
            return resp
        raise self.error(resp, what, digest=digest, repo=repo)

    def error(self, resp: requests.Response, what: str, *, digest: str | None = None,
              repo: str | None = None) -> RegistryError:
        """The one-line error for an unexpected response (and close it)."""
        status = resp.status_code
        codes, detail = _registry_errors(resp) if resp.request.method != "HEAD" else ((), "")
        resp.close()
        where = f"{self.registry}/{repo}" if repo else self.registry
        reason = f"HTTP {status}" + (f" {detail}" if detail else f" {resp.reason}" if resp.reason else "")
        message = f"{what} at {where} failed: {reason}"
        if status in (408, 429) or status >= 500 and status != 507:
            if status >= 500:
                message += " (the registry failed; it may recover, try again later)"
            return TransientRegistryError(message, status=status, codes=codes, digest=digest,
                                          retry_after=_retry_after(resp.headers.get("Retry-After")))
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

    def mount_blob(self, repo: str, digest: str, from_repo: str, scopes: tuple[str, ...]) -> str | None:
        """Cross-repository mount: None if mounted, else the Location of the upload it opened."""
        resp = self.request("POST", f"/v2/{repo}/blobs/uploads/", params={"mount": digest, "from": from_repo},
                            scopes=scopes, ok=(201, 202), what=f"mounting blob {digest} from {from_repo}",
                            digest=digest, repo=repo)
        resp.close()
        if resp.status_code == 201:
            return None
        return self._location(resp, f"mounting blob {digest}", digest)

    def start_upload(self, repo: str, digest: str, scopes: tuple[str, ...]) -> str:
        resp = self.request("POST", f"/v2/{repo}/blobs/uploads/", scopes=scopes, ok=(202,),
                            what=f"starting the upload of blob {digest}", digest=digest, repo=repo)
        resp.close()
        return self._location(resp, f"starting the upload of blob {digest}", digest)

    def upload_offset(self, location: str, digest: str, scopes: tuple[str, ...]) -> tuple[int, str] | None:
        """Where an open upload stands: (bytes received, newest Location), or None if gone/unknown."""
        resp = self.request("GET", location, scopes=scopes, ok=(204, 200, 404, 400, 416),
                            what=f"asking the upload state of blob {digest}", digest=digest)
        resp.close()
        if resp.status_code not in (200, 204):
            return None
        m = re.match(r"^(?:bytes=)?0-(\d+)$", (resp.headers.get("Range") or "").strip())
        if not m:
            return None
        end = int(m.group(1))
        if end == 0:
            # "0-0" means both "empty" and "1 byte" (registry-notes): unknowable, so start over
            return None
        newest = urljoin(resp.url, resp.headers["Location"]) if resp.headers.get("Location") else location
        return end + 1, newest

    def patch_upload(self, location: str, body: BlobSlice, digest: str, scopes: tuple[str, ...]) -> str:
        """Append ``body`` to the upload; returns the newest Location (always use it next)."""
        end = body.offset + body.length - 1
        resp = self.request("PATCH", location, scopes=scopes, ok=(202, 204), data=body,
                            headers={"Content-Type": "application/octet-stream",
                                     "Content-Range": f"{body.offset}-{end}"},
                            what=f"uploading blob {digest} (bytes {body.offset}-{end})", digest=digest)
        resp.close()
        return self._location(resp, f"uploading blob {digest}", digest)

    def finish_upload(self, location: str, digest: str, body: BlobSlice | None, scopes: tuple[str, ...]) -> None:
        """The closing PUT ?digest= (with the whole blob when ``body`` is given: monolithic)."""
        headers = {"Content-Type": "application/octet-stream"}
        resp = self.request("PUT", location, params={"digest": digest}, scopes=scopes, ok=(201, 204),
                            data=body if body is not None else b"", headers=headers,
                            what=f"committing blob {digest}", digest=digest)
        resp.close()

    def cancel_upload(self, location: str, scopes: tuple[str, ...]) -> None:
        """Best effort: tell the registry to drop an upload we abandon."""
        try:
            self.request("DELETE", location, scopes=scopes, ok=(204, 200, 202, 404, 400), what="cancelling an upload").close()
        except RegistryError:
            pass

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str, scopes: tuple[str, ...]) -> str:
        """PUT a manifest by tag or digest; returns the digest the registry reports (if any)."""
        resp = self.request("PUT", f"/v2/{repo}/manifests/{reference}", scopes=scopes, ok=(201, 200, 202),
                            data=data, headers={"Content-Type": media_type},
                            what=f"pushing manifest {reference}", repo=repo)
        resp.close()
        return resp.headers.get("Docker-Content-Digest", "")

    def get_manifest(self, repo: str, reference: str, scopes: tuple[str, ...]) -> tuple[bytes, str, str]:
        """(exact bytes, Content-Type, Docker-Content-Digest or "") of a manifest or index."""
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
        chunks, total = [], 0
        try:
            for chunk in resp.iter_content(CHUNK):
                total += len(chunk)
                if total > limit:
                    raise RegistryError(f"{what} from {self.registry} is bigger than {limit} bytes: refusing it")
                chunks.append(chunk)
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise TransientRegistryError(f"reading {what} from {self.registry}: connection failed ({_short(exc)})") from exc
        return b"".join(chunks)

    def _location(self, resp: requests.Response, what: str, digest: str) -> str:
        loc = resp.headers.get("Location")
        if not loc:
            raise RegistryError(f"{what} at {self.registry}: HTTP {resp.status_code} without a Location header",
                                status=resp.status_code, digest=digest)
        # relative Locations are resolved against the URL that answered (registry-notes)
        return urljoin(resp.url, loc)
