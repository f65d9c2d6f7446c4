"""What may be printed: credentials we sent replaced by ``<redacted>``, terminal control bytes escaped.

One function, ``clean``, for every string that reaches a terminal or a log: the CLI's
error lines, step lines, results (text and ``--json``), log records and ``--debug``
tracebacks all pass through it, and so does every registry-supplied text (an error
message, a reason phrase) where the registry client builds its errors. A registry that
echoes our ``Authorization`` header, or writes ESC/BEL sequences into its error text
(title changes, screen clears, hidden text), gets neither onto the user's screen.

``Secrets`` is the set of credentials this run has sent or may send (passwords, their
``user:password`` base64 forms, bearer and refresh tokens): the registry client adds each
one as it learns it, the CLI owns the set and cleans its output with it. Anything shaped
like an ``Authorization`` value (``Basic …``, ``Bearer …``) is redacted even when unknown.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterable
from urllib.parse import quote

__all__ = ["REDACTED", "Secrets", "clean"]

REDACTED = "<redacted>"
#: A secret shorter than this is not searched for: replacing every "a" or "12" in the output
#: would make it unreadable and hide nothing (no real password or token is that short).
MIN_SECRET = 4

#: C0 controls but tab and newline, DEL, C1 controls, and the Unicode bidi overrides and
#: isolates that reorder how a line reads (Trojan Source, CVE-2021-42574).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
#: An Authorization value wherever it appears (a header echoed back, a request dump).
#: Its value must hold a digit or a symbol, so prose ("Basic authentication") is left alone.
_AUTH_VALUE = re.compile(r"\b(Basic|Bearer|basic|bearer)(\s+)(?=[A-Za-z.~-]*[0-9+/=_])[A-Za-z0-9+/=._~-]{8,}")


def _escape(m: re.Match[str]) -> str:
    c = ord(m.group(0))
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


class Secrets:
    """The credentials of one run, each with the encoded forms it travels in. Thread-safe.

    Example::

        secrets = Secrets()
        secrets.add_login("alice", "s3cret")
        clean("denied: Basic YWxpY2U6czNjcmV0", secrets)   # 'denied: Basic <redacted>'
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._forms: set[str] = set()
        self._sorted: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"Secrets({len(self._forms)} forms)"

    def __len__(self) -> int:
        return len(self._forms)

    def add(self, secret: str | None) -> None:
        """A secret as sent (a token), with its URL-quoted and base64 forms."""
        if secret:
            self._update(_forms(secret))

    def add_login(self, username: str, password: str | None) -> None:
        """A password, and ``user:password`` in base64 (a Basic header, a docker config ``auth``)."""
        if not password:
            return
        forms = set(_forms(password))
        raw = f"{username}:{password}".encode()
        for enc in (base64.b64encode, base64.urlsafe_b64encode):
            text = enc(raw).decode("ascii")
            forms.update((text, text.rstrip("=")))
        self._update(forms)

    def _update(self, forms: Iterable[str]) -> None:
        with self._lock:
            self._forms.update(f for f in forms if len(f) >= MIN_SECRET)
            # longest first: a form that contains another is replaced whole
            self._sorted = tuple(sorted(self._forms, key=len, reverse=True))

    def forms(self) -> tuple[str, ...]:
        return self._sorted


def _forms(secret: str) -> set[str]:
    out = {secret, quote(secret, safe="")}
    for enc in (base64.b64encode, base64.urlsafe_b64encode):
        text = enc(secret.encode()).decode("ascii")
        out.update((text, text.rstrip("=")))
    return out


def clean(text: str, secrets: Secrets | None = None) -> str:
    """``text`` fit to print: known secrets and Authorization values redacted, control bytes escaped.

    Newlines and tabs stay (a traceback keeps its lines); ESC becomes the four
    characters ``\\x1b``. Idempotent, so cleaning twice (at the source and at the
    output) changes nothing more.
    """
    if not text:
        return text
    if secrets is not None:
        for form in secrets.forms():
            if form in text:
                text = text.replace(form, REDACTED)
    text = _AUTH_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return _CONTROL.sub(_escape, text)
