"""The files cache: path → (stat fingerprint, chunk list), so an unchanged file is not
read again. Kept in the LMDB cache; a hit is trusted only while every chunk it names is
still in the repository index.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable

from snapfs.cache import Cache

_HEAD = struct.Struct("<QqqQQI")  # size, mtime_ns, ctime_ns, inode, dev, chunk count
_CHUNK = struct.Struct("<32sI")
TABLE = "files"

Fingerprint = tuple[int, int, int, int, int]
Content = list[tuple[bytes, int]]


def fingerprint(st: os.stat_result) -> Fingerprint:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def encode(fp: Fingerprint, content: Content) -> bytes:
    return _HEAD.pack(*fp, len(content)) + b"".join(_CHUNK.pack(i, s) for i, s in content)


def decode(raw: bytes) -> tuple[Fingerprint, Content]:
    *fp, count = _HEAD.unpack_from(raw)
    content = [_CHUNK.unpack_from(raw, _HEAD.size + i * _CHUNK.size) for i in range(count)]
    return (fp[0], fp[1], fp[2], fp[3], fp[4]), content


class FilesCache:
    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    def lookup(self, path: bytes) -> tuple[Fingerprint, Content] | None:
        raw = self.cache.get(TABLE, path)
        return None if raw is None else decode(raw)

    def lookup_many(self, paths: list[bytes]) -> list[tuple[Fingerprint, Content] | None]:
        """One transaction for a whole directory instead of one per file."""
        return [None if raw is None else decode(raw) for raw in self.cache.get_many(TABLE, paths)]

    def store(self, entries: Iterable[tuple[bytes, Fingerprint, Content]]) -> None:
        self.cache.put_many(TABLE, ((p, encode(fp, c)) for p, fp, c in entries))
