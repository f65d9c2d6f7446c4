"""A suite's ``InRelease``: its OpenPGP signature checked by ``gpgv``, and the SHA256 of every index it lists.

Why gpgv: it is apt's own verifier (apt runs it for every ``apt update``), it reads
the keyrings the ``debian-archive-keyring``/``ubuntu-keyring`` packages install as
they are, and it is on every Debian and Ubuntu machine, so no OpenPGP code of our own
(or a pure-Python OpenPGP library, none of which is as widely used or as current with
the archive's Ed25519 and RSA-4096 keys) stands between the archive and the image.
Only the text gpgv says was signed (``--output -``) is read: lines a mirror could add
around the signed part never reach the parser.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, PackageError
from .fetch import Fetcher
from .sources import Repository

__all__ = ["Release", "fetch_release", "verify_inrelease"]


@dataclass(frozen=True)
class Release:
    """The signed fields of one suite's InRelease."""

    repository: Repository
    codename: str
    suite: str
    architectures: tuple[str, ...]
    components: tuple[str, ...]
    #: index path (``main/binary-amd64/Packages.gz``) → (sha256, size)
    files: dict[str, tuple[str, int]]
    #: the SHA256 of the signed text: what a resolution made from this Release is keyed by
    digest: str
    #: ``Acquire-By-Hash: yes``: indexes are also served under ``by-hash/SHA256/<hex>``, which a
    #: mirror updating at the same moment never changes under us (apt fetches them that way)
    by_hash: bool = False

    def index_url(self, path: str) -> str:
        """Where to fetch the index ``path`` this Release lists: by its hash when the archive offers it."""
        if self.by_hash:
            folder = path.rsplit("/", 1)[0]
            return self.repository.dists(f"{folder}/by-hash/SHA256/{self.files[path][0]}")
        return self.repository.dists(path)


def verify_inrelease(data: bytes, keyring: Path, where: str) -> bytes:
    """The signed text of an InRelease file, once gpgv has checked its signature with ``keyring``.

    Raises PackageError for a bad or missing signature, InputError when gpgv or the keyring is missing.
    """
    if not keyring.is_file():
        raise InputError(f"keyring {keyring} does not exist: install debian-archive-keyring (or ubuntu-keyring), "
                         "or give the mirror's keyring with --apt-keyring")
    with tempfile.TemporaryDirectory(prefix="ociassemble-gpgv-") as tmp:
        src = Path(tmp) / "InRelease"
        src.write_bytes(data)
        try:
            proc = subprocess.run(["gpgv", "--quiet", "--keyring", str(keyring), "--output", "-", str(src)],
                                  capture_output=True, env={**os.environ, "LC_ALL": "C", "GNUPGHOME": tmp})
        except FileNotFoundError:
            raise InputError("gpgv is not installed: run 'apt-get install gpgv' (it checks the archive's signature)") from None
    if proc.returncode != 0 or not proc.stdout:
        reason = next((l for l in proc.stderr.decode(errors="replace").splitlines() if "BAD" in l or "No public key" in l
                       or "not" in l.lower()), "no valid signature")
        raise PackageError(f"{where} is not signed by a key of {keyring} ({reason.removeprefix('gpgv: ').strip()}): "
                           "the mirror's copy was changed or the keyring is not this archive's; nothing was used")
    return proc.stdout


def _fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if line[:1] in (" ", "\t"):
            if key:
                fields[key] += "\n" + line.strip()
            continue
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def fetch_release(fetcher: Fetcher, repo: Repository) -> Release:
    """The suite's verified Release fields.

    Raises PackageError for a missing or badly signed InRelease, MirrorError for the network.
    """
    url = repo.dists("InRelease")
    where = f"InRelease of {repo.suite}"
    text = verify_inrelease(fetcher.text(url, where), repo.keyring, f"{url}")

    fields = _fields(text.decode("utf-8", "replace"))
    files: dict[str, tuple[str, int]] = {}
    for line in fields.get("SHA256", "").splitlines():
        m = re.fullmatch(r"([0-9a-f]{64})\s+(\d+)\s+(\S+)", line.strip())
        if m:
            files[m.group(3)] = (m.group(1), int(m.group(2)))
    if not files:
        raise PackageError(f"{url} lists no SHA256 index: this archive cannot be checked; use another mirror")
    codename = fields.get("Codename", "")
    suite_stem = repo.suite.split("-", 1)[0]
    if codename and codename.split("-", 1)[0] != suite_stem and fields.get("Suite", "").split("-", 1)[0] != suite_stem:
        raise PackageError(f"{url} is signed for {codename}, not {repo.suite}: a mirror may not serve one release "
                           "as another; check --apt-mirror")
    return Release(repo, codename, fields.get("Suite", ""), tuple(fields.get("Architectures", "").split()),
                   tuple(fields.get("Components", "").split()), files, "sha256:" + hashlib.sha256(text).hexdigest(),
                   fields.get("Acquire-By-Hash", "").lower() == "yes")
