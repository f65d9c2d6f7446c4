"""``ociassemble cache``: check the blob cache (``verify [--fix]``) or prune what the layer index does not use."""

from __future__ import annotations

import argparse

from ..errors import EXIT_USER, UsageError
from .progress import human_size
from .output import Out

__all__ = ["cmd_cache"]


def cmd_cache(args: argparse.Namespace, out: Out) -> int:
    """``cache verify [--fix]`` (exit 1 if unsound and not fixed) and ``cache prune --older-than DAYS``."""
    from ..image.upkeep import CacheReport, PruneReport
    from ..settings import Settings

    settings = Settings.from_argparse(args, secrets=out.secrets)
    root = settings.cache_root
    if not root.exists():  # a mistyped --cache-dir is not made here, and says so
        empty = CacheReport(fixed=args.fix) if args.action == "verify" else PruneReport(dry_run=args.dry_run)
        out.result(empty.to_json(), f"no cache at {root}: nothing to {args.action} (a build makes it)")
        return 0
    cache = settings.blob_cache()
    if args.action == "verify":
        report = cache.verify(fix=args.fix)
        out.result(report.to_json(), report.summary())
        return 0 if report.clean or args.fix else EXIT_USER
    if args.older_than is None:
        raise UsageError("cache prune needs --older-than DAYS, e.g. 'ociassemble cache prune --older-than 30'")
    pruned = cache.prune(args.older_than, dry_run=args.dry_run)
    out.result(pruned.to_json(), f"{'would remove' if args.dry_run else 'removed'} {len(pruned.removed)} blobs "
                                 f"({human_size(pruned.bytes)}) not used by the layer index for {args.older_than:g} days")
    return 0
