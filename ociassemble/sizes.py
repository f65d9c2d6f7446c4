"""Byte counts as people read them: binary units, one decimal.

Shared by the image's text renderings (``image.describe``, ``image.verify``) and the
command line's progress lines, so it sits at the top level below both.
"""

from __future__ import annotations

__all__ = ["human_size"]


def human_size(n: float) -> str:
    """``1536`` → ``"1.5 KiB"`` (binary units, as registries and ``du -h`` count)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - the loop always returns
