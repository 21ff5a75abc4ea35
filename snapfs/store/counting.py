"""A Store decorator counting requests and bytes: what a run cost in S3 requests and
egress. Thread-safe."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

from snapfs.store.base import Store


class CountingStore:
    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.location = inner.location
        self.parallelism: int = getattr(inner, "parallelism", 2)
        self.remote: bool = getattr(inner, "remote", False)
        self.requests: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()
        self._lock = threading.Lock()
        if hasattr(inner, "open_range"):  # streamed ranged reads, only where they exist
            self.open_range = self._open_range

    def _count(self, op: str, nbytes: int = 0) -> None:
        with self._lock:
            self.requests[op] += 1
            self.bytes[op] += nbytes

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        data = self.inner.get(name, offset, length)
        self._count("get", len(data))
        return data

    def _open_range(self, name: str, offset: int, length: int) -> Any:
        reader = self.inner.open_range(name, offset, length)  # type: ignore[attr-defined]
        self._count("get", length)
        return reader

    def put(self, name: str, data: bytes) -> None:
        self.inner.put(name, data)
        self._count("put", len(data))

    def delete(self, name: str) -> None:
        self.inner.delete(name)
        self._count("delete")

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        self._count("list")
        yield from self.inner.list(prefix)

    def exists(self, name: str) -> bool:
        self._count("head")
        return self.inner.exists(name)

    def summary(self) -> str:
        with self._lock:
            parts = [
                f"{op} {self.requests[op]}"
                + (f" ({self.bytes[op]} bytes)" if self.bytes[op] else "")
                for op in ("get", "put", "list", "head", "delete")
                if self.requests[op]
            ]
        return "store requests: " + (", ".join(parts) or "none")
