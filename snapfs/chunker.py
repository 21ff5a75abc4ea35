"""Content-defined chunking with FastCDC (pyfastcdc, Cython, releases the GIL).

The gear table is seeded from the repository config so chunk boundaries do not leak
which known files a repository holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from pyfastcdc import FastCDC


class Chunker:
    """Not thread-safe: one per walking thread. Yields bytes the caller may keep."""

    def __init__(self, min_size: int, avg_size: int, max_size: int, seed: int) -> None:
        self._cdc = FastCDC(avg_size, min_size=min_size, max_size=max_size, seed=seed)
        self.max_size = max_size

    def chunks(self, stream: BinaryIO) -> Iterator[bytes]:
        for chunk in self._cdc.cut_stream(stream):
            yield bytes(chunk.data)

    def chunk_buffer(self, data: bytes) -> Iterator[bytes]:
        for chunk in self._cdc.cut_buf(data):
            yield bytes(chunk.data)
