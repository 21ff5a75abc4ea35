"""``snapfs stats``: snapshots, logical/unique/stored bytes, ratios, and what storing costs."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from snapfs.cli.commands import open_repo
from snapfs.cli.output import human_bytes, print_json
from snapfs.cli.registry import AddCommand
from snapfs.errors import EXIT_OK, UsageError
from snapfs.maintenance.stats import GB, RepoStats, check_price, repository_stats

log = logging.getLogger("snapfs")


def register(add: AddCommand) -> None:
    p = add("stats", cmd_stats, "show repository size, deduplication, compression and cost")
    p.add_argument(
        "--price-per-gb-month",
        type=float,
        metavar="PRICE",
        help="storage price per GB (10^9 bytes) and month: also show the monthly cost",
    )


def cmd_stats(args: argparse.Namespace) -> int:
    price: float | None = args.price_per_gb_month
    if price is not None:
        try:
            check_price(price)
        except ValueError as e:
            raise UsageError(f"--price-per-gb-month: {e}") from None
    with open_repo(args) as repo:
        stats = repository_stats(repo)
        location = repo.store.location
    if stats.missing_blobs:
        log.warning(
            "%d referenced data blobs are missing from the index; their sizes are not counted",
            stats.missing_blobs,
        )
    if args.json:
        print_json(stats_json(stats, price))
    else:
        _print_human(stats, price, location)
    return EXIT_OK


def stats_json(stats: RepoStats, price: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "snapshots": len(stats.snapshots),
        "files": stats.files,
        "logical_bytes": stats.logical_bytes,
        "unique_blobs": stats.unique_blobs,
        "unique_bytes": stats.unique_bytes,
        "unique_stored_bytes": stats.unique_stored_bytes,
        "stored_bytes": stats.stored_bytes,
        "stored": stats.stored,
        "objects": stats.objects,
        "missing_blobs": stats.missing_blobs,
        "dedup_ratio": stats.dedup_ratio,
        "compression_ratio": stats.compression_ratio,
        "per_snapshot": [
            {
                "id": s.snapshot.id.hex(),
                "short_id": s.snapshot.short_id,
                "time": s.snapshot.time.isoformat().replace("+00:00", "Z"),
                "host": s.snapshot.host,
                "files": s.files,
                "bytes": s.bytes,
                "bytes_added": s.bytes_added,
            }
            for s in stats.snapshots
        ],
    }
    if price is not None:
        out["price_per_gb_month"] = price
        out["monthly_cost"] = stats.monthly_cost(price)
    return out


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _print_human(stats: RepoStats, price: float | None, location: str) -> None:
    parts = ", ".join(f"{kind} {human_bytes(n)}" for kind, n in stats.stored.items())
    rows = [
        ("repository", location),
        ("snapshots", str(len(stats.snapshots))),
        ("files", f"{stats.files} (summed over snapshots)"),
        ("logical", f"{human_bytes(stats.logical_bytes)} (summed over snapshots)"),
        ("unique data", f"{human_bytes(stats.unique_bytes)} in {stats.unique_blobs} chunks"),
        (
            "stored data",
            f"{human_bytes(stats.unique_stored_bytes)} (those chunks compressed and sealed)",
        ),
        ("stored", f"{human_bytes(stats.stored_bytes)} in {stats.objects} objects ({parts})"),
        ("dedup", f"{_times(stats.dedup_ratio)} (logical / unique)"),
        ("compression", f"{_times(stats.compression_ratio)} (unique / stored data)"),
    ]
    if price is not None:
        rows.append(
            (
                "monthly cost",
                f"{stats.monthly_cost(price):.2f} ({stats.stored_bytes / GB:.6g} GB stored "
                f"x {price:g} per GB-month; GB = 10^9 bytes)",
            )
        )
    for label, value in rows:
        print(f"{label + ':':<14}{value}")
    if not stats.snapshots:
        return
    print()
    print(f"{'ID':<9} {'Time':<20} {'Host':<16} {'Files':>9} {'Size':>11} {'Added':>11}")
    for s in stats.snapshots:
        when = s.snapshot.time.strftime("%Y-%m-%d %H:%M:%S")
        added = "-" if s.bytes_added is None else human_bytes(s.bytes_added)
        print(
            f"{s.snapshot.short_id:<9} {when:<20} {s.snapshot.host:<16} {s.files:>9} "
            f"{human_bytes(s.bytes):>11} {added:>11}"
        )
