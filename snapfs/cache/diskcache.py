"""A bounded directory of immutable byte strings (sealed blobs fetched from a remote
store), so re-reads do not go back to S3. Derived and unencrypted-safe: it only ever
holds sealed bytes, which readers authenticate as they would the store's.

Sync and thread-safe. Least-recently-used files go first once the size limit is passed.
Writes are done behind the caller's back by one thread, with a bounded backlog: a mount
that prefetches a directory's files should not wait for a file system create per blob
before it can hand them out. ``close`` (or ``flush``) waits for the backlog.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from pathlib import Path

log = logging.getLogger(__name__)

EVICT_TO = 0.9  # of the limit, so eviction runs in batches, not per insert
WRITE_BEHIND = 32 << 20  # bytes waiting to be written; a put beyond it waits


class DiskCache:
    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._size = sum(size for _, size, _ in self._files())
        self._backlog: dict[bytes, bytes] = {}
        self._backlog_bytes = 0
        self._changed = threading.Condition()
        self._writer: threading.Thread | None = None
        self._busy = False  # the writer holds an entry taken from the backlog

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
        with self._changed:
            pending = self._backlog.get(key)
        if pending is not None:
            return pending
        path = self._file(key)
        try:
            data = path.read_bytes()
            os.utime(path)  # recently used: evicted last
        except FileNotFoundError:
            return None
        return data

    def put(self, key: bytes, data: bytes) -> None:
        """Queue ``data`` for writing; waits only while the backlog is full."""
        if len(data) > self.max_bytes:
            return
        with self._changed:
            if key in self._backlog:
                return
            while self._backlog and self._backlog_bytes + len(data) > WRITE_BEHIND:
                self._changed.wait()
            self._backlog[key] = data
            self._backlog_bytes += len(data)
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_behind, name="disk-cache", daemon=True
                )
                self._writer.start()
            self._changed.notify_all()

    def flush(self) -> None:
        with self._changed:
            while self._backlog or self._busy:
                self._changed.wait()

    close = flush  # the writer thread then idles; it holds no file open

    def _write_behind(self) -> None:
        while True:
            with self._changed:
                while not self._backlog:
                    self._changed.wait()
                key = next(iter(self._backlog))
                data = self._backlog[key]
                self._busy = True
            try:
                self._write(key, data)
            except Exception as e:  # never leave a put waiting on a dead writer
                log.debug("disk cache write failed: %s", e)
            with self._changed:
                if self._backlog.pop(key, None) is not None:
                    self._backlog_bytes -= len(data)
                    discarded = False
                else:
                    discarded = True  # while it was being written
            if discarded:
                self.discard(key)
            with self._changed:
                self._busy = False
                self._changed.notify_all()

    def _write(self, key: bytes, data: bytes) -> None:
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
        with self._changed:
            pending = self._backlog.pop(key, None)
            if pending is not None:
                self._backlog_bytes -= len(pending)
                self._changed.notify_all()
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
