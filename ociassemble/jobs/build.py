"""The ``build`` job: build the image the settings describe and write it to their ``output`` (and an SBOM beside it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..built import BuiltSet
from ..events import QUIET, Progress
from ..settings import Settings
from .building import build_set
from .report import layers_json, platform_json, work_json, work_line

__all__ = ["DEFAULT_OUTPUT", "BuildResult", "build"]

#: where a build writes when neither the flags nor the config say
DEFAULT_OUTPUT = "oci-archive:image.tar"


@dataclass
class BuildResult:
    """What ``build`` made and wrote: the images, where, and the SBOM files."""

    built: BuiltSet
    output: str
    sboms: list[str] = field(default_factory=list)

    @property
    def digest(self) -> str:
        return self.built.target.digest

    def to_json(self) -> dict[str, Any]:
        first = self.built.builds[0]
        data: dict[str, Any] = {"digest": self.digest, "output": self.output, "layers": layers_json(first.layers),
                                "config": first.image.manifest.config.digest, **work_json(self.built),
                                "platforms": [platform_json(b) for b in self.built.builds]}
        if self.built.index is not None:
            data["mediaType"] = self.built.index.descriptor.media_type
        if self.sboms:
            data["sbom"] = self.sboms[0] if self.built.index is None else self.sboms
        return data


def build(settings: Settings, progress: Progress = QUIET) -> BuildResult:
    """Build the image (for each of the settings' platforms) and write it whole to ``settings.output``
    (default ``oci-archive:image.tar``); with ``settings.sbom``, each image's SPDX SBOM beside it.

    A bad output, or several platforms for a docker-archive, fails before any work. Raises the
    ``errors`` of the build and of writing; nothing is half-written.
    """
    from ..transport.spec import is_registry
    from ..imageio import check_output, write_image

    spec = settings.output or DEFAULT_OUTPUT
    check_output(spec, len(settings.platforms) > 1)
    cache = settings.blob_cache()
    options = settings.registry_options(settings.base if is_registry(settings.base)
                                        else settings.layer_cache.repo or settings.layer_cache.read_from)
    built = build_set(settings, cache, options, progress)
    write_image(built.target, cache, spec)
    progress.log(work_line(built))
    progress.log(f"wrote {spec}")
    result = BuildResult(built, spec)
    if settings.sbom:
        result.sboms = _write_sboms(built, spec, progress)
    return result


def _write_sboms(built: BuiltSet, spec: str, progress: Progress) -> list[str]:
    from ..build import image_sbom
    from ..image.sbom import sbom_path
    from ..transport.spec import parse_spec

    dest = parse_spec(spec, for_output=True).path
    assert dest is not None
    # the SBOM names the output by its file name only: a folder (the checkout's) is not the image's
    named = f"{parse_spec(spec, for_output=True).kind}:{dest.name}"
    progress.log("listing packages for the SBOM")
    sboms = []
    for b in built.builds:
        path = sbom_path(dest, b.image.platform if built.index is not None else None)
        path.write_bytes(image_sbom(b.image, built.cache, name=named, site=b.deps_site, scan=b.scan_layers))
        sboms.append(str(path))
        progress.log(f"wrote {path}")
    return sboms
