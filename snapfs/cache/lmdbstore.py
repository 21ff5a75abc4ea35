"""A thin, table-oriented wrapper over LMDB — the only module that imports lmdb.

Sync and thread-safe: every call opens and closes its own transaction inside the calling
thread, so a transaction never spans an ``await`` or crosses threads. Values are opaque
bytes; the repository layer owns their encoding.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import lmdb

from snapfs.errors import SnapfsError

TABLES = ("blobs", "index_files", "snapshots", "files", "meta", "treepacks")
VFS_TABLES = ("dirs", "entries", "names", "contents", "xattrs", "inodes")
DEFAULT_MAP_SIZE = 1 << 38  # address space only; the file grows with what is stored


def default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "snapfs"


_DAMAGE = (
    lmdb.CorruptedError,
    lmdb.InvalidError,
    lmdb.PageNotFoundError,
    lmdb.VersionMismatchError,
    lmdb.PanicError,
)


def _private_dir(path: Path) -> None:
    """The cache holds decrypted names and chunk lists: only its owner may read it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    if path.parent.name == "snapfs":
        path.parent.chmod(0o700)


class Cache:
    """``durable=False`` skips fsync on commit: for tables that are rebuilt from the
    repository anyway, where a commit per directory listing must cost microseconds."""

    def __init__(
        self,
        path: Path,
        tables: tuple[str, ...] = TABLES,
        durable: bool = True,
        map_size: int = DEFAULT_MAP_SIZE,
    ) -> None:
        self.path = path
        try:
            _private_dir(path)
            self._env = self._open(path, len(tables), durable, map_size)
        except _DAMAGE:
            if durable:
                raise SnapfsError(f"the cache at {path} is damaged; delete it") from None
            shutil.rmtree(path, ignore_errors=True)  # derived data: start over
            _private_dir(path)
            self._env = self._open(path, len(tables), durable, map_size)
        except lmdb.Error as e:  # e.g. already open in this process: not damage
            raise SnapfsError(f"cannot open the cache at {path}: {e}") from None
        except OSError as e:
            raise SnapfsError(f"cannot open the cache at {path}: {e}") from None
        self._dbs = {t: self._env.open_db(t.encode()) for t in tables}

    @staticmethod
    def _open(path: Path, n_tables: int, durable: bool, map_size: int) -> lmdb.Environment:
        return lmdb.open(
            str(path),
            map_size=map_size,
            max_dbs=n_tables,
            readahead=False,
            metasync=False,
            sync=durable,
        )

    def close(self) -> None:
        self._env.close()

    def read_ahead(self, max_bytes: int) -> None:
        """Ask the kernel to read the database file in the background when it is at most
        ``max_bytes``: lookups land at random, and with a cold page cache each one was a
        4 KiB disk read on somebody's critical path. Page cache only: RSS does not grow."""
        with contextlib.suppress(OSError, AttributeError):
            fd = os.open(os.path.join(self.path, "data.mdb"), os.O_RDONLY)  # LMDB's name
            try:
                if os.fstat(fd).st_size <= max_bytes:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            finally:
                os.close(fd)

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

    def put_tables(self, items: Iterable[tuple[str, bytes, bytes]]) -> None:
        """Write to several tables in one transaction (all or nothing)."""
        with self._env.begin(write=True) as txn:
            for table, k, v in items:
                txn.put(k, v, db=self._dbs[table])

    def scan(
        self, table: str, prefix: bytes, start: bytes, limit: int
    ) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` items with keys >= prefix + start that share ``prefix``."""
        out: list[tuple[bytes, bytes]] = []
        with self._env.begin(db=self._dbs[table]) as txn:
            cur = txn.cursor()
            if not cur.set_range(prefix + start):
                return out
            for k, v in cur:
                if len(out) >= limit or not bytes(k).startswith(prefix):
                    break
                out.append((bytes(k), bytes(v)))
        return out

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
