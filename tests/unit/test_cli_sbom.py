"""The SBOM (ociassemble.image.sbom): what it reads from dpkg status and dist-info, and that the SPDX 2.3
document is well formed and deterministic."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ociassemble.image.assemble import ImageBuilder
from ociassemble.image.cache import BlobCache
from ociassemble.image.layer import LayerSource, build_layer
from ociassemble.image.oci import MediaType
from ociassemble.image.sbom import (
    SPDX_MEDIA_TYPE,
    Package,
    debian_packages,
    image_packages,
    python_packages,
    sbom_artifact,
    sbom_bytes,
    sbom_path,
    sbom_tag,
    spdx_document,
)

STATUS = """Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9+deb12u4
Description: GNU C Library
 continuation line: Version: 9.9

Package: tzdata
Status: install ok installed
Architecture: all
Version: 2024a-0+deb12u1

Package: old
Status: deinstall ok config-files
Architecture: amd64
Version: 1:1.0-1
"""


def test_debian_packages_keep_installed_ones_with_purls() -> None:
    pkgs = debian_packages(STATUS)
    assert [(p.name, p.version, p.arch) for p in pkgs] == [("libc6", "2.36-9+deb12u4", "amd64"),
                                                           ("tzdata", "2024a-0+deb12u1", "all")]
    assert pkgs[0].purl == "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64"
    assert Package("deb", "x", "1:2.0", arch="amd64").purl == "pkg:deb/debian/x@1%3A2.0?arch=amd64"


def _site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    for name, version in (("Flask", "3.1.3"), ("scikit_learn", "1.9.1")):
        info = site / f"{name.lower()}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: x\n\nbody\n")
        (info / "RECORD").write_text(f"{name}/__init__.py,sha256=abc,1\n")
    return site


def test_python_packages_from_a_flat_site(tmp_path: Path) -> None:
    pkgs = python_packages(_site(tmp_path))
    assert [(p.name, p.version) for p in pkgs] == [("Flask", "3.1.3"), ("scikit_learn", "1.9.1")]
    assert pkgs[1].purl == "pkg:pypi/scikit-learn@1.9.1"
    assert pkgs[0].sha256 == hashlib.sha256(b"Flask/__init__.py,sha256=abc,1\n").hexdigest()


def _image(tmp_path: Path, cache: BlobCache):  # type: ignore[no-untyped-def]
    root = tmp_path / "root"
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(STATUS)
    (root / "etc").mkdir()
    (root / "etc/os-release").write_text('NAME="Ubuntu"\nID=ubuntu\n')
    b = ImageBuilder(cache)
    b.add_layer(build_layer(cache, [LayerSource(root, "/")]), "base")
    b.add_layer(build_layer(cache, [LayerSource(_site(tmp_path / "again"), "/var/azureml-deps")]), "deps")
    return b.build()


def test_image_packages_read_the_layers(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache")
    image = _image(tmp_path, cache)
    pkgs = image_packages(image, cache)
    assert {(p.ecosystem, p.name) for p in pkgs} == {("deb", "libc6"), ("deb", "tzdata"), ("pypi", "Flask"),
                                                      ("pypi", "scikit_learn")}
    assert {p.distro for p in pkgs if p.ecosystem == "deb"} == {"ubuntu"}
    # a build knows its deps folder and its base layers: the same answer without reading the deps layer
    again = image_packages(image, cache, site=_site(tmp_path / "third"), layers=image.manifest.layers[:1])
    assert again == pkgs


def test_spdx_document_is_well_formed_and_deterministic(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache")
    image = _image(tmp_path, cache)
    pkgs = image_packages(image, cache)
    doc = spdx_document(image, pkgs, name="r.example/team/app:1", created=0, repository="r.example/team/app")
    assert doc["spdxVersion"] == "SPDX-2.3" and doc["dataLicense"] == "CC0-1.0"
    assert doc["creationInfo"]["created"] == "1970-01-01T00:00:00Z"
    assert doc["documentNamespace"].endswith(image.digest.replace(":", "-"))
    ids = [p["SPDXID"] for p in doc["packages"]]
    assert len(ids) == len(set(ids)) == len(pkgs) + 1
    assert all(re.fullmatch(r"SPDXRef-[A-Za-z0-9.-]+", i) for i in ids)
    for p in doc["packages"]:
        for key in ("name", "downloadLocation", "filesAnalyzed"):
            assert key in p
    related = {r["relatedSpdxElement"] for r in doc["relationships"]}
    assert related == set(ids)
    image_pkg = doc["packages"][0]
    assert image_pkg["externalRefs"][0]["referenceLocator"] == (
        f"pkg:oci/app@{image.digest.replace(':', '%3A')}?repository_url=r.example/team/app")
    assert sbom_bytes(doc) == sbom_bytes(spdx_document(image, reversed(pkgs), name="r.example/team/app:1",
                                                       created=0, repository="r.example/team/app"))


def test_artifact_refers_to_the_image(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache")
    image = _image(tmp_path, cache)
    data = sbom_bytes(spdx_document(image, []))
    artifact = sbom_artifact(image, cache, data)
    m = artifact.manifest
    assert m.subject is not None and m.subject.digest == image.digest and m.subject.size == len(image.manifest_bytes)
    assert m.artifact_type == SPDX_MEDIA_TYPE and m.config.media_type == MediaType.EMPTY and m.config.size == 2
    assert m.layers[0].media_type == SPDX_MEDIA_TYPE and cache.has(m.layers[0].digest)
    assert sbom_tag(image.digest) == f"sha256-{image.digest[7:]}.sbom"
    assert sbom_path(Path("/out/image.tar")) == Path("/out/image.tar.sbom.spdx.json")
