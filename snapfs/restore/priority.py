"""A thread pool that runs the task with the smallest key first, not the oldest.

The restore walk prepares directories (make them, read their trees) ahead of itself,
keyed by their position in walk order; the one the walk waits for then never queues
behind ones it will reach much later.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class PriorityPool:
    def __init__(self, threads: int, name: str) -> None:
        self._heap: list[tuple[tuple[int, ...], int, Future[Any], Callable[[], Any]]] = []
        self._order = itertools.count()  # equal keys: first come, first served
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}_{i}", daemon=True)
            for i in range(threads)
        ]
        for t in self._threads:
            t.start()

    def submit(self, key: tuple[int, ...], fn: Callable[[], T]) -> Future[T]:
        fut: Future[T] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("submit after shutdown")
            heapq.heappush(self._heap, (key, next(self._order), fut, fn))
            self._cond.notify()
        return fut

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap and not self._closed:
                    self._cond.wait()
                if not self._heap:
                    return
                _, _, fut, fn = heapq.heappop(self._heap)
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as e:  # handed to whoever waits for the result
                fut.set_exception(e)

    def shutdown(self) -> None:
        """Cancel what has not started, wait for what has."""
        with self._cond:
            self._closed = True
            for _, _, fut, _ in self._heap:
                fut.cancel()
            self._heap.clear()
            self._cond.notify_all()
        for t in self._threads:
            t.join()
