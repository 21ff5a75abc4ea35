"""Handing read-ahead file contents to the kernel's page cache (FUSE NOTIFY_STORE).

A small file read through FUSE costs an OPEN, a READ and a RELEASE round trip, each
tens of microseconds of Python, scheduling and wake-ups. Contents stored in the page
cache ahead of the reader take the READ away: the kernel answers it from memory (files
are opened with keep_cache, and nothing here ever changes). The kernel only takes
pages for inodes it knows, that is after their directory was listed or the name looked
up; files of a directory not listed yet wait for its listing, and anything the kernel
does not take is left to the chunk cache and an ordinary READ.

Stores are written to /dev/fuse in a thread of their own: the kernel may hold one
waiting on a page lock that a READ being answered on the loop holds.
"""

from __future__ import annotations

import errno
import logging
from collections import OrderedDict
from collections.abc import Callable

import trio

from snapfs.mount.chunkcache import ChunkCache
from snapfs.mount.offload import offload
from snapfs.vfs.filesystem import Following

log = logging.getLogger(__name__)

SEEN_INODES = 65536
PENDING_FILES = 1024
LISTED_DIRS = 1024
BATCH_BYTES = 4 << 20  # contents handed to the thread per hop

PageStore = Callable[[int, int, bytes], None]  # pyfuse3.notify_store(inode, offset, data)


class PageCache:
    def __init__(self, chunks: ChunkCache, limiter: trio.CapacityLimiter, store: PageStore) -> None:
        self.chunks = chunks
        self.limiter = limiter
        self.store = store
        self.enabled = True
        self._seen: OrderedDict[int, None] = OrderedDict()  # opened or stored: skip them
        self._pending: OrderedDict[int, Following] = OrderedDict()
        self._unlisted: set[int] = set()  # directories whose files the kernel refused
        self._listed: OrderedDict[int, None] = OrderedDict()

    def seen(self, ino: int) -> None:
        """The kernel has the file's pages, or reads them itself: it was stored, or
        opened (then a store already under way still goes ahead: it may land before
        the first READ)."""
        self._seen[ino] = None
        self._seen.move_to_end(ino)
        if len(self._seen) > SEEN_INODES:
            self._seen.popitem(last=False)

    def offer(self, files: list[Following]) -> list[Following]:
        """Files a reader is likely to open next: stored once their chunks are here.
        Returns those worth fetching: the kernel has the others, or reads them itself."""
        if not self.enabled:
            return files
        wanted = [f for f in files if f.ino not in self._seen]
        for f in wanted:
            self._pending[f.ino] = f
        while len(self._pending) > PENDING_FILES:  # the oldest are likely read by now
            self._pending.popitem(last=False)
        return wanted

    def listed(self, dir_ino: int) -> bool:
        """The kernel has just listed a directory, so it knows its files now. Returns
        whether files of it are waiting (then ``store_ready`` should run)."""
        self._listed[dir_ino] = None
        self._listed.move_to_end(dir_ino)
        if len(self._listed) > LISTED_DIRS:
            self._listed.popitem(last=False)
        if dir_ino not in self._unlisted:
            return False
        self._unlisted.discard(dir_ino)
        return True

    async def store_ready(self) -> None:
        """Store, in order, the pending files whose chunks are all in the chunk cache.
        Safe to run concurrently: a file leaves the pending set before the first await."""
        while self.enabled and self._pending:
            batch = self._ready_batch()
            if not batch:
                return
            stored, refused = await offload(self.limiter, self._store_many, batch)
            for f in stored:
                self.seen(f.ino)
            for f in refused:  # wait for the listing; if it was listed, leave it to READ
                if f.parent not in self._listed:
                    self._pending[f.ino] = f
                    self._unlisted.add(f.parent)
            if len(self._unlisted) > LISTED_DIRS:  # only those some pending file is in
                self._unlisted &= {f.parent for f in self._pending.values()}
            self._drop_chunks(stored)

    def _ready_batch(self) -> list[tuple[Following, bytes]]:
        batch: list[tuple[Following, bytes]] = []
        size = 0
        for f in list(self._pending.values()):
            if f.parent in self._unlisted:
                continue
            data = self._assemble(f)
            if data is None:
                continue
            del self._pending[f.ino]
            batch.append((f, data))
            size += len(data)
            if size >= BATCH_BYTES:
                break
        return batch

    def _drop_chunks(self, stored: list[Following]) -> None:
        """The kernel has these files: their chunks make room for what is ahead."""
        needed = {blob_id for f in self._pending.values() for blob_id, _ in f.chunks}
        for f in stored:
            for blob_id, _ in f.chunks:
                if blob_id not in needed:
                    self.chunks.drop(blob_id)

    def _assemble(self, f: Following) -> bytes | None:
        parts = []
        for blob_id, _ in f.chunks:
            data = self.chunks.peek(blob_id)
            if data is None:
                return None
            parts.append(data)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        if len(data) != f.size:  # never let a store change the size the kernel shows
            log.debug("inode %d: chunks hold %d bytes, not %d", f.ino, len(data), f.size)
            return None
        return data

    def _store_many(
        self, batch: list[tuple[Following, bytes]]
    ) -> tuple[list[Following], list[Following]]:
        """Worker thread. Returns the files the kernel took, and those it does not
        know yet (their directory was not listed)."""
        stored: list[Following] = []
        refused: list[Following] = []
        for f, data in batch:
            try:
                self.store(f.ino, 0, data)
            except OSError as e:
                if e.errno == errno.ENOENT:
                    refused.append(f)
                    continue
                if e.errno == errno.ENOSYS:
                    log.info("the kernel does not take page cache stores: switched off")
                    self.enabled = False
                else:  # unmounting, or the kernel refused: leave it to READs
                    log.debug("page cache store for inode %d failed: %s", f.ino, e)
                break
            stored.append(f)
        return stored, refused
