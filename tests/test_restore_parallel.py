"""Restore with files made by the workers, directory metadata applied last, shared blobs
fetched once, and ranged reads streamed blob by blob."""

from __future__ import annotations

import os
import shutil
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from snapfs.errors import StoreError
from snapfs.repo.fetch import BlobFetcher
from snapfs.repo.format import BLOB_DATA, BlobLocation
from snapfs.repo.repository import Repository
from snapfs.restore import restorer
from snapfs.restore.copies import Copies
from snapfs.restore.priority import PriorityPool
from snapfs.restore.restorer import Restorer
from snapfs.store.s3 import S3Store
from snapfs.vfs.paths import resolve
from snapfs.writer.backup import Backup, BackupOptions
from tests.trees import assert_same_tree
from tools.seaweed import S3Server

IS_ROOT = os.geteuid() == 0
OLD_NS = 1_500_000_000_123_456_789


def snapshot_and_restore(repo: Repository, src: Path, dst: Path, **kw: int) -> list[str]:
    snap = Backup(repo, [str(src)], BackupOptions()).run()
    node = resolve(repo, snap, str(src))
    return Restorer(repo, **kw).restore(node, os.fsencode(dst)).errors


def age(path: Path) -> None:
    os.utime(path, ns=(OLD_NS, OLD_NS), follow_symlinks=False)


