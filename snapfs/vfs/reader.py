"""Which chunks cover a byte range of a file: bisect on cumulative chunk sizes.

Pure and sync; memory is one offset per chunk of an open file.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Piece:
    """Bytes [start, end) of chunk ``index`` are part of the requested range."""

    index: int
    blob_id: bytes
    start: int
    end: int


class ChunkMap:
    def __init__(self, content: list[tuple[bytes, int]]) -> None:
        self.ids = [blob_id for blob_id, _ in content]
        self.starts = [0, *itertools.accumulate(size for _, size in content)]
        self.size = self.starts[-1]

    def pieces(self, offset: int, length: int) -> list[Piece]:
        end = min(offset + length, self.size)
        if offset >= end:
            return []
        first = bisect.bisect_right(self.starts, offset) - 1
        out = []
        i = first
        while i < len(self.ids) and self.starts[i] < end:
            lo = max(offset, self.starts[i]) - self.starts[i]
            hi = min(end, self.starts[i + 1]) - self.starts[i]
            out.append(Piece(i, self.ids[i], lo, hi))
            i += 1
        return out
