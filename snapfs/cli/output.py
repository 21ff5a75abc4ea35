"""Human and JSON output, and the TTY-only progress line."""

from __future__ import annotations

import json
import stat
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from snapfs.repo.tree import SYMLINK, Node, st_mode

if TYPE_CHECKING:  # the writer is not loaded for commands that do not write
    from snapfs.writer.backup import Summary


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def display(raw: bytes) -> str:
    """A file name for a terminal: undecodable bytes shown as escapes, not as garbage."""
    return raw.decode("utf-8", errors="backslashreplace")


def mode_string(node: Node) -> str:
    return stat.filemode(st_mode(node.type, node.mode))


def node_line(path: bytes, node: Node) -> str:
    when = datetime.fromtimestamp(node.mtime_ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    name = display(path)
    if node.type == SYMLINK:
        name += " -> " + display(node.target or b"")
    return f"{mode_string(node)} {node.uid:>5} {node.gid:>5} {node.size:>12} {when}  {name}"


def node_json(path: bytes, node: Node) -> dict[str, Any]:
    d: dict[str, Any] = {
        "path": display(path),
        "type": node.type,
        "mode": node.mode,
        "uid": node.uid,
        "gid": node.gid,
        "size": node.size,
        "mtime_ns": node.mtime_ns,
    }
    if node.type == SYMLINK:
        d["target"] = display(node.target or b"")
    return d


class Progress:
    """Redraws one status line on a TTY at most a few times a second."""

    def __init__(self, stream: TextIO = sys.stderr, interval: float = 0.25) -> None:
        self.stream, self.interval = stream, interval
        self.start = time.monotonic()
        self._last = 0.0
        self._drawn = False

    def update(self, s: Summary, _path: bytes) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        elapsed = now - self.start
        rate = s.bytes_read / elapsed if elapsed > 0 else 0
        line = (
            f"[{int(elapsed) // 60}:{int(elapsed) % 60:02d}] {s.total_files} files, "
            f"{human_bytes(s.total_bytes)} seen, {human_bytes(s.bytes_read)} read "
            f"({human_bytes(rate)}/s), {human_bytes(s.bytes_added)} added"
        )
        self.stream.write("\r\x1b[K" + line)
        self.stream.flush()
        self._drawn = True

    def done(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
