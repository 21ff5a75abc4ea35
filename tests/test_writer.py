"""The writer's bounds and read-ahead: the pack budget never deadlocks, packs come out
whole, and listings read ahead still give every file its right verdict."""

from __future__ import annotations

import os
from pathlib import Path

from snapfs.repo.blob import open_blob, seal_blob, seal_blob_into
from snapfs.repo.format import BLOB_DATA
from snapfs.repo.pack import PackBuilder
from snapfs.repo.repository import Repository
from snapfs.writer.backup import PREFETCH_DIRS, Backup, BackupOptions
from snapfs.writer.saver import BlobSaver, SaverLimits
from snapfs.writer.walker import Excludes


def test_pack_budget_of_one_pack_still_stores_everything(memory_repo: Repository) -> None:
    saver = BlobSaver(memory_repo, SaverLimits(pack_buffers=1, uploads=1))
    blobs = [os.urandom(200_000) for _ in range(40)]  # 8 MB through 1 MiB packs
    futures = [saver.save_data(b) for b in blobs]
    saved = [f.result() for f in futures]
    saver.finish()
    assert saver.packs_written >= 7
    assert all(memory_repo.lookup(s.id) is not None for s in saved)
    assert [memory_repo.read_blob(s.id) for s in saved] == blobs


def test_pack_builder_resets_after_finish(memory_repo: Repository) -> None:
    builder = PackBuilder(BLOB_DATA)
    builder.add(b"\1" * 32, b"x" * 100, 72)
    first = builder.finish(memory_repo.key)
    builder.add(b"\2" * 32, b"y" * 50, 22)
    second = builder.finish(memory_repo.key)
    assert first.data.startswith(b"x" * 100)
    assert second.data.startswith(b"y" * 50)
    assert b"x" not in second.data[:50]
    assert builder.parts == []


def _tree(root: Path, dirs: int) -> None:
    for d in range(dirs):
        sub = root / f"d{d:03}" / "inner"
        sub.mkdir(parents=True)
        (sub / "f").write_bytes(f"file {d}".encode())
        (root / f"d{d:03}" / "skip.tmp").write_bytes(b"excluded")


def test_read_ahead_listings_reuse_unchanged_files(memory_repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src, PREFETCH_DIRS + 20)  # more directories than are read ahead at once
    options = BackupOptions(excludes=Excludes(("*.tmp",)))
    first = Backup(memory_repo, [str(src)], options)
    first.run()
    assert first.summary.files_new == PREFETCH_DIRS + 20
    (src / "d005" / "inner" / "f").write_bytes(b"changed, longer than before")
    second = Backup(memory_repo, [str(src)], options)
    second.run()
    s = second.summary
    assert (s.files_new, s.files_changed, s.files_unchanged) == (0, 1, PREFETCH_DIRS + 19)
    assert s.dirs == first.summary.dirs
    assert second.warnings == []


def test_seal_blob_into_reused_buffer_opens_like_seal_blob(memory_repo: Repository) -> None:
    key = memory_repo.key
    buf = bytearray()
    for data in [os.urandom(300_000), b"z" * 100_000, b"", b"tiny", os.urandom(5000)]:
        bid = key.blob_id(data)
        size = seal_blob_into(key, bid, data, 3, buf)  # shrinking data: stale bytes after
        assert size == len(seal_blob(key, bid, data, 3))
        assert open_blob(key, bid, bytes(buf[:size]), len(data)) == data
