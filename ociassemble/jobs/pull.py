"""The ``pull`` job: a registry image into an OCI layout or archive.

``platform`` picks the image of a multi-platform one (None: this machine's); ``ALL`` keeps
the registry's index and every platform's image (its digest stays the registry's), which
only ``oci:`` and ``oci-archive:`` can hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..image.imageindex import ImageIndex, Target
from ..image.oci import Platform
from ..settings import Settings

__all__ = ["PullResult", "pull"]


@dataclass
class PullResult:
    """What was pulled (an image, or an index of them all) and where it was written."""

    target: Target
    output: str

    @property
    def digest(self) -> str:
        return self.target.digest

    def to_json(self) -> dict[str, Any]:
        from ..image.platform import normalize

        data: dict[str, Any] = {"digest": self.digest, "output": self.output}
        if isinstance(self.target, ImageIndex):
            data["manifests"] = [{"platform": str(normalize(i.platform)), "digest": i.digest} for i in self.target.images]
        else:
            data["platform"] = str(normalize(self.target.platform))
        return data


def pull(settings: Settings, ref: str, dest: str, *, platform: Platform | str | None = None) -> PullResult:
    """Pull ``ref`` (its image for ``platform``, or ``ALL``) and write it whole to ``dest``.

    A bad destination, or a docker-archive of all platforms, fails before any download.
    """
    from ..image.imageindex import for_platform
    from ..image.platform import ALL
    from ..registry.pull import pull_image
    from ..imageio import check_output, write_image

    check_output(dest, platform == ALL)
    cache = settings.blob_cache()
    target = pull_image(ref, cache, options=settings.registry_options(ref), platform=platform)
    if platform is not None and platform != ALL:  # an image of one platform must be that platform's
        target = for_platform(target, platform, ref)  # type: ignore[arg-type]
    write_image(target, cache, dest)  # fetches the layers into the cache, verified
    return PullResult(target, dest)