def test_directory_metadata_is_applied_after_its_late_files(
    local_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One chunk per batch and one batch in flight: files are made long after the walk
    left their directory, which must still end up read-only and with its old mtime."""
    monkeypatch.setattr(restorer, "BATCH_BLOBS", 1)
    src = tmp_path / "src"
    for d in ("ro", "ro/inner", "plain"):
        (src / d).mkdir(parents=True)
        for i in range(5):
            (src / d / f"f{i}").write_bytes(os.urandom(3000 + i))
    modes = {"ro/f0": 0o444, "ro/f1": 0o640, "ro/f2": 0o4755, "plain/f0": 0o000, "plain/f1": 0o666}
    for rel, mode in modes.items():
        os.chmod(src / rel, mode)
    (src / "plain" / "empty").touch()
    os.symlink("f1", src / "plain" / "link")
    for p in sorted(src.rglob("*"), reverse=True):
        age(p)
    os.chmod(src / "ro" / "inner", 0o555)
    os.chmod(src / "ro", 0o2555)
    age(src / "ro" / "inner")
    age(src / "ro")
    dst = tmp_path / "dst"
    try:
        assert snapshot_and_restore(local_repo, src, dst, workers=2, max_inflight=1) == []
        assert_same_tree(src, dst)
        for rel in ("ro", "ro/inner", "ro/f2", "plain/f0", "plain/f1"):
            a, b = os.lstat(src / rel), os.lstat(dst / rel)
            assert stat.S_IMODE(a.st_mode) == stat.S_IMODE(b.st_mode), rel
            assert a.st_mtime_ns == b.st_mtime_ns, rel
    finally:
        for root in (src, dst):
            for p in [root, *root.rglob("*")]:
                if p.is_dir() and not p.is_symlink():
                    os.chmod(p, 0o755)


class RecordingStore:
    """A store wrapper that records each read (name, offset, length)."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.reads: list[tuple[str, int, int | None]] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        self.reads.append((name, offset, length))
        data: bytes = self.inner.get(name, offset, length)  # type: ignore[attr-defined]
        return data


def test_a_blob_shared_by_many_files_is_fetched_once(
    local_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(restorer, "BATCH_BLOBS", 2)  # the copies land in many batches
    src = tmp_path / "src"
    shared = os.urandom(100_000)
    for i in range(20):
        (src / f"d{i:02d}").mkdir(parents=True)
        (src / f"d{i:02d}" / "copy.bin").write_bytes(shared)
        (src / f"d{i:02d}" / "own.bin").write_bytes(os.urandom(5000))
    snap = Backup(local_repo, [str(src)], BackupOptions()).run()
    node = resolve(local_repo, snap, str(src / "d00" / "copy.bin"))
    loc = local_repo.lookup(node.content[0][0])
    assert loc is not None
    recording = RecordingStore(local_repo.store)
    local_repo.store = recording  # type: ignore[assignment]
    root = resolve(local_repo, snap, str(src))
    # one worker: each batch starts after the one before has written its copy
    assert Restorer(local_repo, workers=1).restore(root, os.fsencode(tmp_path / "dst")).errors == []
    assert_same_tree(src, tmp_path / "dst")
    covering = [
        r
        for r in recording.reads
        if r[2] is not None and r[1] <= loc.offset < r[1] + r[2] and r[0].endswith(loc.pack.hex())
    ]
    assert len(covering) == 1, recording.reads


def test_a_copy_that_changed_is_not_used(tmp_path: Path, local_repo: Repository) -> None:
    data = os.urandom(4096)
    blob_id = local_repo.key.blob_id(data)
    path = tmp_path / "restored"
    path.write_bytes(b"x" * 100 + data)
    copies = Copies(local_repo.key, entries=4)
    copies.remember(blob_id, os.fsencode(path), 100)
    assert copies.read(blob_id, len(data)) == data
    path.write_bytes(b"x" * 100 + b"y" + data[1:])
    assert copies.read(blob_id, len(data)) is None
    assert copies.read(blob_id, len(data)) is None  # forgotten
    for i in range(6):  # bounded: the oldest go first
        copies.remember(bytes([i]) * 32, b"/nowhere", 0)
    assert len(copies._where) == 4


def test_restoring_again_replaces_what_changed_in_the_target(
    local_repo: Repository, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    (src / "dir").mkdir(parents=True)
    (src / "dir" / "file").write_bytes(os.urandom(2000))
    (src / "was-file").write_bytes(b"content\n")
    (src / "was-dir").mkdir()
    (src / "was-dir" / "inner").write_bytes(b"inner\n")
    dst = tmp_path / "dst"
    assert snapshot_and_restore(local_repo, src, dst) == []
    shutil.rmtree(dst / "was-dir")
    (dst / "was-dir").write_bytes(b"now a file")
    (dst / "was-file").unlink()
    (dst / "was-file").mkdir()
    (dst / "was-file" / "junk").touch()
    (dst / "dir" / "file").unlink()
    os.symlink("/etc/hostname", dst / "dir" / "file")
    assert snapshot_and_restore(local_repo, src, dst) == []
    assert_same_tree(src, dst)


def test_iter_sealed_streams_a_run_reading_through_gaps(local_repo: Repository) -> None:
    pack = bytes(range(256)) * 64
    opened: list[tuple[str, int, int]] = []

    class Body:
        def __init__(self, data: bytes) -> None:
            self.data, self.pos = data, 0

        def read(self, n: int) -> bytes:
            out = self.data[self.pos : self.pos + n]
            assert len(out) == n
            self.pos += n
            return out

    class StreamingStore:
        location = "test"

        @contextmanager
        def open_range(self, name: str, offset: int, length: int) -> Iterator[Body]:
            opened.append((name, offset, length))
            yield Body(pack[offset : offset + length])

        def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
            raise AssertionError("a streaming store is not read whole")

    fetcher = BlobFetcher(StreamingStore(), local_repo.key, None)  # type: ignore[arg-type]
    pid = b"p" * 32
    spans = [(100, 50), (10, 20), (200, 1), (5000, 300)]  # out of order, with gaps
    located = [
        (bytes([i]) * 32, BlobLocation(BLOB_DATA, pid, o, n, n)) for i, (o, n) in enumerate(spans)
    ]
    got = {b: s for b, _, s in fetcher.iter_sealed(located)}
    assert got == {b: pack[loc.offset : loc.offset + loc.length] for b, loc in located}
    assert len(opened) == 1
    assert opened[0][1:] == (10, 5300 - 10)


def test_s3_range_reader_reads_exact_pieces(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    store = S3Store(f"s3://snapfs-range-{os.getpid()}/r")
    store.ensure_bucket()
    data = os.urandom(300_000)
    store.put("data/obj", data)
    with store.open_range("data/obj", 1000, 200_000) as body:
        assert body.read(10) == data[1000:1010]
        assert body.read(150_000) == data[1010:151_010]
        with pytest.raises(StoreError, match="past the requested range"):
            body.read(60_000)
        assert body.read(49_990) == data[151_010:201_000]
    with pytest.raises(StoreError), store.open_range("data/obj", 290_000, 20_000) as body:
        body.read(20_000)


def test_priority_pool_runs_the_smallest_key_first() -> None:
    pool = PriorityPool(1, "test")
    gate = threading.Event()
    ran: list[tuple[int, ...]] = []
    try:
        first = pool.submit((9,), gate.wait)  # holds the only thread while the rest queue
        while not first.running():
            time.sleep(0.001)
        keys = [(3, 1), (1,), (3,), (2, 5, 1), (1, 0)]
        futs = [pool.submit(k, lambda k=k: ran.append(k)) for k in keys]  # type: ignore[misc]
        gate.set()
        first.result()
        for f in futs:
            f.result()
        assert ran == sorted(keys)
        failing = pool.submit((0,), lambda: 1 // 0)
        with pytest.raises(ZeroDivisionError):
            failing.result()
    finally:
        pool.shutdown()
    with pytest.raises(RuntimeError):
        pool.submit((0,), lambda: None)
