"""How a registry request gets its Authorization header: following the challenge, fetching and caching tokens.

Authorization follows the registry's challenge (``WWW-Authenticate``): none, Basic
with the credentials (``credentials``), or Bearer, where a token is fetched from the
challenge's realm for a set of scopes, cached per scope set until it expires, and
fetched again when the registry refuses it. Tokens are fetched through the registry's
own HTTP session (``http``), not through the client that asks for the header.

Secrets never appear in a repr, a log line or an error message: tokens live only in
this module's cache and the request header.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..errors import AuthError, TransientRegistryError
from ..image.oci import parse_json
from ..redact import Secrets
from .credentials import Credentials
from .http import LOOPBACK_HOSTS, RegistryHttp, answer_body
from .retry import parse_retry_after

__all__ = ["Authenticator", "Challenge", "parse_challenge"]

log = logging.getLogger("ociassemble.registry")

#: A token without ``expires_in`` lives 60 s (the distribution token spec's default).
DEFAULT_TOKEN_LIFETIME = 60.0
#: Fetch a new token this long before the old one expires, so none expires in flight.
TOKEN_EXPIRY_MARGIN = 10.0
#: The most of a token server's answer read: a JWT with its claims is a few KiB (registries
#: that pack many scopes into one reach tens of KiB); nothing valid comes near 1 MiB.
TOKEN_ANSWER_MAX = 1 << 20


@dataclass(frozen=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` header: scheme (lowercase) and its parameters."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)


#: A ``name=value`` pair (quoted or not) where a piece of the challenge starts (at the
#: start, or after a comma or a space). The scan is the regex engine's: a position that
#: cannot start a pair fails at once, and every quantifier is possessive, so a pair that
#: fails (a name with no ``=``, an unterminated quote) is given up in one pass. Linear in
#: the header's length: the old backtracking regex took 32 s of CPU for one 60 KB header.
_PAIR = re.compile(r'(?<![^\s,])([A-Za-z_][\w-]*+)[ \t]*+=[ \t]*+(?:"((?:[^"\\]|\\.)*+)"|([^\s,]*+))')
_UNESCAPE = re.compile(r"\\(.)")


def _params(rest: str) -> dict[str, str]:
    """``name=value`` pairs of a challenge (the first of a repeated name wins)."""
    params: dict[str, str] = {}
    for name, quoted, token in _PAIR.findall(rest):
        params.setdefault(name.lower(), _UNESCAPE.sub(r"\1", quoted) if "\\" in quoted else quoted or token)
    return params


def parse_challenge(header: str | None) -> Challenge | None:
    """``Bearer realm="…",service="…",scope="…"`` → Challenge; None if absent or unknown.

    Linear in the header's length: a registry (or anything in between) can send a huge one.
    """
    if not header:
        return None
    scheme, _, rest = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in ("basic", "bearer"):
        return None
    return Challenge(scheme, _params(rest))


class Authenticator:
    """The Authorization header for a scope set, following the registry's challenge.

    Thread-safe: the uploads of one push share it, and so share its tokens.
    ``token_requests`` counts the tokens fetched (tests assert reuse with it).
    """

    def __init__(self, registry: str, credentials: Credentials | None, http: RegistryHttp,
                 secrets: Secrets | None = None) -> None:
        self.registry = registry
        self.credentials = credentials
        self._http = http
        #: every token fetched is added, so that output can be cleaned of it
        self.secrets = secrets if secrets is not None else Secrets()
        self._lock = threading.Lock()
        self.challenge: Challenge | None = None
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}
        self.token_requests = 0

    def __repr__(self) -> str:
        return f"Authenticator(registry={self.registry!r}, credentials={self.credentials!r}, tokens={len(self._tokens)})"

    def authorization(self, scopes: tuple[str, ...]) -> str | None:
        """The header value to send for ``scopes`` (None while no challenge asks for one)."""
        challenge = self.challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return self.credentials.basic_header() if self.credentials else None
        key = tuple(sorted(set(scopes)))
        with self._lock:
            cached = self._tokens.get(key)
            if cached and cached[1] > time.monotonic():
                return "Bearer " + cached[0]
            token, lifetime = self._fetch_token(challenge, key)
            self._tokens[key] = (token, time.monotonic() + max(lifetime - TOKEN_EXPIRY_MARGIN, 1.0))
            return "Bearer " + token

    def unauthorized(self, header: str | None, scopes: tuple[str, ...], sent: str | None) -> tuple[str, ...] | None:
        """A 401 arrived: learn the challenge, forget a refused token.

        Returns the scopes to retry with, or None when retrying cannot help (the
        credentials we sent were refused, or none are known for a Basic challenge).
        """
        challenge = parse_challenge(header)
        if challenge is None:
            return None
        with self._lock:
            self.challenge = challenge
            if sent and sent.startswith("Bearer "):
                token = sent[len("Bearer "):]
                self._tokens = {k: v for k, v in self._tokens.items() if v[0] != token}
        if challenge.scheme == "basic":
            if self.credentials is None or (sent and sent.startswith("Basic ")):
                return None
            return scopes
        wanted = tuple(s for s in (challenge.params.get("scope") or "").split(" ") if s)
        return tuple(sorted(set(scopes) | set(wanted)))

    def _fetch_token(self, challenge: Challenge, scopes: tuple[str, ...]) -> tuple[str, float]:
        realm = challenge.params.get("realm")
        if not realm:
            raise AuthError(f"registry {self.registry} asked for a bearer token but named no realm to get it from")
        params: dict[str, Any] = {}
        if challenge.params.get("service"):
            params["service"] = challenge.params["service"]
        if scopes:
            params["scope"] = list(scopes)
        creds = self.credentials
        self.token_requests += 1
        log.debug("fetching a token from %s for %s", realm, " ".join(scopes) or "no scope")
        if creds is not None and creds.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": creds.password,
                    "service": params.get("service", ""), "client_id": "ociassemble",
                    "scope": " ".join(scopes)}
            status, body = self._token_response(realm, {}, None, form)
        else:
            status, body = self._token_response(realm, params, creds.basic_header() if creds else None, None)
        if status in (401, 403):
            if creds is None:
                raise AuthError(
                    f"registry {self.registry} needs credentials ({' '.join(scopes) or 'login'}): run "
                    f"'ociassemble login {self.registry}' or pass --username and --password-stdin"
                )
            raise AuthError(
                f"registry {self.registry} refused the credentials of user {creds.username!r} (token server "
                f"HTTP {status}): check the username and password, or run 'ociassemble login {self.registry}'"
            )
        if status != 200 or not isinstance(body, dict):
            raise AuthError(f"the token server of {self.registry} answered HTTP {status} without a token")
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str) or not token:
            raise AuthError(f"the token server of {self.registry} answered without a token")
        self.secrets.add(token)
        refresh = body.get("refresh_token")
        if isinstance(refresh, str):
            self.secrets.add(refresh)
        try:
            lifetime = float(body.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (TypeError, ValueError):
            lifetime = DEFAULT_TOKEN_LIFETIME
        return token, lifetime

    def _token_response(self, url: str, params: dict[str, Any], auth: str | None,
                        form: dict[str, str] | None) -> tuple[int, Any]:
        """One request to the token server: (status, JSON body or None); 5xx/429 are transient."""
        realm_host = (urlsplit(url).hostname or "").strip("[]")
        if url.startswith("http://") and (auth or form) and realm_host not in LOOPBACK_HOSTS \
                and realm_host not in self._http.insecure_registries:
            raise AuthError(f"registry {self.registry} sends logins to a plain-HTTP token server ({realm_host}): "
                            f"refusing to send credentials unencrypted; use --insecure-registry {realm_host} "
                            "if that is really wanted")
        if form is not None:
            # a redirect would carry the refresh token in its body to wherever it points: not followed
            resp = self._http.send("POST", url, data=form, what="fetching a registry token", allow_redirects=False,
                                   body_max=TOKEN_ANSWER_MAX)
        else:
            resp = self._http.send("GET", url, params=params, auth=auth, what="fetching a registry token",
                                   body_max=TOKEN_ANSWER_MAX)
        if resp.status_code >= 500 or resp.status_code == 429:
            resp.close()
            raise TransientRegistryError(f"the token server of {self.registry} answered HTTP {resp.status_code}",
                                         status=resp.status_code, retry_after=parse_retry_after(resp.headers.get("Retry-After")))
        try:
            body = parse_json(answer_body(resp, TOKEN_ANSWER_MAX))
        except ValueError:
            body = None
        finally:
            resp.close()
        return resp.status_code, body
