"""The storing half of the writer pipeline: id → dedup → compress → seal → pack → upload
→ index. Sync; its methods are called from the walker and finalizer threads and it runs
its own worker and upload threads. In-flight chunks and packs are bounded: at most
``max_inflight`` chunks (of at most the maximum chunk size) and, per blob type, one pack
being filled, ``uploads`` packs being written and one finished pack waiting for an upload
slot in each thread that stores blobs (seal workers, readers, tree builder). Nothing
depends on how much is backed up.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

from snapfs.repo.blob import seal_blob
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
    max_inflight: int = 8
    readers: int = 2
    max_small_files: int = 16
    uploads: int = 0  # 0: as many as the store says it handles well
    index_every_packs: int = 32
    index_every_seconds: float = 60.0


class BlobSaver:
    def __init__(self, repo: Repository, limits: SaverLimits = SaverLimits()) -> None:
        self.repo = repo
        if limits.uploads <= 0:
            limits = replace(limits, uploads=getattr(repo.store, "parallelism", 2))
        self.limits = limits
        self._pool = ThreadPoolExecutor(limits.workers, thread_name_prefix="seal")
        self._uploader = ThreadPoolExecutor(self.limits.uploads, thread_name_prefix="upload")
        self._chunk_slots = threading.BoundedSemaphore(limits.max_inflight)
        self._upload_slots = threading.BoundedSemaphore(self.limits.uploads)
        self._lock = threading.Lock()
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
        sealed = seal_blob(key, blob_id, data, self.repo.config.compression)
        finished = None
        with self._lock:
            packer = self._packers[blob_type]
            packer.add(blob_id, sealed, len(data))
            if packer.size >= self.repo.config.pack_size:
                finished = packer.finish(key)
        if finished is not None:
            self._upload(finished)
        return Saved(blob_id, len(data), len(sealed))

    def _upload(self, pack: FinishedPack) -> None:
        self._upload_slots.acquire()
        try:
            fut = self._uploader.submit(self._put_pack, pack)
        except BaseException:
            self._upload_slots.release()
            raise
        with self._lock:
            self._uploads.add(fut)
        fut.add_done_callback(self._upload_done)

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

    def _upload_done(self, fut: Future[None]) -> None:
        self._upload_slots.release()
        with self._lock:
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
            finished = [p.finish(self.repo.key) for p in self._packers.values() if p.entries]
        for pack in finished:
            self._upload(pack)
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
