"""The image's software bill of materials: an SPDX 2.3 JSON document, and the OCI artifact that refers to the image.

It is written beside an output, or pushed as that artifact by ``registry.sbom``.

What it lists: the Python packages pex installed (name and version from each
``*.dist-info/METADATA``, a SHA-256 of its ``RECORD``), and the Debian packages of the base
(``var/lib/dpkg/status``, with the distribution from ``os-release``), each with a purl.

Why SPDX 2.3 rather than CycloneDX: it is an ISO standard (ISO/IEC 5962), it is what
BuildKit's ``--sbom`` attestations and Microsoft's sbom-tool (the Azure tooling our users
already run) emit, and GitHub's dependency graph exports it, so the scanners our users
point at an image already read it.

The document is deterministic: packages sorted, ``created`` is the build's
``SOURCE_DATE_EPOCH``, and the namespace is derived from the image digest, so the same
image always has the same SBOM bytes (and the same artifact digest).

Example::

    packages = image_packages(image, cache, site=result.deps_site, layers=base_layers)
    data = sbom_bytes(spdx_document(image, packages, name="team/model:1.0", created=0))
    artifact = sbom_artifact(image, cache, data)  # registry.sbom.push_sbom pushes it
"""

from __future__ import annotations

import email.parser
import hashlib
import json
import re
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .. import __version__
from ..errors import ArchiveError
from .assemble import Image, rfc3339
from .cache import BlobCache
from .oci import Descriptor, ImageConfig, Manifest, MediaType, Platform
from .tarread import entries_of, read_small, stream_tar

__all__ = [
    "SPDX_MEDIA_TYPE",
    "Package",
    "debian_packages",
    "image_packages",
    "python_packages",
    "sbom_artifact",
    "sbom_bytes",
    "sbom_path",
    "sbom_tag",
    "spdx_document",
]

#: The IANA media type of SPDX JSON: the artifact's ``artifactType`` and its layer's media type.
SPDX_MEDIA_TYPE = "application/spdx+json"
#: Where the recipe installs Python packages in the image (``azureml.deps.DEPS_DIR``, no leading /).
PYTHON_PREFIX = "var/azureml-deps/"
_DPKG_STATUS = "var/lib/dpkg/status"
_OS_RELEASE = ("etc/os-release", "usr/lib/os-release")
#: The empty JSON config OCI 1.1 prescribes for artifacts (``application/vnd.oci.empty.v1+json``).
_EMPTY_CONFIG = b"{}"
_DIST_INFO = re.compile(r"^([^/]+)\.dist-info/(METADATA|RECORD)$")


@dataclass(frozen=True, order=True)
class Package:
    """One package in the image: ``ecosystem`` is ``pypi`` or ``deb``."""

    ecosystem: str
    name: str
    version: str
    sha256: str | None = None  # pypi: of the installed RECORD (which lists every file's sha256)
    arch: str | None = None  # deb
    distro: str = "debian"  # deb: the os-release ID

    @property
    def purl(self) -> str:
        if self.ecosystem == "pypi":
            name = re.sub(r"[-_.]+", "-", self.name).lower()
            return f"pkg:pypi/{quote(name)}@{quote(self.version, safe='')}"
        qualifier = f"?arch={quote(self.arch)}" if self.arch else ""
        return f"pkg:deb/{quote(self.distro)}/{quote(self.name)}@{quote(self.version, safe='')}{qualifier}"


def _python_package(metadata: bytes, record: bytes | None) -> Package | None:
    headers = email.parser.BytesHeaderParser().parsebytes(metadata)
    name, version = headers.get("Name"), headers.get("Version")
    if not name or not version:
        return None
    digest = hashlib.sha256(record).hexdigest() if record is not None else None
    return Package("pypi", str(name).strip(), str(version).strip(), sha256=digest)


def python_packages(site: Path) -> list[Package]:
    """The packages installed in a flat site-packages folder (pex ``--layout flat``), sorted."""
    out = []
    for info in sorted(site.glob("*.dist-info")):
        try:
            metadata = (info / "METADATA").read_bytes()
        except OSError:
            continue
        record = info / "RECORD"
        pkg = _python_package(metadata, record.read_bytes() if record.is_file() else None)
        if pkg:
            out.append(pkg)
    return sorted(set(out))


