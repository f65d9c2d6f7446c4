"""One registry's HTTP session: TLS choice, the request gate, redirects, bounded answers, network failures as RegistryError.

``RegistryHttp`` is the only place a request leaves for a registry, shared by the
distribution API calls (``client``) and the token fetches (``auth``), so one registry
has one ``requests.Session``, one connection pool and one gate (``retry.RegistryGate``):
every request, whatever its kind (ping, HEAD, POST, PATCH, PUT, token, each redirect
hop), waits at that gate after a 429. It sends a request, and turns a network failure
into ``TransientRegistryError`` (connection lost, timeout: worth retrying) or a plain
``RegistryError`` (unresolvable host, TLS failure: retrying cannot help); what a
response's status means is the caller's business. Nothing from ``requests`` or
``urllib3`` leaves this package.

Credentials stay with their origin. The Authorization value given to ``send`` belongs to
one origin (scheme, host, port: ``Origin``); a request to any other origin, whether an
upload ``Location`` or a redirect hop, goes without it (as containerd and
go-containerregistry do), and nothing that started on HTTPS continues over plain HTTP.
Redirects are followed here, hop by hop, not by ``requests``, so this holds for each.

Answers are bounded: a response is always streamed from the socket, and one the caller
does not stream (an error, a token, an upload's answer) is read up to ``ANSWER_MAX``
bytes and its connection dropped if more follows: a registry answering a 300 MB error
body costs 64 KiB.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions

from .. import __version__
from ..errors import RegistryError, TransientRegistryError
from ..image.oci import parse_json
from .retry import RetryPolicy, parse_retry_after, registry_gate

__all__ = ["ANSWER_MAX", "DEFAULT_TIMEOUT", "LOOPBACK_HOSTS", "Origin", "RegistryHttp", "answer_body", "registry_errors",
           "short_reason"]

log = logging.getLogger("ociassemble.registry")

#: Hosts that may be spoken to over plain HTTP without being named insecure.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
#: Connect within 10 s; a read that stalls for 5 min is a dead connection (a registry
#: may take a while to answer the final PUT of a big blob while it verifies the digest).
DEFAULT_TIMEOUT = (10.0, 300.0)
#: The most of an answer read into memory when the caller does not stream it: an OCI
#: error document is a few hundred bytes, an upload's answer empty.
ANSWER_MAX = 64 << 10
#: Redirect hops followed for one request (requests' own default is 30; registries use one, to a CDN).
MAX_REDIRECTS = 10
_REDIRECTS = (301, 302, 303, 307, 308)
_NETWORK_ERRORS = (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError)


@dataclass(frozen=True)
class Origin:
    """Scheme, host and port of a URL: what credentials are scoped to (RFC 6454)."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        try:
            port = parts.port
        except ValueError:
            port = None
        return cls(scheme, (parts.hostname or "").lower(), port or (443 if scheme == "https" else 80))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


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


def short_reason(exc: BaseException) -> str:
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


def answer_body(resp: requests.Response, limit: int = ANSWER_MAX) -> bytes:
    """At most ``limit`` bytes of a response's body, read once and kept as ``resp.content``.

    A longer body is cut at ``limit`` and its connection closed (the rest is never read);
    one that ends within it leaves the connection for reuse. Raises TransientRegistryError
    when the connection fails while reading.
    """
    if resp._content_consumed or resp._content is not False:  # read already (by us: bounded)
        return resp.content or b""
    chunks, total = [], 0
    try:
        while total <= limit:
            data = resp.raw.read(limit + 1 - total, decode_content=False)
            if not data:
                break
            chunks.append(data)
            total += len(data)
    except _NETWORK_ERRORS as exc:
        resp.raw.close()
        raise TransientRegistryError(f"reading an answer of {urlsplit(resp.url).netloc}: connection failed "
                                     f"({short_reason(exc)})") from exc
    body = b"".join(chunks)
    if len(body) > limit:
        resp.raw.close()  # the rest stays unread: this connection cannot be reused
        body = body[:limit]
    resp._content = body
    resp._content_consumed = True
    return body


