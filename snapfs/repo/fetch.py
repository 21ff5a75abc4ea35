"""Fetching sealed blobs: from the local disk cache when there, else by ranged reads of
packs — one read per blob, or for many blobs one read per run of close neighbours in a
pack, streamed when the store can — and opening them with a second chance when a cached
copy turns out corrupt.

Sync and thread-safe; called from worker threads (restore, the mount's offload hops).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Protocol

from snapfs.cache.diskcache import DiskCache
from snapfs.crypto import MasterKey
from snapfs.errors import IntegrityError
from snapfs.repo.blob import open_blob
from snapfs.repo.format import BlobLocation, pack_name
from snapfs.store import Store

log = logging.getLogger(__name__)

MAX_GAP = 256 * 1024  # bytes of other blobs worth reading through to save a request
MAX_RUN = 16 * 1024 * 1024

Located = tuple[bytes, BlobLocation]
Fetched = tuple[bytes, BlobLocation, bytes]  # id, location, sealed bytes


class RangeBody(Protocol):
    """What a store's optional ``open_range`` returns (``S3Store.RangeReader``): exactly
    ``n`` more bytes of the range per call."""

    def read(self, n: int) -> bytes: ...


OpenRange = Callable[[str, int, int], AbstractContextManager[RangeBody]]


class BlobFetcher:
    def __init__(self, store: Store, key: MasterKey, disk: DiskCache | None) -> None:
        self.store, self.key, self.disk = store, key, disk

    def sealed(self, blob_id: bytes, loc: BlobLocation) -> bytes:
        if self.disk is not None:
            data = self.disk.get(blob_id)
            if data is not None and len(data) == loc.length:
                return data
        data = self.store.get(pack_name(loc.pack), loc.offset, loc.length)
        if self.disk is not None:
            self.disk.put(blob_id, data)
        return data

    def open(self, blob_id: bytes, loc: BlobLocation, sealed: bytes) -> bytes:
        """Plaintext of a fetched blob. A copy from the disk cache that fails is dropped
        and fetched again from the store, whose answer is then final."""
        try:
            return open_blob(self.key, blob_id, sealed, loc.raw_length)
        except IntegrityError:
            if self.disk is None or self.disk.get(blob_id) is None:
                raise
            log.warning("cached copy of blob %s was corrupt; fetching it again", blob_id.hex()[:16])
            self.disk.discard(blob_id)
            return open_blob(self.key, blob_id, self.sealed(blob_id, loc), loc.raw_length)

    def read(self, blob_id: bytes, loc: BlobLocation) -> bytes:
        return self.open(blob_id, loc, self.sealed(blob_id, loc))

    def sealed_many(self, located: list[Located]) -> list[Fetched]:
        """Sealed bytes of many blobs, neighbours in a pack read in one request; each
        one fetched is kept in the disk cache."""
        return list(self.iter_sealed(located, keep=True))

    def iter_sealed(self, located: list[Located], keep: bool = False) -> Iterator[Fetched]:
        """Like ``sealed_many``, one blob at a time as it arrives: a store that can stream
        a range (S3) is read a piece at a time, so memory holds one blob, not a run,
        and the caller opens one blob while the next is on the wire. Cached copies are
        used either way; ``keep=False`` (restore) adds none: data written out once is
        not worth a second copy on disk, and it would push out the trees that are."""
        missing: list[Located] = []
        for blob_id, loc in located:
            cached = self.disk.get(blob_id) if self.disk is not None else None
            if cached is not None and len(cached) == loc.length:
                yield blob_id, loc, cached
            else:
                missing.append((blob_id, loc))
        stream = getattr(self.store, "open_range", None)
        for run in _runs(missing):
            fetched = self._stream_run(stream, run) if stream else self._read_run(run)
            for blob_id, loc, sealed in fetched:
                if keep and self.disk is not None:
                    self.disk.put(blob_id, sealed)
                yield blob_id, loc, sealed

    def _read_run(self, run: list[Located]) -> Iterator[Fetched]:
        start = run[0][1].offset
        end = run[-1][1].offset + run[-1][1].length
        data = memoryview(self.store.get(pack_name(run[0][1].pack), start, end - start))
        for blob_id, loc in run:
            yield blob_id, loc, bytes(data[loc.offset - start : loc.offset - start + loc.length])

    def _stream_run(self, open_range: OpenRange, run: list[Located]) -> Iterator[Fetched]:
        start = run[0][1].offset
        end = run[-1][1].offset + run[-1][1].length
        with open_range(pack_name(run[0][1].pack), start, end - start) as body:
            pos = start
            for blob_id, loc in run:
                if loc.offset > pos:
                    body.read(loc.offset - pos)  # a gap: other blobs, read through
                yield blob_id, loc, body.read(loc.length)
                pos = loc.offset + loc.length


def _runs(located: list[Located]) -> Iterator[list[Located]]:
    """Blobs grouped into runs of close neighbours in one pack, in pack order; the blobs
    of a run neither overlap nor span more than MAX_RUN bytes."""
    run: list[Located] = []
    for item in sorted(located, key=lambda x: (x[1].pack, x[1].offset)):
        loc = item[1]
        if run:
            first, last = run[0][1], run[-1][1]
            gap = loc.offset - (last.offset + last.length)
            too_long = loc.offset + loc.length - first.offset > MAX_RUN
            if loc.pack != first.pack or gap > MAX_GAP or gap < 0 or too_long:
                yield run
                run = []
        run.append(item)
    if run:
        yield run
