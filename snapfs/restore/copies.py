"""Where this restore has already written each blob, so a blob that many files share
(copies, dedup across the tree) is fetched once and read back from the first file that
holds it. A copy is trusted only after its id is checked again, like bytes from the
store; a missing or changed one just means a fetch.

Bounded: the most recently written ``COPY_ENTRIES`` blobs (about 300 bytes each).
Thread-safe.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

from snapfs.crypto import MasterKey

COPY_ENTRIES = 32768


class Copies:
    def __init__(self, key: MasterKey, entries: int = COPY_ENTRIES) -> None:
        self._key = key
        self._entries = entries
        self._where: OrderedDict[bytes, tuple[bytes, int]] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, blob_id: bytes, path: bytes, offset: int) -> None:
        with self._lock:
            self._where[blob_id] = (path, offset)
            if len(self._where) > self._entries:
                self._where.popitem(last=False)

    def read(self, blob_id: bytes, length: int) -> bytes | None:
        """The blob's plaintext from a restored file, or None (then fetch it)."""
        with self._lock:
            where = self._where.get(blob_id)
        if where is None:
            return None
        path, offset = where
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                data = os.pread(fd, length, offset)
            finally:
                os.close(fd)
        except OSError:
            data = b""
        if len(data) == length and self._key.blob_id(data) == blob_id:
            return data
        with self._lock:
            self._where.pop(blob_id, None)
        return None
