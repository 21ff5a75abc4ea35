"""Prune: delete what no snapshot references, repack packs that are mostly garbage.

Order makes it crash-safe: new packs first, then index files describing every pack that
stays, then the old index files, and the packs that go last. Killed at any point, the
repository still holds every blob of every snapshot, indexed (at worst twice), plus some
unreferenced packs that the next prune removes.

Sync; the caller holds the exclusive lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from snapfs.errors import IntegrityError
from snapfs.repo.format import BlobLocation, id_from_name, pack_name
from snapfs.repo.pack import FinishedPack, PackBuilder
from snapfs.repo.repository import Repository
from snapfs.repo.walk import referenced

log = logging.getLogger(__name__)

INDEX_PACKS_PER_FILE = 4096


@dataclass(slots=True)
class PackUsage:
    size: int = 0  # bytes of blobs listed for the pack
    used: int = 0
    blobs: list[tuple[bytes, BlobLocation, bool]] = field(default_factory=list)  # id, loc, used


@dataclass(slots=True)
class PruneReport:
    snapshots: int = 0
    packs_before: int = 0
    packs_deleted: int = 0
    packs_repacked: int = 0
    packs_written: int = 0
    unindexed_packs_deleted: int = 0
    bytes_before: int = 0
    bytes_freed: int = 0
    blobs_removed: int = 0
    dry_run: bool = False


Progress = Callable[[str], None]


def used_blobs(repo: Repository) -> set[bytes]:
    """Every blob any snapshot needs; a needed blob missing from the index stops prune."""
    used: set[bytes] = set()
    for ref in referenced(repo, repo.list_snapshots()):
        if ref.blob_id not in used and repo.lookup(ref.blob_id) is None:
            raise IntegrityError(
                f"snapshot {ref.snapshot.short_id}: {ref.path.decode(errors='replace')} needs "
                f"blob {ref.blob_id.hex()[:16]}, which no index lists; run snapfs check"
            )
        used.add(ref.blob_id)
    return used


def pack_usage(repo: Repository, used: set[bytes]) -> tuple[dict[bytes, PackUsage], list[str]]:
    """Per pack, from the index files themselves (a blob stored twice counts once)."""
    packs: dict[bytes, PackUsage] = {}
    claimed: set[bytes] = set()
    names = [n for n, _ in repo.store.list("index/")]
    for name in names:
        for blob_id, loc in repo.read_index_file(name.rsplit("/", 1)[-1]):
            usage = packs.setdefault(loc.pack, PackUsage())
            keep = blob_id in used and blob_id not in claimed
            if keep:
                claimed.add(blob_id)
                usage.used += loc.length
            usage.size += loc.length
            usage.blobs.append((blob_id, loc, keep))
    return packs, names


def prune(
    repo: Repository,
    repack_threshold: float = 0.2,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> PruneReport:
    say = progress or (lambda _msg: None)
    report = PruneReport(dry_run=dry_run, snapshots=len(repo.list_snapshots()))
    repo.sync_index()
    say("finding the blobs snapshots use")
    used = used_blobs(repo)
    packs, old_index = pack_usage(repo, used)
    stored = dict(repo.store.list("data/"))
    report.packs_before = len(stored)
    report.bytes_before = sum(stored.values())
    unindexed = [n for n in stored if id_from_name(n) not in packs]
    drop = [p for p, u in packs.items() if u.used == 0]
    repack = [
        p for p, u in packs.items() if u.used > 0 and (u.size - u.used) > repack_threshold * u.size
    ]
    report.packs_deleted, report.packs_repacked = len(drop), len(repack)
    report.unindexed_packs_deleted = len(unindexed)
    report.blobs_removed = sum(1 for u in packs.values() for _, _, keep in u.blobs if not keep)
    gone = [pack_name(p) for p in drop + repack] + unindexed
    report.bytes_freed = sum(stored.get(n, 0) for n in gone)
    if dry_run or (not gone and len(old_index) <= 1):
        return report
    say(f"repacking {len(repack)} packs")
    new_packs = _repack(repo, [packs[p] for p in repack])
    report.packs_written = len(new_packs)
    report.bytes_freed -= sum(size for _, size in new_packs)
    keep_index = {p: [(b, loc) for b, loc, k in u.blobs if k] for p, u in packs.items()}
    for p in drop + repack:
        keep_index.pop(p, None)
    for fp, _ in new_packs:
        keep_index[fp.id] = fp.blobs
    say("writing the new index")
    _write_index(repo, keep_index)
    say("deleting the old index and unused packs")
    for name in old_index:
        repo.store.delete(name)
    for name in gone:
        repo.store.delete(name)
    repo.sync_index()
    return report


def _repack(repo: Repository, packs: list[PackUsage]) -> list[tuple[FinishedPack, int]]:
    """Copy the used blobs of these packs into new ones, verifying each on the way."""
    builders: dict[int, PackBuilder] = {}
    written: list[tuple[FinishedPack, int]] = []
    for usage in packs:
        for blob_id, loc, keep in usage.blobs:
            if not keep:
                continue
            sealed = repo.fetcher.sealed(blob_id, loc)
            repo.fetcher.open(blob_id, loc, sealed)  # never carry corruption forward
            builder = builders.setdefault(loc.type, PackBuilder(loc.type))
            builder.add(blob_id, sealed, loc.raw_length)
            if builder.size >= repo.config.pack_size:
                written.append(_store_pack(repo, builder))
    written += [_store_pack(repo, b) for b in builders.values() if b.entries]
    return written


def _store_pack(repo: Repository, builder: PackBuilder) -> tuple[FinishedPack, int]:
    """Write a pack; keep only what the index needs of it, and its size."""
    pack = builder.finish(repo.key)
    repo.store.put(pack_name(pack.id), pack.data)
    return FinishedPack(pack.id, b"", pack.blobs), len(pack.data)


def _write_index(repo: Repository, packs: dict[bytes, list[tuple[bytes, BlobLocation]]]) -> None:
    items = list(packs.items())
    for start in range(0, len(items), INDEX_PACKS_PER_FILE):
        repo.write_index_file(dict(items[start : start + INDEX_PACKS_PER_FILE]))
