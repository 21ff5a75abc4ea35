"""Options and output shared by ``snapfs prune`` and ``snapfs forget --prune``."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from typing import Any

from snapfs.cli.output import human_bytes
from snapfs.errors import UsageError
from snapfs.maintenance.prune import prune
from snapfs.repo.repository import Repository


def prune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--repack-threshold",
        type=float,
        default=20.0,
        metavar="PERCENT",
        help="repack a pack when more than this share of it is unused (default 20)",
    )


def run_prune(repo: Repository, args: argparse.Namespace) -> dict[str, Any]:
    if not 0 <= args.repack_threshold <= 100:
        raise UsageError("--repack-threshold must be between 0 and 100")
    show = not args.quiet and not args.json and sys.stderr.isatty()
    report = prune(
        repo,
        repack_threshold=args.repack_threshold / 100,
        dry_run=args.dry_run,
        progress=(lambda m: print(f"prune: {m}", file=sys.stderr)) if show else None,
    )
    return asdict(report)


def print_prune_report(r: dict[str, Any]) -> None:
    verb = "would free" if r["dry_run"] else "freed"
    print(
        f"prune: {r['packs_deleted']} unused packs deleted, {r['packs_repacked']} repacked into "
        f"{r['packs_written']}, {r['unindexed_packs_deleted']} unindexed packs deleted; "
        f"{r['blobs_removed']} blobs removed; {verb} {human_bytes(r['bytes_freed'])} of "
        f"{human_bytes(r['bytes_before'])}"
    )
