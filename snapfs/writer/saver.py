"""The storing half of the writer pipeline: id → dedup → compress → seal → pack → upload
→ index. Sync; its methods are called from the walker and finalizer threads and it runs
its own worker and upload threads. In-flight chunks and packs are bounded: at most
``max_inflight`` chunks (of at most the maximum chunk size), one reused seal buffer per
sealing thread, and sealed blobs in packs not yet uploaded (being filled, queued or being
written) up to ``pack_buffers`` packs plus one chunk, whatever the number of uploads or
of threads storing blobs: a thread that would pass the budget waits for an upload to end.
Nothing depends on how much is backed up.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial

from snapfs.heap import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, mallopt
from snapfs.repo.blob import seal_blob, seal_blob_into
from snapfs.repo.format import BLOB_DATA, BLOB_TREE, BlobLocation, pack_name
from snapfs.repo.pack import FinishedPack, PackBuilder
from snapfs.repo.repository import Repository

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Saved:
    id: bytes
    size: int
    stored: int  # bytes this blob added to the repository (0 when deduplicated)


@dataclass(frozen=True, slots=True)
class SaverLimits:
    workers: int = 2
    max_inflight: int = 4
    readers: int = 2
    max_small_files: int = 16
    uploads: int = 0  # 0: as many as the store says it handles well
    pack_buffers: int = 2  # packs held at once (filling + queued + uploading), at most
    index_every_packs: int = 32
    index_every_seconds: float = 60.0


def _pack_budget(repo: Repository, limits: SaverLimits) -> int:
    """Bytes of sealed blobs that may sit in packs not yet uploaded: ``pack_buffers``
    packs (at least two, so one fills while one uploads; more only pays with more
    uploads), plus one largest blob so a blob never waits on a pack it would complete.
    Measured: a third pack did not make the local benchmark faster, and on S3 the old
    eight uploads of 16 MiB (plus blocked fillers) were most of a 310 MiB peak."""
    cfg = repo.config
    packs = max(min(limits.pack_buffers, limits.uploads + 1), 2)
    return packs * cfg.pack_size + cfg.chunker_max + 4096


def _map_packs_apart(chunk_max: int, pack_size: int) -> None:
    """glibc raises its mmap threshold (up to 32 MiB) each time it frees a mapped block,
    so after the first pack every pack grew on the heap and left a pack-sized hole when
    freed: at the writer's peak about 50 MiB of the heap was free but resident (mallinfo2).
    Fixing the threshold at the largest chunk keeps packs in mappings of their own,
    returned when freed, while chunks still reuse heap memory. Fixing it also pins the
    trim threshold at 128 KiB, which made the heap shrink and grow again all the time
    (minor faults 200,000 instead of 140,000), so that one is set to a pack.
    Measured on the benchmark dataset: peak RSS 150-173 MiB before, 118-131 MiB after.
    Process-wide and harmless to other code; a no-op without glibc."""
    mallopt(M_MMAP_THRESHOLD, chunk_max)
    mallopt(M_TRIM_THRESHOLD, pack_size)


_local = threading.local()


def _seal_buffer() -> bytearray:
    """One per thread that seals data, reused for every chunk (at most one chunk big)."""
    buf: bytearray | None = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = bytearray()
    return buf


class BlobSaver:
    def __init__(self, repo: Repository, limits: SaverLimits = SaverLimits()) -> None:
        self.repo = repo
        if limits.uploads <= 0:
            limits = replace(limits, uploads=getattr(repo.store, "parallelism", 2))
        self.limits = limits
        _map_packs_apart(repo.config.chunker_max, repo.config.pack_size)
        self._pool = ThreadPoolExecutor(limits.workers, thread_name_prefix="seal")
        self._uploader = ThreadPoolExecutor(self.limits.uploads, thread_name_prefix="upload")
        self._chunk_slots = threading.BoundedSemaphore(limits.max_inflight)
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._pending = 0  # sealed bytes in packs not yet uploaded (open or finished)
        self._finished = 0  # of which in finished packs, which uploads will release
        self._budget = _pack_budget(repo, limits)
        self._index_lock = threading.Lock()
        self._known: set[bytes] = set()
        self._packers = {t: PackBuilder(t) for t in (BLOB_DATA, BLOB_TREE)}
        self._uploads: set[Future[None]] = set()
        self._unindexed: dict[bytes, list[tuple[bytes, BlobLocation]]] = {}
        self._last_index = time.monotonic()
        self._error: BaseException | None = None
        self.packs_written = 0

    def save_data(self, data: bytes) -> Future[Saved]:
        """Queue a chunk; blocks while ``max_inflight`` chunks are being processed."""
        self._raise_failure()
        self._chunk_slots.acquire()
        try:
            fut = self._pool.submit(self._store, data, BLOB_DATA)
        except BaseException:
            self._chunk_slots.release()
            raise
        fut.add_done_callback(lambda _: self._chunk_slots.release())
        return fut

    def save_tree(self, data: bytes) -> Saved:
        self._raise_failure()
        return self._store(data, BLOB_TREE)

    def store_now(self, data: bytes) -> Saved:
        """Store a data chunk in the calling thread (for callers that are workers too)."""
        self._raise_failure()
        return self._store(data, BLOB_DATA)

    def _store(self, data: bytes, blob_type: int) -> Saved:
        key = self.repo.key
        blob_id = key.blob_id(data)
        with self._lock:
            if blob_id in self._known or self.repo.lookup(blob_id) is not None:
                return Saved(blob_id, len(data), 0)
            self._known.add(blob_id)
        if blob_type == BLOB_DATA:
            out = _seal_buffer()
            size = seal_blob_into(key, blob_id, data, self.repo.config.compression, out)
            with memoryview(out) as view, view[:size] as sealed:
                self._add(blob_type, blob_id, sealed, len(data))
        else:  # trees: a directory can outgrow any buffer worth keeping per thread
            blob = seal_blob(key, blob_id, data, self.repo.config.compression)
            size = self._add(blob_type, blob_id, blob, len(data))
        return Saved(blob_id, len(data), size)

    def _add(self, blob_type: int, blob_id: bytes, sealed: bytes | memoryview, raw: int) -> int:
        """Append a sealed blob to the open pack of its type; upload the pack once full."""
        finished = None
        with self._room:
            self._wait_for_room(len(sealed))
            self._pending += len(sealed)
            packer = self._packers[blob_type]
            packer.add(blob_id, sealed, raw)
            if packer.size >= self.repo.config.pack_size:
                finished = self._finish_pack(packer)
        if finished is not None:
            self._upload(*finished)
        return len(sealed)

    def _wait_for_room(self, size: int) -> None:
        """Called with the lock held: a blob waits while the packs not yet uploaded would
        exceed the budget. It waits only on finished packs, whose uploads never wait
        here, so it cannot deadlock; an oversized tree blob merely overshoots."""
        while self._finished and self._pending + size > self._budget:
            if self._error is not None:
                raise self._error
            self._room.wait(0.5)

    def _finish_pack(self, packer: PackBuilder) -> tuple[FinishedPack, int]:
        """Called with the lock held; the size is what its upload gives back."""
        size = packer.size
        self._finished += size
        return packer.finish(self.repo.key), size

    def _upload(self, pack: FinishedPack, size: int) -> None:
        """Never blocks: the pack budget, not the upload queue, bounds what is held."""
        fut = self._uploader.submit(self._put_pack, pack)
        with self._lock:
            self._uploads.add(fut)
        fut.add_done_callback(partial(self._upload_done, size))

    def _put_pack(self, pack: FinishedPack) -> None:
        self.repo.store.put(pack_name(pack.id), pack.data)
        with self._lock:
            self._unindexed[pack.id] = pack.blobs
            self.packs_written += 1
            due = len(self._unindexed) >= self.limits.index_every_packs or (
                time.monotonic() - self._last_index >= self.limits.index_every_seconds
            )
        if due:
            self.flush_index()

    def _upload_done(self, size: int, fut: Future[None]) -> None:
        with self._room:
            self._pending -= size
            self._finished -= size
            self._room.notify_all()
            self._uploads.discard(fut)
            if fut.cancelled():
                return
            if fut.exception() is not None and self._error is None:
                self._error = fut.exception()

    def flush_index(self) -> None:
        """Write one index file for every uploaded pack not yet indexed.

        Ids leave the in-memory dedup set only after the index holds them, so the set
        is bounded by the flush interval rather than by the size of the run."""
        with self._index_lock:
            with self._lock:
                packs, self._unindexed = self._unindexed, {}
                self._last_index = time.monotonic()
            if not packs:
                return
            try:
                self.repo.write_index_file(packs)
            except BaseException:
                with self._lock:
                    self._unindexed.update(packs)
                raise
            with self._lock:
                for blobs in packs.values():
                    self._known.difference_update(bid for bid, _ in blobs)

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error

    def finish(self) -> None:
        """Flush partial packs, wait for every upload, and index everything stored."""
        self._pool.shutdown(wait=True)
        with self._lock:
            finished = [self._finish_pack(p) for p in self._packers.values() if p.entries]
        for pack, size in finished:
            self._upload(pack, size)
        self._uploader.shutdown(wait=True)
        self._raise_failure()
        self.flush_index()

    def abort(self) -> None:
        """Stop without writing more; what was uploaded stays for the next run to reuse."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._uploader.shutdown(wait=True, cancel_futures=True)
        try:
            self.flush_index()
        except Exception as e:
            log.debug("index flush during abort failed: %s", e)