def debian_packages(status: str, distro: str = "debian") -> list[Package]:
    """The installed packages of a dpkg ``status`` file (``Status: install ok installed``), sorted."""
    out = []
    for para in status.split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): ?(.*)$", para, re.MULTILINE))
        if not fields.get("Package") or not fields.get("Version"):
            continue
        if fields.get("Status", "install ok installed").split()[-1] != "installed":
            continue
        out.append(Package("deb", fields["Package"], fields["Version"], arch=fields.get("Architecture"),
                           distro=distro))
    return sorted(set(out))


def _os_id(text: str) -> str:
    m = re.search(r"^ID=\"?([A-Za-z0-9._-]+)\"?$", text, re.MULTILINE)
    return m.group(1).lower() if m else "debian"


def _scan(image: Image, cache: BlobCache, layers: Sequence[Descriptor], python: bool
          ) -> tuple[str | None, str, dict[str, dict[str, bytes]]]:
    """dpkg status, os-release and dist-info files as the layers leave them (whiteouts applied)."""
    from .describe import open_layer

    files: dict[str, bytes] = {}
    for desc in layers:
        with open_layer(image, cache, desc) as raw:
            try:
                with stream_tar(raw) as tf:
                    for m in entries_of(tf):
                        name = (m.name.removeprefix("./")).lstrip("/")
                        base = name.rsplit("/", 1)[-1]
                        if base.startswith(".wh."):  # a whiteout deletes what lower layers had
                            parent = name[: len(name) - len(base)]
                            target = parent if base == ".wh..wh..opq" else parent + base[4:]
                            for k in [k for k in files if k == target or k.startswith(target.rstrip("/") + "/")]:
                                del files[k]
                            continue
                        wanted = name == _DPKG_STATUS or name in _OS_RELEASE or (
                            python and name.startswith(PYTHON_PREFIX) and _DIST_INFO.match(name[len(PYTHON_PREFIX):]))
                        if wanted and m.isreg():
                            files[name] = read_small(tf, m)
            except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
                raise ArchiveError(f"layer {desc.digest} is not a readable tar ({exc}); cannot list its packages") from None
    status = files.get(_DPKG_STATUS)
    release = next((files[p] for p in _OS_RELEASE if p in files), b"")
    infos: dict[str, dict[str, bytes]] = {}
    for name, data in files.items():
        m = _DIST_INFO.match(name[len(PYTHON_PREFIX):]) if name.startswith(PYTHON_PREFIX) else None
        if m:
            infos.setdefault(m.group(1), {})[m.group(2)] = data
    return (status.decode("utf-8", "replace") if status is not None else None,
            release.decode("utf-8", "replace"), infos)


def image_packages(image: Image, cache: BlobCache, *, site: Path | None = None,
                   layers: Sequence[Descriptor] | None = None) -> list[Package]:
    """The packages of ``image``: Python ones from ``site`` (the deps folder pex made) or, when
    it is not known, from the ``*.dist-info`` under ``/var/azureml-deps`` in the layers; Debian
    ones from the dpkg status the layers leave. ``layers`` limits the scan (a build passes the
    base's layers only: its own layers hold no dpkg status); default: every layer.

    Raises ArchiveError for a layer that is not a readable tar.
    """
    scan = list(image.manifest.layers if layers is None else layers)
    status, release, infos = _scan(image, cache, scan, python=site is None)
    out: list[Package] = []
    if site is not None:
        out += python_packages(site)
    else:
        for files in infos.values():
            if "METADATA" in files:
                pkg = _python_package(files["METADATA"], files.get("RECORD"))
                if pkg:
                    out.append(pkg)
    if status is not None:
        out += debian_packages(status, _os_id(release))
    return sorted(set(out))


def _spdx_id(prefix: str, *parts: str) -> str:
    return "SPDXRef-" + prefix + "-" + re.sub(r"[^A-Za-z0-9.-]+", "-", "-".join(parts)).strip("-")


