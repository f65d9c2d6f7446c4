"""One registry's HTTP session: TLS choice, the request gate, and network failures as RegistryError.

``RegistryHttp`` is the only place a request leaves for a registry, shared by the
distribution API calls (``client``) and the token fetches (``auth``), so one registry
has one ``requests.Session`` and one connection pool. It sends a request, and turns a
network failure into ``TransientRegistryError`` (connection lost, timeout: worth
retrying) or a plain ``RegistryError`` (unresolvable host, TLS failure: retrying
cannot help); what a response's status means is the caller's business. Nothing from
``requests`` or ``urllib3`` leaves this package.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests
import urllib3.exceptions

from .. import __version__
from ..errors import RegistryError
from .retry import RetryPolicy, TransientRegistryError, parse_retry_after, registry_gate

__all__ = ["DEFAULT_TIMEOUT", "LOOPBACK_HOSTS", "RegistryHttp", "registry_errors", "short_reason"]

log = logging.getLogger("ociassemble.registry")

#: Hosts that may be spoken to over plain HTTP without being named insecure.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
#: Connect within 10 s; a read that stalls for 5 min is a dead connection (a registry
#: may take a while to answer the final PUT of a big blob while it verifies the digest).
DEFAULT_TIMEOUT = (10.0, 300.0)


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


def registry_errors(resp: requests.Response) -> tuple[tuple[str, ...], str]:
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
        self.explicit_insecure = registry in self.insecure_registries or hostname in self.insecure_registries
        #: Whether plain HTTP may be tried when the host does not speak TLS.
        self.plain_ok = hostname in LOOPBACK_HOSTS or self.explicit_insecure
        self.timeout = timeout
        self.retry = retry
        self.on_wait = on_wait
        self.gate = registry_gate(registry)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"ociassemble/{__version__}"
        pool = max(concurrency, 1) + 2
        adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=pool, max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        # passed with every request, not set on the session: requests lets $REQUESTS_CA_BUNDLE
        # override a session's verify (psf/requests#3829, #4726), which would ignore --ca-cert
        self._verify: bool | str = True
        if self.explicit_insecure:
            self._verify = False
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        elif ca_cert:
            ca = Path(ca_cert).expanduser()
            if not ca.is_file():
                raise RegistryError(f"CA certificate {ca} does not exist: give the PEM file of the registry's CA with --ca-cert")
            self._verify = str(ca)

    def close(self) -> None:
        self.session.close()

    def send(self, method: str, url: str, *, headers: dict[str, str] | None = None, data: Any = None,
             params: Any = None, auth: str | None = None, stream: bool = False, what: str = "",
             allow_redirects: bool = True) -> requests.Response:
        """One HTTP exchange; network failures become (Transient)RegistryError.

        Starts only once the registry's gate is open, and closes the gate for as long
        as a 429 (or a 503 with ``Retry-After``) asks.
        """
        self.gate.wait()
        try:
            resp = self.session.request(method, url, headers=headers, data=data, params=params,
                                        auth=_HeaderAuth(auth), stream=stream, timeout=self.timeout,
                                        allow_redirects=allow_redirects, verify=self._verify)
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
