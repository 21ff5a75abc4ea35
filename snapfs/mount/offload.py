"""Leaving the trio loop: every blocking call goes through one of five named limiters,
so a slow store holds I/O tokens only and never starves decryption or LMDB lookups.

Runs on the trio loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import trio

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Limiters:
    io: trio.CapacityLimiter
    cpu: trio.CapacityLimiter
    index: trio.CapacityLimiter
    prefetch: trio.CapacityLimiter  # reads ahead: kept apart so they never delay a demand
    pages: trio.CapacityLimiter  # page cache stores, which may wait on a READ being answered

    @classmethod
    def create(
        cls, io: int = 8, cpu: int = 2, index: int = 4, prefetch: int = 4, pages: int = 1
    ) -> Limiters:
        return cls(
            trio.CapacityLimiter(io),
            trio.CapacityLimiter(cpu),
            trio.CapacityLimiter(index),
            trio.CapacityLimiter(prefetch),
            trio.CapacityLimiter(pages),
        )


async def offload(limiter: trio.CapacityLimiter, fn: Callable[..., T], *args: object) -> T:
    return await trio.to_thread.run_sync(fn, *args, limiter=limiter, abandon_on_cancel=False)