def spdx_document(image: Image, packages: Iterable[Package], *, name: str = "", created: int = 0,
                  repository: str | None = None) -> dict[str, Any]:
    """An SPDX 2.3 document: the image (``DESCRIBES``) ``CONTAINS`` each package.

    ``name`` is how the image is known (a reference or output), ``repository`` the
    registry repository it is pushed to (``registry/team/app``, for its purl), ``created``
    the build epoch. Deterministic: the same inputs give the same document.
    """
    hexd = image.digest.split(":", 1)[1]
    image_id = "SPDXRef-Image"
    purl = f"pkg:oci/{quote((repository or 'image').rsplit('/', 1)[-1])}@{quote(image.digest, safe='')}"
    if repository:
        purl += f"?repository_url={quote(repository, safe='/')}"
    image_pkg = {
        "SPDXID": image_id,
        "name": name or image.digest,
        "versionInfo": image.digest,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": False,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "CONTAINER",
        "checksums": [{"algorithm": "SHA256", "checksumValue": hexd}],
        "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl}],
    }
    spdx_packages = [image_pkg]
    relationships = [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                      "relatedSpdxElement": image_id}]
    seen: set[str] = set()
    for pkg in sorted(set(packages)):
        ident = _spdx_id(pkg.ecosystem, pkg.name, pkg.version, pkg.arch or "")
        n = 2
        while ident in seen:
            ident = f"{ident}-{n}"
            n += 1
        seen.add(ident)
        entry: dict[str, Any] = {
            "SPDXID": ident,
            "name": pkg.name,
            "versionInfo": pkg.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                              "referenceLocator": pkg.purl}],
        }
        if pkg.sha256:
            entry["checksums"] = [{"algorithm": "SHA256", "checksumValue": pkg.sha256}]
            entry["comment"] = "checksum: SHA-256 of the installed RECORD file, which lists each file's SHA-256"
        if pkg.ecosystem == "pypi":
            entry["sourceInfo"] = "installed by pex into /var/azureml-deps"
        else:
            entry["sourceInfo"] = "listed in the base image's /var/lib/dpkg/status"
        spdx_packages.append(entry)
        relationships.append({"spdxElementId": image_id, "relationshipType": "CONTAINS", "relatedSpdxElement": ident})
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"ociassemble SBOM of {name or image.digest}",
        "documentNamespace": f"https://spdx.org/spdxdocs/ociassemble/sha256-{hexd}",
        "creationInfo": {"created": rfc3339(created), "creators": [f"Tool: ociassemble-{__version__}"]},
        "documentDescribes": [image_id],
        "packages": spdx_packages,
        "relationships": relationships,
    }


def sbom_bytes(doc: dict[str, Any]) -> bytes:
    """The document as written and pushed: sorted keys, two-space indent, a final newline."""
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def sbom_path(output: Path, platform: Platform | None = None) -> Path:
    """Where the SBOM of an output goes: ``<output>.sbom.spdx.json`` beside it; for one
    platform's image of a multi-platform output, ``<output>.linux-arm64.sbom.spdx.json``."""
    if platform is None:
        return output.with_name(output.name + ".sbom.spdx.json")
    from .platform import short_name

    return output.with_name(f"{output.name}.{short_name(platform).replace('/', '-')}.sbom.spdx.json")


def sbom_tag(image_digest: str) -> str:
    """The fallback tag for registries without the referrers API, as cosign and oras name it."""
    algo, _, hexd = image_digest.partition(":")
    return f"{algo}-{hexd}.sbom"


def sbom_artifact(image: Image, cache: BlobCache, data: bytes, *, created: int = 0) -> Image:
    """The SBOM as an OCI 1.1 artifact manifest whose ``subject`` is ``image`` (blobs put in ``cache``)."""
    config = Descriptor(MediaType.EMPTY, str(cache.put_bytes(_EMPTY_CONFIG)), len(_EMPTY_CONFIG))
    layer = Descriptor(SPDX_MEDIA_TYPE, str(cache.put_bytes(data)), len(data),
                       annotations={"org.opencontainers.image.title": "sbom.spdx.json"})
    manifest = Manifest(config=config, layers=(layer,), subject=image.descriptor, artifact_type=SPDX_MEDIA_TYPE,
                        annotations={"org.opencontainers.image.created": rfc3339(created)})
    return Image(manifest, manifest.to_bytes(), ImageConfig(), _EMPTY_CONFIG)
