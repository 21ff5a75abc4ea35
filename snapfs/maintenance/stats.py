"""How big a repository is, and why: logical, unique and stored bytes, ratios, cost.

Sync. Definitions (docs/guide.md, ``stats``):

- ``files``, ``logical_bytes``: summed over snapshots, what each snapshot contains (its
  manifest summary's ``total_files``/``total_bytes``; computed by walking its trees when
  the summary lacks them). A file kept by ten snapshots counts ten times.
- ``unique_bytes``: plaintext bytes of the distinct data blobs that any snapshot
  references (raw lengths from the index); ``unique_stored_bytes``: what those blobs
  occupy in packs (compressed and sealed).
- ``stored_bytes``: the size of every object of the repository (``data/``, ``index/``,
  ``snapshots/``, ``keys/``, ``config``; locks and unfinished ``.tmp-`` writes are left
  out). It includes tree blobs, pack headers, index files and unreferenced data.
- ``dedup_ratio`` = logical / unique; ``compression_ratio`` = unique / unique stored.

Memory holds the ids of the distinct data blobs seen (32 bytes each) and of the trees
visited (``repo.walk.referenced``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from snapfs.repo.format import BLOB_DATA
from snapfs.repo.repository import CONFIG, Repository
from snapfs.repo.snapshot import Snapshot
from snapfs.repo.tree import FILE
from snapfs.repo.walk import referenced
from snapfs.vfs.paths import root_node, walk

STORED_PREFIXES = ("data/", "index/", "snapshots/", "keys/")
GB = 1_000_000_000  # decimal: storage is priced per 10^9 bytes


@dataclass(frozen=True, slots=True)
class SnapshotStats:
    snapshot: Snapshot
    files: int
    bytes: int
    bytes_added: int | None  # the summary's bytes_added (stored bytes the run added)


@dataclass(slots=True)
class RepoStats:
    snapshots: list[SnapshotStats] = field(default_factory=list)
    files: int = 0
    logical_bytes: int = 0
    unique_blobs: int = 0
    unique_bytes: int = 0
    unique_stored_bytes: int = 0
    missing_blobs: int = 0  # referenced data blobs the index does not list
    stored: dict[str, int] = field(default_factory=dict)  # bytes per kind of object
    objects: int = 0

    @property
    def stored_bytes(self) -> int:
        return sum(self.stored.values())

    @property
    def dedup_ratio(self) -> float | None:
        return self.logical_bytes / self.unique_bytes if self.unique_bytes else None

    @property
    def compression_ratio(self) -> float | None:
        if not self.unique_stored_bytes:
            return None
        return self.unique_bytes / self.unique_stored_bytes

    def monthly_cost(self, price_per_gb_month: float) -> float:
        """Stored bytes in decimal GB (10^9 bytes) times the price of one GB for a month."""
        return self.stored_bytes / GB * price_per_gb_month


def check_price(price: float) -> None:
    """Raise ValueError unless the price is a finite number ≥ 0."""
    if not math.isfinite(price) or price < 0:
        raise ValueError(f"{price:g} is not a price (a number, 0 or more)")


def repository_stats(repo: Repository) -> RepoStats:
    stats = RepoStats()
    snaps = repo.list_snapshots()
    for snap in snaps:
        files, size = _contents(repo, snap)
        added = snap.summary.get("bytes_added")
        stats.snapshots.append(
            SnapshotStats(snap, files, size, added if isinstance(added, int) else None)
        )
        stats.files += files
        stats.logical_bytes += size
    seen: set[bytes] = set()
    for ref in referenced(repo, snaps):
        if ref.type != BLOB_DATA or ref.blob_id in seen:
            continue
        seen.add(ref.blob_id)
        loc = repo.lookup(ref.blob_id)
        if loc is None:
            stats.missing_blobs += 1
            continue
        stats.unique_blobs += 1
        stats.unique_bytes += loc.raw_length
        stats.unique_stored_bytes += loc.length
    _measure_store(repo, stats)
    return stats


def _contents(repo: Repository, snap: Snapshot) -> tuple[int, int]:
    """(files, bytes) of a snapshot: from its summary, else by walking its trees."""
    files, size = snap.summary.get("total_files"), snap.summary.get("total_bytes")
    if isinstance(files, int) and isinstance(size, int):
        return files, size
    files = size = 0
    for _, node in walk(repo, root_node(snap), b"/"):
        if node.type == FILE:
            files += 1
            size += node.size
    return files, size


def _measure_store(repo: Repository, stats: RepoStats) -> None:
    for prefix in STORED_PREFIXES:
        kind = prefix.rstrip("/")
        stats.stored[kind] = 0
        for _, size in repo.store.list(prefix):
            stats.stored[kind] += size
            stats.objects += 1
    # ``config`` is one small object; listing the prefix "config" would walk a local
    # repository's whole tree
    stats.stored[CONFIG] = len(repo.store.get(CONFIG))
    stats.objects += 1
