"""Copying snapshots into another repository (other keys, possibly another store).

Blob ids are keyed (docs/format.md §7), so nothing can be copied as stored bytes: every
blob is read and authenticated in the source, its id recomputed with the destination's
id key, and sealed and packed into the destination by a BlobSaver unless the
destination's index already has that id. Trees are rewritten bottom-up with the
translated content and subtree ids. A source→destination id map in a temporary LMDB
table lets each blob and each tree be read once per run, however many snapshots share
it; a tree already translated is not descended into again.

Each copied manifest records the snapshot it came from in ``original`` (for a copy of a
copy, the first one), and a snapshot whose original (or itself) is already in the
destination is skipped: copying twice adds nothing, and copying back is a no-op.

Memory: a stack of the decoded trees from the root to the directory being copied, the
map of futures of that stack's unfinished blobs, and at most ``MAX_BATCHES`` batches of
blobs (each at most ``BATCH_BYTES`` plus one chunk) in flight, plus the BlobSaver's open
packs. Nothing grows with the size of a snapshot beyond its largest directory.

Sync; no output (progress is reported to a callback). Callers hold a shared lock on
both repositories.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from snapfs.cache import Cache
from snapfs.errors import IntegrityError, SnapfsError, UsageError, WrongPassword
from snapfs.repo.format import BlobLocation
from snapfs.repo.lock import pid_alive
from snapfs.repo.repository import Repository
from snapfs.repo.snapshot import Snapshot
from snapfs.repo.tree import DIR, FILE, Node, encode_tree
from snapfs.store import Store
from snapfs.writer.saver import BlobSaver

log = logging.getLogger(__name__)

COPYMAP = "copymap"
WORKERS = 4
MAX_BATCHES = 6  # batches queued or being copied
BATCH_BLOBS = 64
BATCH_BYTES = 8 << 20  # sealed bytes; neighbours in a pack are read in one request


@dataclass(slots=True)
class CopyStats:
    blobs_read: int = 0  # source blobs read and re-keyed
    data_added: int = 0  # data blobs the destination did not have
    trees_added: int = 0
    blobs_existing: int = 0  # blobs (data and trees) the destination already had
    bytes_added: int = 0  # stored bytes of the added blobs

    def minus(self, other: CopyStats) -> CopyStats:
        return CopyStats(
            self.blobs_read - other.blobs_read,
            self.data_added - other.data_added,
            self.trees_added - other.trees_added,
            self.blobs_existing - other.blobs_existing,
            self.bytes_added - other.bytes_added,
        )


@dataclass(frozen=True, slots=True)
class Copied:
    """One source snapshot and its copy: written now, or found already there."""

    source: Snapshot
    copy: Snapshot
    skipped: bool
    stats: CopyStats = field(default_factory=CopyStats)


def open_destination(source: Repository, store: Store, password: bytes) -> Repository:
    """Open the destination beside the source, refusing the source itself (also under
    another URL, e.g. a byte-for-byte copy in a bucket). Both would share one cache
    directory, and LMDB allows one handle per environment and process, so the source's
    cache is closed while the destination opens and reopened afterwards."""
    if store.location == source.store.location:
        raise UsageError("the destination is the source repository")
    path = source.cache.path
    source.cache.close()
    try:
        dest = Repository.open(store, password, cache_root=path.parent, disk_cache_bytes=0)
    except WrongPassword:
        source.cache = Cache(path)
        raise WrongPassword(f"wrong password for the destination {store.location}") from None
    except BaseException:
        source.cache = Cache(path)
        raise
    if dest.config.id == source.config.id:
        dest.close()
        source.cache = Cache(path)
        raise UsageError(
            f"the destination {store.location} is the source repository "
            "(same repository id: a copy of it?)"
        )
    source.cache = Cache(path)
    return dest


def select(source: Repository, refs: Iterable[str]) -> list[Snapshot]:
    """The snapshots named by ``refs`` (``latest`` or id prefixes), or all; oldest first."""
    refs = list(refs)
    if not refs:
        return source.list_snapshots()
    found = {s.id: s for s in (source.find_snapshot(r) for r in refs)}
    return sorted(found.values(), key=lambda s: (s.time_ns, s.id))


def origin(snap: Snapshot) -> bytes:
    """The snapshot a copy stands for: the first of a chain of copies."""
    return snap.original or snap.id


@dataclass(slots=True)
class _Frame:
    """A source tree being translated: its nodes, and the next one to visit."""

    src: bytes
    nodes: list[Node]
    next: int = 0


class Copier:
    def __init__(self, source: Repository, dest: Repository, workers: int = WORKERS) -> None:
        self.source, self.dest, self.workers = source, dest, workers
        self.stats = CopyStats()
        self._stats_lock = threading.Lock()
        self._map: Cache | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._saver: BlobSaver | None = None
        self._slots = threading.BoundedSemaphore(MAX_BATCHES)
        self._pending: dict[bytes, Future[dict[bytes, bytes]]] = {}
        self._batch: list[tuple[bytes, BlobLocation]] = []
        self._batch_ids: set[bytes] = set()
        self._batch_bytes = 0
        self._error: BaseException | None = None

    # -- snapshots -------------------------------------------------------------------------

    def run(
        self, snaps: list[Snapshot], on_snapshot: Callable[[Copied], None] | None = None
    ) -> list[Copied]:
        """Copy ``snaps`` oldest first; each manifest is written once its blobs are
        stored and indexed, so an interrupted run keeps the snapshots it finished."""
        existing = self.dest.list_snapshots()
        by_origin: dict[bytes, Snapshot] = {}
        for s in existing:
            by_origin.setdefault(s.id, s)
            by_origin.setdefault(origin(s), s)
        out = []
        with self._id_map():
            for snap in sorted(snaps, key=lambda s: (s.time_ns, s.id)):
                there = by_origin.get(origin(snap)) or by_origin.get(snap.id)
                if there is not None:
                    done = Copied(snap, there, skipped=True)
                else:
                    before = replace(self.stats)
                    copy = self._copy_snapshot(snap, existing)
                    existing.append(copy)
                    by_origin[copy.id] = by_origin[origin(copy)] = copy
                    done = Copied(snap, copy, skipped=False, stats=self.stats.minus(before))
                out.append(done)
                if on_snapshot is not None:
                    on_snapshot(done)
        return out

    def _copy_snapshot(self, snap: Snapshot, existing: list[Snapshot]) -> Snapshot:
        self._saver = saver = BlobSaver(self.dest)
        self._pool = pool = ThreadPoolExecutor(self.workers, thread_name_prefix="copy")
        self._error = None
        try:
            tree = self._copy_tree(snap.tree)
            pool.shutdown(wait=True)
            saver.finish()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            saver.abort()
            raise
        finally:
            self._pending.clear()
            self._batch, self._batch_ids, self._batch_bytes = [], set(), 0
        earlier = [
            s
            for s in existing
            if s.host == snap.host and s.paths == snap.paths and s.time_ns < snap.time_ns
        ]
        parent = max(earlier, key=lambda s: (s.time_ns, s.id)).id if earlier else None
        copy = Snapshot(
            time_ns=snap.time_ns,
            host=snap.host,
            username=snap.username,
            paths=list(snap.paths),
            tree=tree,
            tags=list(snap.tags),
            parent=parent,
            excludes=list(snap.excludes),
            summary=dict(snap.summary),
            original=origin(snap),
        )
        self.dest.save_snapshot(copy)
        return copy

    # -- the id map ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _id_map(self) -> Iterator[None]:
        """A scratch LMDB table under the destination's cache directory, one per process;
        leftovers of killed runs (their process is gone) are removed first."""
        base = self.dest.cache.path
        for old in base.glob("copy-*"):
            pid = old.name.removeprefix("copy-")
            if pid.isdigit() and (int(pid) == os.getpid() or not pid_alive(int(pid))):
                shutil.rmtree(old, ignore_errors=True)
        path = base / f"copy-{os.getpid()}"
        self._map = Cache(path, tables=(COPYMAP,), durable=False)
        try:
            yield
        finally:
            self._map.close()
            self._map = None
            shutil.rmtree(path, ignore_errors=True)

    def _mapped(self, src_id: bytes) -> bytes | None:
        assert self._map is not None
        return self._map.get(COPYMAP, src_id)

    # -- trees -----------------------------------------------------------------------------

    def _copy_tree(self, root: bytes) -> bytes:
        """Translate a tree and everything below it, children before parents."""
        if (done := self._mapped(root)) is not None:
            return done
        stack = [_Frame(root, self.source.read_tree(root))]
        while True:
            frame = stack[-1]
            if frame.next < len(frame.nodes):
                node = frame.nodes[frame.next]
                frame.next += 1
                if node.type == FILE:
                    for blob_id, _ in node.content:
                        self._want(blob_id)
                elif (
                    node.type == DIR
                    and node.subtree is not None
                    and self._mapped(node.subtree) is None
                ):
                    stack.append(_Frame(node.subtree, self.source.read_tree(node.subtree)))
                continue
            stack.pop()
            tree_id = self._finish(frame)
            if not stack:
                return tree_id

    def _finish(self, frame: _Frame) -> bytes:
        self._submit_batch()
        ids = [b for n in frame.nodes if n.type == FILE for b, _ in n.content]
        ids += [n.subtree for n in frame.nodes if n.type == DIR and n.subtree is not None]
        table = self._resolve(ids)
        nodes = [_translated(n, table) for n in frame.nodes]
        assert self._saver is not None
        assert self._map is not None
        saved = self._saver.save_tree(encode_tree(nodes))
        with self._stats_lock:
            if saved.stored:
                self.stats.trees_added += 1
                self.stats.bytes_added += saved.stored
            else:
                self.stats.blobs_existing += 1
        self._map.put_many(COPYMAP, [(frame.src, saved.id)])
        return saved.id

    def _resolve(self, ids: list[bytes]) -> dict[bytes, bytes]:
        """Destination ids of ``ids``: waits for the batches still copying them."""
        assert self._map is not None
        out: dict[bytes, bytes] = {}
        fresh = []
        for blob_id in ids:
            fut = self._pending.pop(blob_id, None)
            if fut is not None:
                out[blob_id] = fut.result()[blob_id]
                fresh.append((blob_id, out[blob_id]))
        rest = list(dict.fromkeys(b for b in ids if b not in out))
        for blob_id, dest_id in zip(rest, self._map.get_many(COPYMAP, rest), strict=True):
            if dest_id is None:
                raise SnapfsError(f"internal error: blob {blob_id.hex()[:16]} was not copied")
            out[blob_id] = dest_id
        self._map.put_many(COPYMAP, fresh)
        return out

    # -- data blobs ------------------------------------------------------------------------

    def _want(self, blob_id: bytes) -> None:
        if blob_id in self._pending or blob_id in self._batch_ids:
            return
        if self._mapped(blob_id) is not None:
            return
        loc = self.source.lookup(blob_id)
        if loc is None:
            raise IntegrityError(f"blob {blob_id.hex()[:16]} is not in the source's index")
        self._batch.append((blob_id, loc))
        self._batch_ids.add(blob_id)
        self._batch_bytes += loc.length
        if len(self._batch) >= BATCH_BLOBS or self._batch_bytes >= BATCH_BYTES:
            self._submit_batch()

    def _submit_batch(self) -> None:
        if self._error is not None:
            raise self._error
        if not self._batch:
            return
        batch, self._batch, self._batch_ids, self._batch_bytes = self._batch, [], set(), 0
        assert self._pool is not None
        self._slots.acquire()
        try:
            fut = self._pool.submit(self._copy_batch, batch)
        except BaseException:
            self._slots.release()
            raise
        fut.add_done_callback(self._batch_done)
        for blob_id, _ in batch:
            self._pending[blob_id] = fut

    def _batch_done(self, fut: Future[dict[bytes, bytes]]) -> None:
        self._slots.release()
        if not fut.cancelled() and fut.exception() is not None and self._error is None:
            self._error = fut.exception()

    def _copy_batch(self, batch: list[tuple[bytes, BlobLocation]]) -> dict[bytes, bytes]:
        """In a worker: read, authenticate and re-key a batch of source blobs."""
        assert self._saver is not None
        fetcher = self.source.fetcher
        out = {}
        for blob_id, loc, sealed in fetcher.sealed_many(batch):
            try:
                data = fetcher.open(blob_id, loc, sealed)
            except IntegrityError as e:
                raise IntegrityError(f"source pack {loc.pack.hex()[:16]}: {e}") from None
            saved = self._saver.store_now(data)
            out[blob_id] = saved.id
            with self._stats_lock:
                self.stats.blobs_read += 1
                if saved.stored:
                    self.stats.data_added += 1
                    self.stats.bytes_added += saved.stored
                else:
                    self.stats.blobs_existing += 1
        return out


def _translated(node: Node, table: dict[bytes, bytes]) -> Node:
    """The node with destination ids (the source's decoded trees are shared: copy)."""
    if node.type == FILE:
        return replace(node, content=[(table[b], size) for b, size in node.content])
    if node.type == DIR and node.subtree is not None:
        return replace(node, subtree=table[node.subtree])
    return node
