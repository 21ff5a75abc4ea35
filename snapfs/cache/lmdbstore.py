"""A thin, table-oriented wrapper over LMDB — the only module that imports lmdb.

Sync and thread-safe: every call opens and closes its own transaction inside the calling
thread, so a transaction never spans an ``await`` or crosses threads. Values are opaque
bytes; the repository layer owns their encoding.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import lmdb

from snapfs.errors import SnapfsError

TABLES = ("blobs", "index_files", "snapshots", "files", "meta")
DEFAULT_MAP_SIZE = 1 << 38  # address space only; the file grows with what is stored


def default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "snapfs"


class Cache:
    def __init__(self, path: Path, map_size: int = DEFAULT_MAP_SIZE) -> None:
        self.path = path
        try:
            path.mkdir(parents=True, exist_ok=True)
            self._env = lmdb.open(
                str(path),
                map_size=map_size,
                max_dbs=len(TABLES),
                readahead=False,
                metasync=False,
            )
        except (OSError, lmdb.Error) as e:
            raise SnapfsError(f"cannot open the cache at {path}: {e}") from None
        self._dbs = {t: self._env.open_db(t.encode()) for t in TABLES}

    def close(self) -> None:
        self._env.close()

    def get(self, table: str, key: bytes) -> bytes | None:
        with self._env.begin(db=self._dbs[table]) as txn:
            value = txn.get(key)
        return None if value is None else bytes(value)

    def get_many(self, table: str, keys: Iterable[bytes]) -> list[bytes | None]:
        with self._env.begin(db=self._dbs[table]) as txn:
            return [None if (v := txn.get(k)) is None else bytes(v) for k in keys]

    def contains_all(self, table: str, keys: Iterable[bytes]) -> bool:
        with self._env.begin(db=self._dbs[table]) as txn:
            return all(txn.get(k) is not None for k in keys)

    def put_many(self, table: str, items: Iterable[tuple[bytes, bytes]]) -> None:
        with self._env.begin(db=self._dbs[table], write=True) as txn:
            for k, v in items:
                txn.put(k, v)

    def delete_many(self, table: str, keys: Iterable[bytes]) -> None:
        with self._env.begin(db=self._dbs[table], write=True) as txn:
            for k in keys:
                txn.delete(k)

    def keys(self, table: str) -> list[bytes]:
        with self._env.begin(db=self._dbs[table]) as txn:
            return [bytes(k) for k in txn.cursor().iternext(keys=True, values=False)]

    def items(self, table: str) -> Iterator[tuple[bytes, bytes]]:
        """Snapshot of a table's items; materialised so no transaction outlives the call."""
        with self._env.begin(db=self._dbs[table]) as txn:
            pairs = [(bytes(k), bytes(v)) for k, v in txn.cursor()]
        return iter(pairs)

    def clear(self, table: str) -> None:
        with self._env.begin(write=True) as txn:
            txn.drop(self._dbs[table], delete=False)