def registry_errors(resp: requests.Response) -> tuple[tuple[str, ...], str]:
    """The OCI ``errors[]`` codes and a one-line ``CODE: message`` text (empty if none).

    Reads at most ``ANSWER_MAX`` bytes of the body (a bigger one is not an OCI error
    document). The text is the registry's: clean it before printing (``redact.clean``).
    """
    try:
        data = answer_body(resp)
        body = parse_json(data) if data else None
    except (ValueError, RegistryError):
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


class RegistryHttp:
    """The HTTP session of one registry host: one per registry, shared by its client's threads.

    ``registry`` is the host[:port] of references (``docker.io`` is reached at
    ``registry-1.docker.io``). A host in ``insecure_registries`` is spoken to over HTTPS
    without verification (or plain HTTP, see ``plain_ok``); loopback hosts may use plain
    HTTP but their certificates are still verified; ``ca_cert`` is a PEM file to verify with.
    """

    def __init__(self, registry: str, *, ca_cert: Path | str | None = None,
                 insecure_registries: tuple[str, ...] = (), concurrency: int = 1,
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT, retry: RetryPolicy,
                 on_wait: Callable[[str, float], None] | None = None) -> None:
        self.registry = registry
        host = "registry-1.docker.io" if registry == "docker.io" else registry
        self.host = host
        hostname = host[1:host.index("]")] if host.startswith("[") else host.rsplit(":", 1)[0] if ":" in host else host
        self.insecure_registries = tuple(insecure_registries)
        self._insecure_hosts = frozenset(h.lower() for h in insecure_registries)
        self.explicit_insecure = registry in self.insecure_registries or hostname in self.insecure_registries
        #: Whether plain HTTP may be tried when the host does not speak TLS.
        self.plain_ok = hostname in LOOPBACK_HOSTS or self.explicit_insecure
        self.timeout = timeout
        self.retry = retry
        self.on_wait = on_wait
        # keyed by the host requests go to: docker.io and index.docker.io are one registry, one gate
        self.gate = registry_gate(host.lower())
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"ociassemble/{__version__}"
        # bodies are read raw and bounded (answer_body, blob downloads): ask for them as they are
        self.session.headers["Accept-Encoding"] = "identity"
        pool = max(concurrency, 1) + 2
        adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=pool, max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        # passed with every request, not set on the session: requests lets $REQUESTS_CA_BUNDLE
        # override a session's verify (psf/requests#3829, #4726), which would ignore --ca-cert
        self._verify: bool | str = True
        if self.explicit_insecure:
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        if ca_cert:
            ca = Path(ca_cert).expanduser()
            if not ca.is_file():
                raise RegistryError(f"CA certificate {ca} does not exist: give the PEM file of the registry's CA with --ca-cert")
            self._verify = str(ca)

    def close(self) -> None:
        self.session.close()

    def _verify_for(self, url: str) -> bool | str:
        """TLS verification for ``url``: off only for a host named in ``insecure_registries``
        (a Location or redirect to another host is verified as usual)."""
        parts = urlsplit(url)
        hostname = (parts.hostname or "").lower()
        hostport = parts.netloc.rpartition("@")[2].lower()
        if hostname in self._insecure_hosts or hostport in self._insecure_hosts:
            return False
        return self._verify

    def send(self, method: str, url: str, *, headers: dict[str, str] | None = None, data: Any = None,
             params: Any = None, auth: str | None = None, origin: str | None = None, stream: bool = False,
             what: str = "", allow_redirects: bool = True, body_max: int = ANSWER_MAX) -> requests.Response:
        """One HTTP exchange (redirects followed hop by hop); network failures become (Transient)RegistryError.

        ``auth`` (an Authorization value) belongs to the origin of ``origin`` (a URL;
        default ``url`` itself): it goes only to requests to that origin, never to an
        upload Location or redirect hop elsewhere. A request from HTTPS to plain HTTP
        (``url`` against ``origin``, or a redirect) is refused. With ``stream`` False the
        body is read now, at most ``body_max`` bytes (``answer_body``).

        Each hop starts only once the registry's gate is open, and closes the gate for
        as long as a 429 (or a 503 with ``Retry-After``) asks.
        """
        owner = Origin.of(origin or url)
        self._refuse_downgrade(owner, url, what or method)
        hops = 0
        while True:
            here = Origin.of(url)
            value = auth if auth and here == owner else None
            if auth and value is None:
                log.debug("%s: %s is another origin than %s: sending no credentials", what or method, here, owner)
            resp = self._exchange(method, url, headers, data, params, value, what)
            location = resp.headers.get("Location")
            if not (allow_redirects and resp.status_code in _REDIRECTS and location):
                break
            hops += 1
            target = urljoin(resp.url, location)
            answer_body(resp)  # a small body read, so the connection is reused
            resp.close()
            if hops > MAX_REDIRECTS:
                raise RegistryError(f"{what or method} at {self.registry}: more than {MAX_REDIRECTS} redirects")
            self._refuse_downgrade(here, target, what or method)
            if resp.status_code in (302, 303) and method != "HEAD" or resp.status_code == 301 and method == "POST":
                # what requests (and browsers) do: the body is not sent again
                method, data = "GET", None
                headers = {k: v for k, v in (headers or {}).items() if not k.lower().startswith("content-")}
            url, params = target, None
        if not stream:
            answer_body(resp, body_max)
        return resp

    def _refuse_downgrade(self, current: Origin, url: str, what: str) -> None:
        """Nothing that started on HTTPS goes on over plain HTTP (a Location, a redirect)."""
        if current.scheme == "https" and Origin.of(url).scheme != "https":
            raise RegistryError(
                f"{what} at {self.registry}: the registry sent us from HTTPS to {Origin.of(url)}: refusing to "
                "leave HTTPS (a proxy in front of the registry may be building its URLs without "
                "X-Forwarded-Proto: https)")

    def _exchange(self, method: str, url: str, headers: dict[str, str] | None, data: Any, params: Any,
                  auth: str | None, what: str) -> requests.Response:
        """One request and its headers (the body left on the socket), after the gate."""
        self.gate.wait()
        try:
            resp = self.session.request(method, url, headers=headers, data=data, params=params,
                                        auth=_HeaderAuth(auth), stream=True, timeout=self.timeout,
                                        allow_redirects=False, verify=self._verify_for(url))
        except requests.exceptions.SSLError as exc:
            raise self._tls_error(exc) from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError) as exc:
            if _is_dns_failure(exc):
                raise RegistryError(
                    f"cannot resolve registry host {self.host.rsplit(':', 1)[0]!r} ({short_reason(exc)}): "
                    "check the registry name in the image reference and the network") from exc
            kind = "timed out" if isinstance(exc, requests.exceptions.Timeout) else "connection failed"
            raise TransientRegistryError(f"{what or method} at {self.registry}: {kind} ({short_reason(exc)})") from exc
        except requests.exceptions.RequestException as exc:
            raise RegistryError(f"{what or method} at {self.registry}: {type(exc).__name__} ({short_reason(exc)})") from exc
        log.debug("%s %s -> %d", method, url.split("?", 1)[0], resp.status_code)
        if resp.status_code in (429, 503):
            self._slow_down(resp)
        return resp

    @staticmethod
    def is_tls_failure(exc: RegistryError) -> bool:
        """Whether ``exc`` (from ``send``) is the host not speaking TLS or failing its verification."""
        return isinstance(exc.__cause__, requests.exceptions.SSLError)

    def _slow_down(self, resp: requests.Response) -> None:
        """Close the gate after a 429, or a 503 that says how long to wait."""
        after = parse_retry_after(resp.headers.get("Retry-After"))
        if after is None:
            if resp.status_code != 429:
                return
            after = self.retry.delay(1)  # no time given: our first backoff step
        seconds = min(after, self.retry.max_retry_after)
        if seconds <= 0 or not self.gate.hold(seconds):
            return
        log.info("registry %s answered HTTP %d: no request to it for %.1f s", self.registry, resp.status_code, seconds)
        if self.on_wait is not None:
            self.on_wait(self.registry, seconds)

    def _tls_error(self, exc: BaseException) -> RegistryError:
        text = short_reason(exc)
        if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate verify failed" in text:
            return RegistryError(
                f"TLS verification of registry {self.registry} failed ({text}): pass --ca-cert FILE with "
                f"the registry's CA certificate (or --insecure-registry {self.registry} to skip verification)")
        return RegistryError(f"TLS connection to registry {self.registry} failed ({text}): "
                             "check the host and port, and that the registry speaks HTTPS there")
