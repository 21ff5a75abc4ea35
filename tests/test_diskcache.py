"""The disk cache of fetched blobs: bounded, written behind the caller, never lost on
close, and a failing disk only costs speed."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from snapfs.cache import diskcache
from snapfs.cache.diskcache import DiskCache


def key(i: int) -> bytes:
    return i.to_bytes(32, "big")


def test_a_put_is_seen_at_once_and_on_disk_after_close(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", 1 << 20)
    cache.put(key(1), b"one")
    assert cache.get(key(1)) == b"one"  # from the backlog or the file: either way
    cache.close()
    again = DiskCache(tmp_path / "c", 1 << 20)
    assert again.get(key(1)) == b"one"
    assert again.get(key(2)) is None


def test_puts_wait_while_the_backlog_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(diskcache, "WRITE_BEHIND", 10)
    cache = DiskCache(tmp_path / "c", 1 << 20)
    gate = threading.Event()
    real = cache._write

    def slow(k: bytes, data: bytes) -> None:
        gate.wait(10)
        real(k, data)

    monkeypatch.setattr(cache, "_write", slow)
    cache.put(key(1), b"x" * 8)
    second = threading.Thread(target=cache.put, args=(key(2), b"y" * 8))
    second.start()
    second.join(0.3)
    assert second.is_alive()  # 16 bytes would not fit in a backlog of 10
    gate.set()
    second.join(10)
    assert not second.is_alive()
    cache.close()
    assert DiskCache(tmp_path / "c", 1 << 20).get(key(2)) == b"y" * 8


def test_a_failing_write_neither_hangs_nor_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = DiskCache(tmp_path / "c", 1 << 20)

    def broken(k: bytes, data: bytes) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(cache, "_write", broken)
    for i in range(5):
        cache.put(key(i), b"z" * 100)
    cache.close()
    assert cache.get(key(3)) is None


def test_discard_drops_a_pending_copy_and_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = DiskCache(tmp_path / "c", 1 << 20)
    cache.put(key(1), b"bad")
    cache.discard(key(1))
    cache.close()
    assert cache.get(key(1)) is None
    # discarded while the writer was writing it: the file goes too
    writing, gate = threading.Event(), threading.Event()
    real = cache._write

    def slow(k: bytes, data: bytes) -> None:
        writing.set()
        gate.wait(10)
        real(k, data)

    monkeypatch.setattr(cache, "_write", slow)
    cache.put(key(2), b"bad too")
    assert writing.wait(10)
    cache.discard(key(2))
    gate.set()
    cache.close()
    assert cache.get(key(2)) is None


def test_the_size_stays_under_the_limit(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", 1000)
    for i in range(50):
        cache.put(key(i), bytes(100))
    cache.close()
    on_disk = sum(p.stat().st_size for p in (tmp_path / "c").rglob("*") if p.is_file())
    assert on_disk <= 1000
    assert cache.get(key(49)) == bytes(100)  # the newest stays
