"""A bounded directory of immutable byte strings (sealed blobs fetched from a remote
store), so re-reads do not go back to S3. Derived and unencrypted-safe: it only ever
holds sealed bytes, which readers authenticate as they would the store's.

Sync and thread-safe. Least-recently-used files go first once the size limit is passed.
"""

from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path

EVICT_TO = 0.9  # of the limit, so eviction runs in batches, not per insert


class DiskCache:
    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._size = sum(size for _, size, _ in self._files())

    def _file(self, key: bytes) -> Path:
        h = key.hex()
        return self.path / h[:2] / h

    def _files(self) -> list[tuple[Path, int, float]]:
        out = []
        for entry in os.scandir(self.path):
            if not entry.is_dir():
                continue
            for f in os.scandir(entry.path):
                try:
                    st = f.stat()
                except FileNotFoundError:
                    continue
                out.append((Path(f.path), st.st_size, st.st_mtime))
        return out

    def get(self, key: bytes) -> bytes | None:
        path = self._file(key)
        try:
            data = path.read_bytes()
            os.utime(path)  # recently used: evicted last
        except FileNotFoundError:
            return None
        return data

    def put(self, key: bytes, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        path = self._file(key)
        tmp = path.with_name(f".tmp-{secrets.token_hex(6)}")
        try:
            path.parent.mkdir(mode=0o700, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)
            return  # a full or read-only cache disk only costs speed
        with self._lock:
            self._size += len(data)
            if self._size > self.max_bytes:
                self._evict()

    def discard(self, key: bytes) -> None:
        path = self._file(key)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return
        with self._lock:
            self._size -= size

    def _evict(self) -> None:
        files = sorted(self._files(), key=lambda f: f[2])
        size = sum(s for _, s, _ in files)
        for path, s, _ in files:
            if size <= self.max_bytes * EVICT_TO:
                break
            path.unlink(missing_ok=True)
            size -= s
        self._size = size
