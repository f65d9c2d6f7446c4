"""A private package index for tests: a PEP 503 folder of hand-made wheels, served on loopback with basic auth.

The wheels are written with ``zipfile`` (no build tool), the same bytes every time for the
same name, version and content; the server answers only requests carrying the right
``Authorization`` header (401 with a challenge otherwise), like Azure Artifacts or a devpi
with auth, and records the paths it was asked for.
"""

from __future__ import annotations

import base64
import hashlib
import html
import threading
import zipfile
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from packaging.utils import canonicalize_name

_DATE = (2020, 1, 1, 0, 0, 0)


def make_wheel(dest_dir: Path, name: str, version: str, *, body: str | None = None,
               requires: tuple[str, ...] = ()) -> Path:
    """A pure-Python wheel ``name-version-py3-none-any.whl`` with one module ``name`` saying its version."""
    dist = name.replace("-", "_")
    files = {
        f"{dist}/__init__.py": (body if body is not None else f'VERSION = "{version}"\n').encode(),
        f"{dist}-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
            + "".join(f"Requires-Dist: {r}\n" for r in requires)).encode(),
        f"{dist}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
        for path, data in files.items())
    files[f"{dist}-{version}.dist-info/RECORD"] = (record + f"{dist}-{version}.dist-info/RECORD,,\n").encode()
    path = dest_dir / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name_, data in files.items():
            zf.writestr(zipfile.ZipInfo(name_, _DATE), data)
    return path


def write_simple_index(root: Path) -> None:
    """``root/simple/<project>/index.html`` for every wheel in ``root/files`` (PEP 503, with sha256 fragments)."""
    files = sorted((root / "files").glob("*.whl"))
    projects: dict[str, list[Path]] = {}
    for f in files:
        projects.setdefault(canonicalize_name(f.name.split("-")[0]), []).append(f)
    simple = root / "simple"
    simple.mkdir(parents=True, exist_ok=True)
    (simple / "index.html").write_text("<!DOCTYPE html><html><body>" + "".join(
        f'<a href="{p}/">{p}</a>' for p in sorted(projects)) + "</body></html>")
    for project, wheels in projects.items():
        (simple / project).mkdir(exist_ok=True)
        links = "".join(
            f'<a href="../../files/{html.escape(w.name)}#sha256={hashlib.sha256(w.read_bytes()).hexdigest()}">'
            f"{html.escape(w.name)}</a><br>" for w in wheels)
        (simple / project / "index.html").write_text(f"<!DOCTYPE html><html><body>{links}</body></html>")


class _AuthHandler(SimpleHTTPRequestHandler):
    expected = ""
    requested: list[str]

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.requested.append(self.path)
        if self.headers.get("Authorization") != self.expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="private index"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def log_message(self, format: str, *args: object) -> None:  # quiet: pytest captures stderr
        pass


@dataclass
class PrivateIndex:
    """A running index: ``url`` has no credentials, ``auth_url`` has them."""

    root: Path
    port: int
    user: str
    password: str
    server: ThreadingHTTPServer
    requested: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/simple/"

    @property
    def auth_url(self) -> str:
        return f"http://{self.user}:{self.password}@127.0.0.1:{self.port}/simple/"

    def publish(self, name: str, version: str, **kw: object) -> Path:
        wheel = make_wheel(self.root / "files", name, version, **kw)  # type: ignore[arg-type]
        write_simple_index(self.root)
        return wheel

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve_index(root: Path, user: str, password: str) -> PrivateIndex:
    """Serve ``root`` (``files/`` and ``simple/``) on 127.0.0.1 with basic auth, in a thread."""
    (root / "files").mkdir(parents=True, exist_ok=True)
    write_simple_index(root)
    requested: list[str] = []
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    handler = type("Handler", (_AuthHandler,), {"expected": f"Basic {token}", "requested": requested})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return PrivateIndex(root, server.server_address[1], user, password, server, requested)
