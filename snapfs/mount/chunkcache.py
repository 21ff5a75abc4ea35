"""Decoded chunks for the mount: an LRU bounded in bytes with single-flight fetches.

Two readers of one chunk cause one fetch; a failed fetch is not cached, so a store that
comes back serves the next read. Fetch (I/O limiter) and decrypt (CPU limiter) are
separate hops. Runs on the trio loop.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import trio

from snapfs.errors import IntegrityError
from snapfs.mount.offload import Limiters, offload
from snapfs.repo.blob import open_blob
from snapfs.repo.format import BlobLocation, pack_name
from snapfs.repo.repository import Repository

log = logging.getLogger(__name__)


class _Flight:
    __slots__ = ("data", "done", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.data: bytes | None = None
        self.error: BaseException | None = None


class ChunkCache:
    def __init__(self, repo: Repository, limiters: Limiters, max_bytes: int) -> None:
        self.repo = repo
        self.limiters = limiters
        self.max_bytes = max_bytes
        self.size = 0
        self._lru: OrderedDict[bytes, bytes] = OrderedDict()
        self._flights: dict[bytes, _Flight] = {}

    def cached(self, blob_id: bytes) -> bool:
        return blob_id in self._lru or blob_id in self._flights

    async def get(self, blob_id: bytes) -> bytes:
        data = self._lru.get(blob_id)
        if data is not None:
            self._lru.move_to_end(blob_id)
            return data
        flight = self._flights.get(blob_id)
        if flight is None:
            return await self._fetch(blob_id)
        await flight.done.wait()
        if flight.error is not None:
            raise flight.error
        assert flight.data is not None
        return flight.data

    async def _fetch(self, blob_id: bytes) -> bytes:
        flight = self._flights[blob_id] = _Flight()
        try:
            sealed, loc = await offload(self.limiters.io, self._read_sealed, blob_id)
            data = await offload(
                self.limiters.cpu, open_blob, self.repo.key, blob_id, sealed, loc.raw_length
            )
        except BaseException as e:
            flight.error = e
            raise
        else:
            flight.data = data
            self._insert(blob_id, data)
            return data
        finally:
            del self._flights[blob_id]
            flight.done.set()

    def _read_sealed(self, blob_id: bytes) -> tuple[bytes, BlobLocation]:
        """Worker thread: index lookup and the ranged read of exactly this blob."""
        loc = self.repo.lookup(blob_id)
        if loc is None:
            raise IntegrityError(f"blob {blob_id.hex()[:16]} is not in the repository index")
        return self.repo.store.get(pack_name(loc.pack), loc.offset, loc.length), loc

    def _insert(self, blob_id: bytes, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        self._lru[blob_id] = data
        self.size += len(data)
        while self.size > self.max_bytes:
            _, old = self._lru.popitem(last=False)
            self.size -= len(old)
