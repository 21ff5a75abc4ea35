"""Directory listings read ahead of the walker, in the order the walker will want them.

With a cold page cache every lstat and directory read is a disk read; one walker thread
issues them one at a time. Scan threads list the directories the walk will reach next,
each finished listing queueing its own subdirectories, so a few reads are always in
flight. A priority queue keyed by path components (the walk's own order) keeps the read
ahead just in front of the walker rather than spreading across the whole tree.

Memory: at most ``limit`` listings are being read or waiting for the walker; the paths
still to read are a fraction of listings already held.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, Protocol, TypeVar


class Listing(Protocol):
    def subdirs(self, dev: int | None) -> list[tuple[bytes, int | None]]:
        """Subdirectories the walker will enter, as (path, device)."""
        ...


L = TypeVar("L", bound=Listing)


class ReadAhead(Generic[L]):
    def __init__(self, scan: Callable[[bytes], L], threads: int, limit: int) -> None:
        self._scan = scan
        self._limit = limit
        self._n_threads = threads
        self._cond = threading.Condition()
        self._heap: list[tuple[list[bytes], bytes, int | None]] = []  # to read, in walk order
        self._queued: set[bytes] = set()  # paths in the heap the walker has not yet taken
        self._held: dict[bytes, Future[L]] = {}  # being read, or read and not yet taken
        self._closed = False
        self._threads: list[threading.Thread] = []

    def _start(self) -> None:
        """On first use, so a walk that never starts leaves no threads behind."""
        self._threads = [
            threading.Thread(target=self._work, name=f"scan_{i}", daemon=True)
            for i in range(self._n_threads)
        ]
        for t in self._threads:
            t.start()

    def take(self, path: bytes, dev: int | None) -> L:
        """The listing of ``path``: read ahead, or read now when no thread has started it.

        ``dev`` restricts what is read ahead below it to that device (None: any)."""
        if not self._threads:
            self._start()
        with self._cond:
            self._queued.discard(path)  # not started: reading it here is sooner
            fut = self._held.pop(path, None)
            if fut is not None and len(self._held) == self._limit - 1:
                self._cond.notify()  # a thread may be waiting for a free slot
        if fut is not None:
            return fut.result()
        listing = self._scan(path)
        self._add(listing.subdirs(dev))
        return listing

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            t.join()

    def _add(self, dirs: list[tuple[bytes, int | None]]) -> None:
        """Paths only: what the limit bounds is the listings read, not the paths to read."""
        with self._cond:
            for path, dev in dirs:
                self._queued.add(path)
                heapq.heappush(self._heap, (path.split(b"/"), path, dev))
            self._cond.notify(len(dirs))  # not all: each wake-up costs a GIL hand-over

    def _next(self) -> tuple[bytes, int | None, Future[L]] | None:
        with self._cond:
            while True:
                if self._closed:
                    return None
                if self._heap and len(self._held) < self._limit:
                    _, path, dev = heapq.heappop(self._heap)
                    if path not in self._queued:
                        continue  # the walker got there first
                    self._queued.discard(path)
                    fut: Future[L] = Future()
                    fut.set_running_or_notify_cancel()
                    self._held[path] = fut
                    return path, dev, fut
                self._cond.wait()

    def _work(self) -> None:
        while (item := self._next()) is not None:
            path, dev, fut = item
            try:
                listing = self._scan(path)
            except BaseException as e:
                fut.set_exception(e)
                continue
            fut.set_result(listing)
            self._add(listing.subdirs(dev))
