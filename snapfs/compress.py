"""zstd compression of blob payloads. Sync, thread-safe (one context per thread)."""

from __future__ import annotations

import threading

import zstandard

from snapfs.errors import FormatError

MAX_DECOMPRESSED = 1 << 30

_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "c", None)
    if cache is None:
        cache = _local.c = {}
    comp = cache.get(level)
    if comp is None:
        comp = cache[level] = zstandard.ZstdCompressor(level=level)
    return comp


def _decompressor() -> zstandard.ZstdDecompressor:
    d: zstandard.ZstdDecompressor | None = getattr(_local, "d", None)
    if d is None:
        d = _local.d = zstandard.ZstdDecompressor()
    return d


def compress(data: bytes | memoryview, level: int) -> bytes:
    result: bytes = _compressor(level).compress(data)
    return result


def decompress(data: bytes | memoryview, size_hint: int = 0) -> bytes:
    try:
        out: bytes = _decompressor().decompress(data, max_output_size=size_hint or MAX_DECOMPRESSED)
    except zstandard.ZstdError as e:
        raise FormatError(f"zstd frame is corrupt: {e}") from None
    return out
