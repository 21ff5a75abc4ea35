"""Decoded chunks for the mount: an LRU bounded in bytes with single-flight fetches.

Two readers of one chunk cause one fetch; a failed fetch is not cached, so a store that
comes back serves the next read. A large chunk is fetched (I/O limiter) and decrypted
(CPU limiter) in separate hops so a slow store never holds CPU tokens; a small one is
done in one hop, since for small files the hop, not the work, is the cost. Prefetches
of many chunks coalesce neighbours in a pack into one ranged read.

Runs on the trio loop; the ``_``-prefixed sync helpers run in worker threads.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable

import trio

from snapfs.errors import IntegrityError
from snapfs.mount.offload import Limiters, offload
from snapfs.repo.fetch import Fetched, Located
from snapfs.repo.format import BlobLocation
from snapfs.repo.repository import Repository

log = logging.getLogger(__name__)

SMALL_BLOB = 256 * 1024
PREFETCH_SLICE = 1 << 20  # bytes of chunks per ranged read of a prefetch


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

    def peek(self, blob_id: bytes) -> bytes | None:
        data = self._lru.get(blob_id)
        if data is not None:
            self._lru.move_to_end(blob_id)
        return data

    async def get(self, blob_id: bytes) -> bytes:
        data = self.peek(blob_id)
        if data is not None:
            return data
        flight = self._flights.get(blob_id)
        if flight is None:
            return await self._fetch(blob_id)
        await flight.done.wait()
        if flight.data is None:  # the fetch we waited for failed: try once ourselves
            return (
                await self.get(blob_id) if blob_id in self._flights else await self._fetch(blob_id)
            )
        return flight.data

    async def _fetch(self, blob_id: bytes) -> bytes:
        flight = self._flights[blob_id] = _Flight()
        try:
            loc, payload, plain = await offload(self.limiters.io, self._read_one, blob_id)
            if not plain:
                payload = await offload(
                    self.limiters.cpu, self.repo.fetcher.open, blob_id, loc, payload
                )
        except BaseException as e:
            flight.error = e
            raise
        else:
            flight.data = payload
            self._insert(blob_id, payload)
            return payload
        finally:
            del self._flights[blob_id]
            flight.done.set()

    def _read_one(self, blob_id: bytes) -> tuple[BlobLocation, bytes, bool]:
        """Worker thread: index lookup, ranged read of exactly this blob (or the disk
        cache), and for a small blob the decryption too. Returns (location, bytes,
        decrypted?)."""
        loc = self._locate(blob_id)
        fetcher = self.repo.fetcher
        if loc.raw_length <= SMALL_BLOB:
            return loc, fetcher.read(blob_id, loc), True
        return loc, fetcher.sealed(blob_id, loc), False

    def _locate(self, blob_id: bytes) -> BlobLocation:
        loc = self.repo.lookup(blob_id)
        if loc is None:
            raise IntegrityError(f"blob {blob_id.hex()[:16]} is not in the repository index")
        return loc

    async def prefetch(
        self,
        blob_ids: Iterable[bytes],
        budget: int,
        arrived: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Fetch chunks not yet cached, up to ``budget`` bytes, in slices that run at
        once and each read neighbours in a pack together: the first chunks arrive after
        one short read, not after the whole batch (``arrived`` is awaited after each
        slice, to use them at once). Prefetches hold tokens of their own, so a read
        someone is waiting for never queues behind them. Errors are left for the reads
        that need the chunks."""
        todo = [b for b in dict.fromkeys(blob_ids) if not self.cached(b)]
        if not todo:
            return
        located = await offload(self.limiters.index, self._locate_many, todo, budget)
        located = [(b, loc) for b, loc in located if not self.cached(b)]
        flights = {b: _Flight() for b, _ in located}
        self._flights.update(flights)
        try:
            async with trio.open_nursery() as nursery:
                for part in _slices(located, PREFETCH_SLICE):
                    nursery.start_soon(self._prefetch_slice, part, flights, arrived)
        finally:
            for blob_id, flight in flights.items():  # only if cancelled before a slice ran
                if self._flights.get(blob_id) is flight:
                    del self._flights[blob_id]
                    flight.done.set()

    async def _prefetch_slice(
        self,
        part: list[Located],
        flights: dict[bytes, _Flight],
        arrived: Callable[[], Awaitable[None]] | None,
    ) -> None:
        try:
            fetched = await offload(self.limiters.prefetch, self.repo.fetcher.sealed_many, part)
            for blob_id, data in await offload(self.limiters.cpu, self._open_many, fetched):
                flights[blob_id].data = data
                self._insert(blob_id, data)
        except Exception as e:
            log.debug("prefetch of %d chunks failed: %s", len(part), e)
        finally:
            for blob_id, _ in part:
                flight = flights[blob_id]
                if flight.data is None and flight.error is None:
                    flight.error = IntegrityError(f"blob {blob_id.hex()[:16]} could not be read")
                if self._flights.get(blob_id) is flight:
                    del self._flights[blob_id]
                flight.done.set()
        if arrived is not None:
            await arrived()

    def _locate_many(self, blob_ids: list[bytes], budget: int) -> list[Located]:
        located: list[Located] = []
        total = 0
        for blob_id in blob_ids:
            loc = self.repo.lookup(blob_id)
            if loc is None:
                continue
            total += loc.raw_length
            if total > budget and located:
                break
            located.append((blob_id, loc))
        return located

    def _open_many(self, fetched: list[Fetched]) -> list[tuple[bytes, bytes]]:
        out = []
        for blob_id, loc, sealed in fetched:
            try:
                out.append((blob_id, self.repo.fetcher.open(blob_id, loc, sealed)))
            except IntegrityError as e:
                log.debug("prefetched chunk %s is bad: %s", blob_id.hex()[:16], e)
        return out

    def drop(self, blob_id: bytes) -> None:
        data = self._lru.pop(blob_id, None)
        if data is not None:
            self.size -= len(data)

    def _insert(self, blob_id: bytes, data: bytes) -> None:
        if len(data) > self.max_bytes or blob_id in self._lru:
            return
        self._lru[blob_id] = data
        self.size += len(data)
        while self.size > self.max_bytes:
            _, old = self._lru.popitem(last=False)
            self.size -= len(old)


def _slices(located: list[Located], size: int) -> list[list[Located]]:
    """Consecutive runs of about ``size`` stored bytes, in the order given (the order
    they will be read in)."""
    out: list[list[Located]] = []
    part: list[Located] = []
    total = 0
    for item in located:
        part.append(item)
        total += item[1].length
        if total >= size:
            out.append(part)
            part, total = [], 0
    if part:
        out.append(part)
    return out
