"""glibc malloc tuning through ``mallopt``: how the CLI and the writer keep freed
buffers from staying resident. A no-op where there is no glibc."""

from __future__ import annotations

import contextlib
import ctypes

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def mallopt(param: int, value: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(param, value)
