"""An in-process store for unit tests; same contract as the others, nothing durable."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from snapfs.errors import ObjectNotFound, StoreError


class MemoryStore:
    parallelism = 2

    def __init__(self) -> None:
        self.location = "memory://"
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        with self._lock:
            try:
                data = self._objects[name]
            except KeyError:
                raise ObjectNotFound(f"{name} is missing from the repository") from None
        end = len(data) if length is None else offset + length
        if end > len(data):
            raise StoreError(f"{name} is shorter than expected (truncated?)")
        return data[offset:end]

    def put(self, name: str, data: bytes) -> None:
        with self._lock:
            self._objects[name] = bytes(data)

    def delete(self, name: str) -> None:
        with self._lock:
            self._objects.pop(name, None)

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        with self._lock:
            items = sorted((n, len(d)) for n, d in self._objects.items() if n.startswith(prefix))
        yield from items

    def exists(self, name: str) -> bool:
        with self._lock:
            return name in self._objects
