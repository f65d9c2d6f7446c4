"""A mini Debian repository for the tests: real .debs made by dpkg-deb, a Release signed by a
key made here with gpg, served over loopback HTTP; copies of it can be tampered with. Its packages
are for this machine's architecture (``ARCH``), as a base built here is."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from tests.hostarch import HOST_DEB, HOST_MACHINE

#: Debian's name for the architecture the packages are for: this machine's
ARCH = HOST_DEB

#: name → (version, Depends, a file it installs)
PACKAGES = {
    "tool": ("1.0-1", "libthing (>= 1.0)", "usr/bin/tool"),
    "libthing": ("1.2-1", "", f"usr/lib/{HOST_MACHINE}-linux-gnu/libthing.so.1"),
    "broken": ("2.0-1", "missing-lib (>= 2)", "usr/bin/broken"),
}


@dataclass
class MiniRepo:
    root: Path  # holds dists/ and pool/
    keyring: Path
    gnupg: Path

    def sign(self) -> None:
        """(Re)write Packages.gz, Release and InRelease from pool/ and the Packages text."""
        dist = self.root / "dists" / "bookworm"
        packages = (dist / f"main/binary-{ARCH}/Packages").read_bytes()
        (dist / f"main/binary-{ARCH}/Packages.gz").write_bytes(gzip.compress(packages, mtime=0))
        lines = []
        for rel in (f"main/binary-{ARCH}/Packages", f"main/binary-{ARCH}/Packages.gz"):
            data = (dist / rel).read_bytes()
            lines.append(f" {hashlib.sha256(data).hexdigest()} {len(data)} {rel}")
        release = (f"Origin: test\nSuite: stable\nCodename: bookworm\nArchitectures: {ARCH}\nComponents: main\n"
                   "SHA256:\n" + "\n".join(lines) + "\n")
        (dist / "Release").write_text(release)
        (dist / "InRelease").unlink(missing_ok=True)
        subprocess.run(["gpg", "--batch", "--yes", "--homedir", str(self.gnupg), "--clearsign", "-o",
                        str(dist / "InRelease"), str(dist / "Release")], check=True, capture_output=True)

    def copy(self, dest: Path) -> "MiniRepo":
        shutil.copytree(self.root, dest)
        return MiniRepo(dest, self.keyring, self.gnupg)

    def deb(self, name: str, version: str = "") -> Path:
        return next((self.root / "pool").glob(f"{name}_{version or '*'}_*.deb"))

    def publish(self, name: str, version: str, work: Path) -> None:
        """A new version of ``name`` replaces the old one in Packages (its .deb stays in pool/, as
        Debian's archive keeps a superseded file a while), and the Release is signed again."""
        _, depends, path = PACKAGES[name]
        stanza = _make_deb(work, self.root / "pool", name, version, depends, path)
        packages = self.root / f"dists/bookworm/main/binary-{ARCH}/Packages"
        kept = [s for s in packages.read_text().strip("\n").split("\n\n") if not s.startswith(f"Package: {name}\n")]
        packages.write_text("\n\n".join([*kept, stanza]) + "\n")
        self.sign()


def _make_deb(tmp: Path, pool: Path, name: str, version: str, depends: str, path: str) -> str:
    """A real .deb in ``pool`` (dpkg-deb, reproducible); returns its Packages stanza."""
    build = tmp / f"build-{name}-{version}"
    (build / "DEBIAN").mkdir(parents=True)
    target = build / path
    target.parent.mkdir(parents=True)
    target.write_text(f"{name} {version}\n")
    target.chmod(0o755)
    (build / "etc").mkdir()
    (build / "etc" / f"{name}.conf").write_text("setting = 1\n")
    (build / "DEBIAN" / "conffiles").write_text(f"/etc/{name}.conf\n")
    control = (f"Package: {name}\nVersion: {version}\nArchitecture: {ARCH}\nMaintainer: test <t@example.invalid>\n"
               + (f"Depends: {depends}\n" if depends else "") + f"Description: {name} for the tests\n")
    (build / "DEBIAN" / "control").write_text(control)
    deb = pool / f"{name}_{version}_{ARCH}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(build), str(deb)], check=True,
                   capture_output=True, env={**os.environ, "SOURCE_DATE_EPOCH": "0"})
    data = deb.read_bytes()
    return control.rstrip("\n").replace("Description:", f"Filename: pool/{deb.name}\nSize: {len(data)}\n"
                                         f"SHA256: {hashlib.sha256(data).hexdigest()}\nDescription:")


def make_repo(tmp: Path) -> MiniRepo:
    gnupg = tmp / "gnupg"
    gnupg.mkdir(mode=0o700)
    subprocess.run(["gpg", "--batch", "--homedir", str(gnupg), "--passphrase", "", "--quick-gen-key",
                    "ociassemble test <test@example.invalid>", "ed25519", "sign", "never"], check=True, capture_output=True)
    keyring = tmp / "test-keyring.gpg"
    keyring.write_bytes(subprocess.run(["gpg", "--batch", "--homedir", str(gnupg), "--export"], check=True,
                                       capture_output=True).stdout)
    root = tmp / "repo"
    pool = root / "pool"
    pool.mkdir(parents=True)
    stanzas = [_make_deb(tmp, pool, name, version, depends, path) for name, (version, depends, path) in PACKAGES.items()]
    packages = root / f"dists/bookworm/main/binary-{ARCH}/Packages"
    packages.parent.mkdir(parents=True)
    packages.write_text("\n\n".join(stanzas) + "\n")
    repo = MiniRepo(root, keyring, gnupg)
    repo.sign()
    return repo


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def serve(root: Path) -> tuple[str, http.server.ThreadingHTTPServer]:
    """Serve ``root`` on 127.0.0.1 (a thread); returns its URL and the server (``shutdown()`` it)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _Quiet(*a, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server
