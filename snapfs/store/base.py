"""The Store protocol every backend implements, and the URL → backend switch.

Sync and thread-safe: called from worker threads of the writer, restore and mount.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from snapfs.errors import UsageError


class Store(Protocol):
    """Objects are named by '/'-separated paths like ``data/ab/abcd…``.

    ``put`` is atomic (a reader sees the whole object or none) and only acknowledged once
    durable; ``get`` with ``length`` reads a byte range so a reader can fetch one blob.
    Optional attributes: ``parallelism`` (uploads worth running at once, default 2) and
    ``remote`` (fetched data is worth a local disk cache).
    """

    location: str

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes: ...

    def put(self, name: str, data: bytes) -> None: ...

    def delete(self, name: str) -> None:
        """Remove an object; removing one that is already gone is not an error."""
        ...

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        """Yield (name, size) of every object whose name starts with ``prefix``."""
        ...

    def exists(self, name: str) -> bool: ...


def open_store(url: str, s3_endpoint: str | None = None) -> Store:
    """Pick a backend from a repository URL: a path, ``file://``, or ``s3://``."""
    if url.startswith("s3://"):
        from snapfs.store.s3 import S3Store

        return S3Store(url, s3_endpoint)
    if url.startswith("memory://"):
        from snapfs.store.memory import MemoryStore

        return MemoryStore()
    from snapfs.store.local import LocalStore

    path = url.removeprefix("file://")
    if not path:
        raise UsageError("empty repository path")
    return LocalStore(path)
