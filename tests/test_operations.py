"""The pyfuse3 handlers awaited directly on a trio loop: no mount, no kernel.

Each test builds SnapfsOperations over a backup in a local repository inside its own
``trio.run``; what the kernel would see (attributes, bytes, errnos) is checked against
the source tree.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import stat
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# ImportError too: pyfuse3 installed without libfuse3 fails to load its extension.
pytest.importorskip(
    "pyfuse3", reason="pyfuse3 (and libfuse3) is not installed", exc_type=ImportError
)

import pyfuse3
import trio

from snapfs.cache import Cache
from snapfs.cache.lmdbstore import VFS_TABLES
from snapfs.errors import StoreError
from snapfs.mount import chunkcache
from snapfs.mount.chunkcache import ChunkCache
from snapfs.mount.offload import Limiters
from snapfs.mount.operations import (
    IMMUTABLE_TIMEOUT,
    LAYOUT_TIMEOUT,
    READDIR_PAGE,
    SnapfsOperations,
)
from snapfs.mount.pagecache import PageCache
from snapfs.repo.format import BlobLocation, pack_name
from snapfs.repo.repository import Repository
from snapfs.repo.snapshot import Snapshot
from snapfs.store import Store
from snapfs.vfs.filesystem import Details, Following, SnapshotFS
from snapfs.vfs.inodes import ROOT_INODE
from snapfs.vfs.layout import snapshot_names
from snapfs.writer.backup import Backup, BackupOptions

MiB = 1 << 20
BIG = 9 * MiB + 54321
MANY = 2 * READDIR_PAGE + 77  # more than two pages of one readdir call
CTX = pyfuse3.RequestContext()


# -- a counting store ------------------------------------------------------------------------


@dataclass
class CountingStore:
    """Delegates to a real store; counts pack reads and can fail the next few."""

    inner: Store
    pack_reads: list[str] = field(default_factory=list)
    fail_next: int = 0
    location: str = field(init=False)

    def __post_init__(self) -> None:
        self.location = self.inner.location

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if name.startswith("data/"):
            self.pack_reads.append(name)
            if self.fail_next:
                self.fail_next -= 1
                raise StoreError("the store is unreachable (injected)")
        return self.inner.get(name, offset, length)

    def put(self, name: str, data: bytes) -> None:
        self.inner.put(name, data)

    def delete(self, name: str) -> None:
        self.inner.delete(name)

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        return self.inner.list(prefix)

    def exists(self, name: str) -> bool:
        return self.inner.exists(name)


# -- a backup to serve ------------------------------------------------------------------------


@dataclass
class Backed:
    repo: Repository
    src: Path
    repo_dir: Path
    snap: Snapshot
    fs: SnapshotFS
    xattrs: bool

    @property
    def snap_name(self) -> bytes:
        names = {s.id: name for name, s in snapshot_names(self.repo.list_snapshots())}
        return names[self.snap.id]

    def fs_ino(self, path: Path) -> int:
        """The inode of an absolute source path, found through SnapshotFS directly."""
        snaps = self.fs.lookup(ROOT_INODE, b"snapshots")
        ino = self.fs.lookup(snaps.ino, self.snap_name).ino
        for comp in path.parts[1:]:
            ino = self.fs.lookup(ino, os.fsencode(comp)).ino
        return ino

    def chunks(self, rel: str) -> list[tuple[bytes, int]]:
        return self.fs.content(self.fs_ino(self.src / rel))


def make_source(root: Path) -> bool:
    rng = random.Random(23)
    (root / "sub").mkdir(parents=True)
    (root / "big.bin").write_bytes(rng.randbytes(BIG))
    (root / "small.txt").write_bytes(b"small file\n" * 10)
    (root / "empty").touch()
    (root / "sub" / "note.txt").write_bytes(b"note\n")
    os.chmod(root / "sub" / "note.txt", 0o640)
    os.symlink("sub/note.txt", root / "link")
    many = root / "many"
    many.mkdir()
    for i in range(MANY):
        (many / f"m{i:04d}").touch()
    (root / "seq").mkdir()
    for i in range(8):
        (root / "seq" / f"f{i}.txt").write_bytes(b"file %d\n" % i * (i + 1))
    try:
        os.setxattr(root / "sub" / "note.txt", "user.origin", b"snapfs test")
    except OSError as e:
        if e.errno not in (errno.ENOTSUP, errno.EPERM):
            raise
        return False
    return True


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bool]:
    """Made once: creating its files costs more than backing them up. No test changes it."""
    src = tmp_path_factory.mktemp("ops") / "src"
    src.mkdir()
    return src, make_source(src)


@pytest.fixture
def backed(local_repo: Repository, tmp_path: Path, source: tuple[Path, bool]) -> Iterator[Backed]:
    src, xattr_ok = source
    job = Backup(local_repo, [str(src)], BackupOptions(host="testhost"))
    snap = job.run()
    assert job.warnings == []
    cache = Cache(tmp_path / "vfs", tables=VFS_TABLES, durable=False)
    try:
        yield Backed(
            local_repo, src, tmp_path / "repo", snap, SnapshotFS(local_repo, cache), xattr_ok
        )
    finally:
        cache.close()


def make_ops(b: Backed, max_bytes: int = 64 * MiB) -> SnapfsOperations:
    """Build the handlers the way lifecycle.serve does (call inside trio.run)."""
    limiters = Limiters.create()
    return SnapfsOperations(b.fs, ChunkCache(b.repo, limiters, max_bytes), limiters)


def run(test: Callable[[], Awaitable[None]]) -> None:
    trio.run(test)


async def walk(ops: SnapfsOperations, b: Backed, path: Path) -> pyfuse3.EntryAttributes:
    """Look up an absolute source path inside the snapshot, one component at a time."""
    attr = await ops.lookup(ROOT_INODE, b"snapshots", CTX)
    attr = await ops.lookup(attr.st_ino, b.snap_name, CTX)
    for comp in path.parts[1:]:
        attr = await ops.lookup(attr.st_ino, os.fsencode(comp), CTX)
    return attr


async def walk_from(ops: SnapfsOperations, ino: int, path: Path) -> pyfuse3.EntryAttributes:
    attr = await ops.getattr(ino, CTX)
    for comp in path.parts[1:]:
        attr = await ops.lookup(attr.st_ino, os.fsencode(comp), CTX)
    return attr


async def names_in(ops: SnapfsOperations, ino: int) -> list[bytes]:
    return [name for name, _, _ in ops.fs.readdir(ino, 0, 10_000)]


def assert_errno(err: pytest.ExceptionInfo[pyfuse3.FUSEError], code: int) -> None:
    assert err.value.errno == code, f"errno {err.value.errno}, expected {code}"


# -- attributes ---------------------------------------------------------------------------------


def test_lookup_and_getattr_match_the_source(backed: Backed) -> None:
    b = backed

    async def main() -> None:
        ops = make_ops(b)
        top = await walk(ops, b, b.src)
        assert stat.S_ISDIR(top.st_mode)
        for rel in ("big.bin", "small.txt", "empty", "sub", "sub/note.txt", "link", "many"):
            path = b.src / rel
            st_ = path.lstat()
            e = await walk(ops, b, path)
            g = await ops.getattr(e.st_ino, CTX)
            for attrs in (e, g):
                assert attrs.st_ino == b.fs_ino(path), rel
                assert attrs.st_mode == st_.st_mode, rel
                assert (attrs.st_uid, attrs.st_gid) == (st_.st_uid, st_.st_gid), rel
                assert attrs.st_mtime_ns == st_.st_mtime_ns, rel
                if not stat.S_ISDIR(st_.st_mode):
                    assert attrs.st_size == st_.st_size, rel
                    assert attrs.st_nlink == st_.st_nlink, rel
                assert attrs.st_blocks == (attrs.st_size + 511) // 512
                assert attrs.entry_timeout == attrs.attr_timeout == IMMUTABLE_TIMEOUT
        link = await walk(ops, b, b.src / "link")
        assert await ops.readlink(link.st_ino, CTX) == b"sub/note.txt"
        assert link.st_size == len(b"sub/note.txt")

        root = await ops.getattr(ROOT_INODE, CTX)
        assert root.st_mode == stat.S_IFDIR | 0o555
        assert root.st_ino == ROOT_INODE
        assert root.attr_timeout == LAYOUT_TIMEOUT
        latest = await ops.lookup(ROOT_INODE, b"latest", CTX)
        assert latest.st_mode == stat.S_IFDIR | 0o555
        assert latest.entry_timeout == LAYOUT_TIMEOUT
        snaps = await ops.lookup(ROOT_INODE, b"snapshots", CTX)
        same = await ops.lookup(snaps.st_ino, b.snap_name, CTX)
        assert latest.st_ino != same.st_ino  # a view of its own, not a directory alias
        assert await names_in(ops, latest.st_ino) == await names_in(ops, same.st_ino)

        assert isinstance(await ops.opendir(top.st_ino, CTX), int)  # a handle for readdir
        small = await walk(ops, b, b.src / "small.txt")
        with pytest.raises(pyfuse3.FUSEError) as err:
            await ops.opendir(small.st_ino, CTX)
        assert_errno(err, errno.ENOTDIR)
        statfs = await ops.statfs(CTX)
        assert statfs.f_namemax == 255

    run(main)


def test_lookup_of_a_missing_name_is_enoent(backed: Backed) -> None:
    b = backed

    async def main() -> None:
        ops = make_ops(b)
        top = await walk(ops, b, b.src)
        small = await walk(ops, b, b.src / "small.txt")
        for parent, name in (
            (top.st_ino, b"missing"),
            (top.st_ino, b"SMALL.TXT"),
            (ROOT_INODE, b"nothing"),
            (small.st_ino, b"x"),  # a file has no entries
        ):
            with pytest.raises(pyfuse3.FUSEError) as err:
                await ops.lookup(parent, name, CTX)
            assert_errno(err, errno.ENOENT)
        with pytest.raises(pyfuse3.FUSEError) as err:
            await ops.getattr(424242, CTX)  # an inode never handed out
        assert_errno(err, errno.ENOENT)
        with pytest.raises(pyfuse3.FUSEError) as err:
            await ops.readlink(small.st_ino, CTX)
        assert_errno(err, errno.ENOENT)

    run(main)


def test_xattrs(backed: Backed) -> None:
    b = backed

    async def main() -> None:
        ops = make_ops(b)
        note = await walk(ops, b, b.src / "sub" / "note.txt")
        small = await walk(ops, b, b.src / "small.txt")
        for ino in (note.st_ino, small.st_ino, ROOT_INODE):
            with pytest.raises(pyfuse3.FUSEError) as err:
                await ops.getxattr(ino, b"user.missing", CTX)
            assert_errno(err, errno.ENODATA)
        if b.xattrs:
            assert await ops.getxattr(note.st_ino, b"user.origin", CTX) == b"snapfs test"
            assert b"user.origin" in await ops.listxattr(note.st_ino, CTX)
        assert await ops.listxattr(ROOT_INODE, CTX) == []

    run(main)


async def read_all_pages(
    ops: SnapfsOperations, ino: int, monkeypatch: pytest.MonkeyPatch, capacity: int
) -> list[tuple[bytes, int, int]]:
    """What the kernel would collect by calling readdir until it gets nothing new, with a
    reply buffer that holds ``capacity`` entries per call."""
    got: list[tuple[bytes, int, int]] = []
    per_call: list[int] = []

    def reply(token: object, name: bytes, attr: pyfuse3.EntryAttributes, next_id: int) -> bool:
        if per_call[-1] >= capacity:
            return False
        per_call[-1] += 1
        got.append((name, attr.st_ino, next_id))
        return True

    monkeypatch.setattr(pyfuse3, "readdir_reply", reply)
    fh = await ops.opendir(ino, CTX)
    start = 0
    while True:
        per_call.append(0)
        await ops.readdir(fh, start, pyfuse3.ReaddirToken())
        if per_call[-1] == 0:
            break
        assert got[-1][2] > start, "readdir must make progress"
        start = got[-1][2]
    await ops.releasedir(fh)
    return got


def test_readdir_returns_every_entry_once(backed: Backed, monkeypatch: pytest.MonkeyPatch) -> None:
    b = backed

    async def main() -> None:
        for capacity in (100, READDIR_PAGE, 10_000):
            await check(capacity)

    async def check(capacity: int) -> None:
        ops = make_ops(b)
        many = await walk(ops, b, b.src / "many")
        got = await read_all_pages(ops, many.st_ino, monkeypatch, capacity)
        names = [n for n, _, _ in got]
        assert names == sorted(os.fsencode(n) for n in os.listdir(b.src / "many"))
        assert len(names) == MANY
        for name, ino, _ in got[:: MANY // 9]:
            assert (await ops.lookup(many.st_ino, name, CTX)).st_ino == ino
        top = await read_all_pages(ops, ROOT_INODE, monkeypatch, capacity)
        assert [n for n, _, _ in top] == [b"hosts", b"ids", b"latest", b"snapshots", b"tags"]

    run(main)


def test_a_new_snapshot_shows_up_in_the_layout(
    backed: Backed, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = backed
    fs = SnapshotFS(b.repo, b.fs.cache, layout_ttl=0)

    async def main() -> None:
        limiters = Limiters.create()
        ops = SnapfsOperations(fs, ChunkCache(b.repo, limiters, 16 * MiB), limiters)
        old_latest = await ops.lookup(ROOT_INODE, b"latest", CTX)
        old_file = await walk_from(ops, old_latest.st_ino, b.src / "small.txt")
        snaps = await ops.lookup(ROOT_INODE, b"snapshots", CTX)
        assert [n for n, _, _ in await read_all_pages(ops, snaps.st_ino, monkeypatch, 10)] == [
            b.snap_name
        ]

        job = Backup(b.repo, [str(b.src)], BackupOptions(host="otherhost"))
        new = await trio.to_thread.run_sync(job.run)
        names = {s.id: n for n, s in snapshot_names(b.repo.list_snapshots())}

        listed = await read_all_pages(ops, snaps.st_ino, monkeypatch, 10)
        assert [n for n, _, _ in listed] == sorted(names.values())
        latest = await ops.lookup(ROOT_INODE, b"latest", CTX)
        assert latest.st_ino == (await ops.lookup(ROOT_INODE, b"latest", CTX)).st_ino
        assert latest.st_ino != old_latest.st_ino  # the name moved: no stale kernel cache
        assert latest.st_mtime_ns == new.time_ns
        new_file = await walk_from(ops, latest.st_ino, b.src / "small.txt")
        assert new_file.st_ino != old_file.st_ino
        # a process still inside the old view goes on reading it
        again = await walk_from(ops, old_latest.st_ino, b.src / "small.txt")
        assert again.st_ino == old_file.st_ino
        assert (await ops.getattr(old_latest.st_ino, CTX)).st_mtime_ns == b.snap.time_ns
        hosts = await ops.lookup(ROOT_INODE, b"hosts", CTX)
        other = await ops.lookup(hosts.st_ino, b"otherhost", CTX)
        assert stat.S_ISDIR(other.st_mode)
        new_root = await ops.lookup(snaps.st_ino, names[new.id], CTX)
        assert new_root.entry_timeout == IMMUTABLE_TIMEOUT

    run(main)


# -- reading ----------------------------------------------------------------------------------


def test_open_for_writing_is_erofs(backed: Backed) -> None:
    b = backed

    async def main() -> None:
        ops = make_ops(b)
        small = await walk(ops, b, b.src / "small.txt")
        for flags in (
            os.O_WRONLY,
            os.O_RDWR,
            os.O_RDONLY | os.O_TRUNC,
            os.O_WRONLY | os.O_APPEND,
            os.O_RDWR | os.O_CREAT,
        ):
            with pytest.raises(pyfuse3.FUSEError) as err:
                await ops.open(small.st_ino, flags, CTX)
            assert_errno(err, errno.EROFS)
        fi = await ops.open(small.st_ino, os.O_RDONLY, CTX)
        assert await ops.read(fi.fh, 0, 4096) == (b.src / "small.txt").read_bytes()
        await ops.release(fi.fh)

    run(main)


def test_reads_return_the_right_bytes(backed: Backed) -> None:
    b = backed
    data = (b.src / "big.bin").read_bytes()
    sizes = [n for _, n in b.chunks("big.bin")]
    assert len(sizes) >= 3, "the big file should span several chunks"
    boundaries = [sum(sizes[:i]) for i in range(1, len(sizes))]
    ranges = [(0, 1), (0, 4096), (0, BIG), (1, BIG), (BIG - 5, 100), (BIG - 1, 1)]
    for edge in boundaries:
        ranges += [(edge - 1, 2), (edge, 1), (edge - 1, 1), (edge - 100_000, 300_000)]
    ranges += [(boundaries[0] - 10, boundaries[1] - boundaries[0] + 20)]  # three chunks
    rng = random.Random(1)
    ranges += [(rng.randrange(BIG), rng.choice([1, 4096, 131072, 3 * MiB])) for _ in range(40)]

    async def main() -> None:
        ops = make_ops(b)
        big = await walk(ops, b, b.src / "big.bin")
        fi = await ops.open(big.st_ino, os.O_RDONLY, CTX)
        for off, size in ranges:
            assert await ops.read(fi.fh, off, size) == data[off : off + size], (off, size)
        for off in (BIG, BIG + 1, BIG + 10 * MiB):
            assert await ops.read(fi.fh, off, 4096) == b""
        assert await ops.read(fi.fh, 0, 0) == b""
        await ops.release(fi.fh)

        empty = await walk(ops, b, b.src / "empty")
        fi = await ops.open(empty.st_ino, os.O_RDONLY, CTX)
        assert await ops.read(fi.fh, 0, 4096) == b""
        await ops.release(fi.fh)

    run(main)


def test_sequential_reads_with_prefetch(backed: Backed) -> None:
    b = backed
    data = (b.src / "big.bin").read_bytes()

    async def main() -> None:
        ops = make_ops(b)
        big = await walk(ops, b, b.src / "big.bin")
        async with trio.open_nursery() as nursery:
            ops.nursery = nursery
            fi = await ops.open(big.st_ino, os.O_RDONLY, CTX)
            parts = []
            for off in range(0, BIG, 128 * 1024):
                parts.append(await ops.read(fi.fh, off, 128 * 1024))
            await ops.release(fi.fh)
        assert b"".join(parts) == data

    run(main)


@dataclass
class FakeKernel:
    """The kernel's side of NOTIFY_STORE: it takes pages only for inodes a listing
    has introduced, and ENOENT otherwise."""

    known: set[int] = field(default_factory=set)
    pages: dict[int, bytes] = field(default_factory=dict)
    refused: list[int] = field(default_factory=list)

    def store(self, ino: int, offset: int, data: bytes) -> None:
        if ino not in self.known:
            self.refused.append(ino)
            raise OSError(errno.ENOENT, "unknown inode")
        assert offset == 0
        self.pages[ino] = data


async def list_into(
    kernel: FakeKernel, ops: SnapfsOperations, ino: int, monkeypatch: pytest.MonkeyPatch
) -> dict[bytes, int]:
    entries = await read_all_pages(ops, ino, monkeypatch, capacity=3)
    kernel.known |= {child for _, child, _ in entries}
    return {name: child for name, child, _ in entries}


async def eventually(check: Callable[[], bool], seconds: float = 10) -> None:
    for _ in range(int(seconds * 100)):
        if check():
            return
        await trio.sleep(0.01)
    raise AssertionError(f"not so after {seconds} s")


def test_subdirectories_are_listed_ahead_and_answered_without_a_thread_hop(
    backed: Backed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listing a directory lists its subdirectories in the background; listing one of
    them then gives the same entries, page by page, without calling into SnapshotFS."""
    b = backed

    async def main() -> None:
        ops = make_ops(b)
        root = await walk(ops, b, b.src)
        async with trio.open_nursery() as nursery:
            ops.nursery = nursery
            top = {
                name: ino for name, ino, _ in await read_all_pages(ops, root.st_ino, monkeypatch, 5)
            }
            expected = [(n, d.attr.ino) for n, d, _ in b.fs.readdir_details(top[b"seq"], 0, 100)]
            await eventually(lambda: ops._listing(top[b"seq"]) is not None)
            calls: list[int] = []
            real = b.fs.readdir_details

            def counted(ino: int, start: int, limit: int) -> list[tuple[bytes, Details, int]]:
                calls.append(ino)
                return real(ino, start, limit)

            monkeypatch.setattr(b.fs, "readdir_details", counted)
            got = await read_all_pages(ops, top[b"seq"], monkeypatch, capacity=3)
            assert [(n, ino) for n, ino, _ in got] == expected
            assert top[b"seq"] not in calls
            nursery.cancel_scope.cancel()

    run(main)


def test_files_opened_or_stored_before_are_not_fetched_again(backed: Backed) -> None:
    """A second ``cp -r`` of a tree: the kernel has the files (stored, or read when
    opened), so a read-ahead walk over them offers nothing and fetches nothing."""
    b = backed
    kernel = FakeKernel()
    files = [Following(ino, ROOT_INODE, 1, [(bytes(32), 1)]) for ino in (11, 12, 13)]

    async def main() -> None:
        limiters = Limiters.create()
        pages = PageCache(ChunkCache(b.repo, limiters, MiB), limiters.pages, kernel.store)
        pages.seen(12)
        assert pages.offer(files) == [files[0], files[2]]
        pages.seen(11)
        pages.seen(13)
        assert pages.offer(files) == []

    run(main)


def test_files_after_an_opened_one_go_to_the_page_cache_once_listed(
    backed: Backed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cp -r`` opens seq/f0: the rest of seq and the files after it are fetched and
    handed to the kernel, each once it knows the inode (its directory was listed), byte
    for byte; the opened file itself is the kernel's to read."""
    b = backed
    kernel = FakeKernel()

    async def main() -> None:
        limiters = Limiters.create()
        ops = SnapfsOperations(b.fs, ChunkCache(b.repo, limiters, 64 * MiB), limiters, kernel.store)
        root = await walk(ops, b, b.src)
        async with trio.open_nursery() as nursery:
            ops.nursery = nursery
            top = await list_into(kernel, ops, root.st_ino, monkeypatch)
            seq = await list_into(kernel, ops, top[b"seq"], monkeypatch)
            fi = await ops.open(seq[b"f0.txt"], os.O_RDONLY, CTX)
            following = {seq[b"f%d.txt" % i]: b.src / "seq" / f"f{i}.txt" for i in range(1, 8)}
            following[top[b"small.txt"]] = b.src / "small.txt"
            await eventually(lambda: set(kernel.pages) >= set(following))
            await eventually(lambda: len(kernel.refused) > 0)  # sub/note.txt: not listed
            assert set(kernel.pages) == set(following)
            for ino, path in following.items():
                assert kernel.pages[ino] == path.read_bytes()
            sub = await list_into(kernel, ops, top[b"sub"], monkeypatch)
            await eventually(lambda: sub[b"note.txt"] in kernel.pages)
            assert kernel.pages[sub[b"note.txt"]] == (b.src / "sub" / "note.txt").read_bytes()
            assert seq[b"f0.txt"] not in kernel.pages
            assert await ops.read(fi.fh, 0, 4096) == (b.src / "seq" / "f0.txt").read_bytes()
            await ops.release(fi.fh)
            nursery.cancel_scope.cancel()

    run(main)


def test_a_corrupt_chunk_reads_as_eio(backed: Backed, caplog: pytest.LogCaptureFixture) -> None:
    b = backed
    data = (b.src / "big.bin").read_bytes()
    chunks = b.chunks("big.bin")
    starts = [sum(n for _, n in chunks[:i]) for i in range(len(chunks))]
    victim, victim_size = chunks[1]
    corrupt_blob(b, victim)

    async def main() -> None:
        ops = make_ops(b)
        big = await walk(ops, b, b.src / "big.bin")
        fi = await ops.open(big.st_ino, os.O_RDONLY, CTX)
        first_end = starts[1]
        assert await ops.read(fi.fh, 0, 4096) == data[:4096]  # chunk 0 is fine
        for off, size in (
            (starts[1], 4096),
            (starts[1] + victim_size - 1, 1),
            (first_end - 10, 20),  # spans the good and the bad chunk
            (0, BIG),
            (starts[1], 4096),  # again: a failure is not cached as data
        ):
            with pytest.raises(pyfuse3.FUSEError) as err:
                await ops.read(fi.fh, off, size)
            assert_errno(err, errno.EIO)
        if len(chunks) > 2:
            off = starts[2]
            assert await ops.read(fi.fh, off, 4096) == data[off : off + 4096]
        # A sequential reader with prefetch: the failed prefetch is not an error of its
        # own; the read that needs the chunk reports EIO.
        async with trio.open_nursery() as nursery:
            ops.nursery = nursery
            fi2 = await ops.open(big.st_ino, os.O_RDONLY, CTX)
            assert await ops.read(fi2.fh, 0, 4096) == data[:4096]
            with pytest.raises(pyfuse3.FUSEError) as err:
                await ops.read(fi2.fh, starts[1], 4096)
            assert_errno(err, errno.EIO)
        await ops.release(fi.fh)
        await ops.release(fi2.fh)

    with caplog.at_level(logging.ERROR, logger="snapfs.mount.operations"):
        run(main)
    messages = [r.getMessage() for r in caplog.records if r.name == "snapfs.mount.operations"]
    assert messages
    for message in messages:
        assert f"snapshot {b.snap_name.decode()}: {b.src / 'big.bin'}" in message


def corrupt_blob(b: Backed, blob_id: bytes) -> None:
    """Flip one byte in the middle of a blob, in its pack file."""
    loc = b.repo.lookup(blob_id)
    assert loc is not None
    with open(b.repo_dir / pack_name(loc.pack), "r+b") as f:
        f.seek(loc.offset + loc.length // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x01]))


def test_a_corrupt_small_file_found_by_prefetch_reads_as_eio(backed: Backed) -> None:
    """Opening one file prefetches the files after it in its directory, several chunks in
    one ranged read: a bad one among them is EIO, its neighbours are fine."""
    b = backed
    seq = b.src / "seq"
    victim = b.chunks("seq/f3.txt")
    assert len(victim) == 1
    corrupt_blob(b, victim[0][0])

    async def main() -> None:
        ops = make_ops(b)
        async with trio.open_nursery() as nursery:
            ops.nursery = nursery
            first = await walk(ops, b, seq / "f0.txt")
            fi = await ops.open(first.st_ino, os.O_RDONLY, CTX)  # prefetches f1.. onwards
            assert await ops.read(fi.fh, 0, 4096) == (seq / "f0.txt").read_bytes()
            for i in range(1, 8):
                attr = await walk(ops, b, seq / f"f{i}.txt")
                fi = await ops.open(attr.st_ino, os.O_RDONLY, CTX)
                if i == 3:
                    with pytest.raises(pyfuse3.FUSEError) as err:
                        await ops.read(fi.fh, 0, 4096)
                    assert_errno(err, errno.EIO)
                else:
                    assert await ops.read(fi.fh, 0, 4096) == (seq / f"f{i}.txt").read_bytes()
                await ops.release(fi.fh)

    run(main)


def test_prefetch_in_slices_fills_the_cache_and_leaves_no_flight(
    backed: Backed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Following files are fetched in several small slices at once; every chunk ends up
    cached, and a read of one of them needs no fetch of its own."""
    b = backed
    seq = b.src / "seq"
    ids = [c for i in range(8) for c, _ in b.chunks(f"seq/f{i}.txt")]
    monkeypatch.setattr(chunkcache, "PREFETCH_SLICE", 1)  # one chunk per slice

    async def main() -> None:
        ops = make_ops(b)
        await ops.cache.prefetch(ids, 64 * MiB)
        assert not ops.cache._flights
        assert all(ops.cache.peek(i) is not None for i in ids)
        calls: list[bytes] = []
        monkeypatch.setattr(ops.cache, "_fetch", calls.append)
        attr = await walk(ops, b, seq / "f5.txt")
        fi = await ops.open(attr.st_ino, os.O_RDONLY, CTX)
        assert await ops.read(fi.fh, 0, 4096) == (seq / "f5.txt").read_bytes()
        assert calls == []

    run(main)


def test_slices_keep_the_order_and_cut_by_stored_bytes() -> None:
    loc = BlobLocation(0, b"p" * 32, 0, 300, 300)
    items = [(bytes([i]) * 32, loc) for i in range(7)]
    parts = chunkcache._slices(items, 1000)
    assert [len(p) for p in parts] == [4, 3]
    assert [x for p in parts for x in p] == items


# -- every write is EROFS -----------------------------------------------------------------------


def test_every_write_handler_is_erofs(backed: Backed) -> None:
    b = backed

    async def main() -> None:
        ops = make_ops(b)
        top = await walk(ops, b, b.src)
        sub = await walk(ops, b, b.src / "sub")
        note = await walk(ops, b, b.src / "sub" / "note.txt")
        fi = await ops.open(note.st_ino, os.O_RDONLY, CTX)
        d, f = top.st_ino, note.st_ino
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "setattr": lambda: ops.setattr(
                f, pyfuse3.EntryAttributes(), pyfuse3.SetattrFields(), None, CTX
            ),
            "setattr with fh": lambda: ops.setattr(
                f, pyfuse3.EntryAttributes(), pyfuse3.SetattrFields(), fi.fh, CTX
            ),
            "mknod": lambda: ops.mknod(d, b"fifo", stat.S_IFIFO | 0o644, 0, CTX),
            "mkdir": lambda: ops.mkdir(d, b"newdir", 0o755, CTX),
            "unlink": lambda: ops.unlink(d, b"small.txt", CTX),
            "unlink missing": lambda: ops.unlink(d, b"missing", CTX),
            "rmdir": lambda: ops.rmdir(d, b"sub", CTX),
            "symlink": lambda: ops.symlink(d, b"newlink", b"small.txt", CTX),
            "rename": lambda: ops.rename(d, b"small.txt", sub.st_ino, b"moved", 0, CTX),
            "link": lambda: ops.link(f, d, b"newhard", CTX),
            "write": lambda: ops.write(fi.fh, 0, b"data"),
            "create": lambda: ops.create(d, b"new", 0o644, os.O_WRONLY | os.O_CREAT, CTX),
            "setxattr": lambda: ops.setxattr(f, b"user.x", b"y", CTX),
            "removexattr": lambda: ops.removexattr(f, b"user.origin", CTX),
        }
        for what, call in calls.items():
            with pytest.raises(pyfuse3.FUSEError) as err:
                await call()
            assert err.value.errno == errno.EROFS, what
        await ops.release(fi.fh)
        # Nothing changed.
        assert await ops.read((await ops.open(f, os.O_RDONLY, CTX)).fh, 0, 100) == b"note\n"

    run(main)


# -- the chunk cache ------------------------------------------------------------------------------


def test_concurrent_gets_of_one_blob_read_the_store_once(backed: Backed) -> None:
    b = backed
    chunks = b.chunks("big.bin")  # reads trees: before the store is counted
    blob_id = chunks[0][0]
    counting = CountingStore(b.repo.store)
    b.repo.store = counting

    async def main() -> None:
        limiters = Limiters.create()
        cache = ChunkCache(b.repo, limiters, 64 * MiB)
        results: list[bytes] = []

        async def get() -> None:
            results.append(await cache.get(blob_id))

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(get)
        assert len(counting.pack_reads) == 1
        assert len(results) == 5
        assert all(r is results[0] for r in results)
        assert len(results[0]) == chunks[0][1]
        assert await cache.get(blob_id) is results[0]  # from the LRU: no read
        assert len(counting.pack_reads) == 1

    run(main)
    assert b.repo.read_blob(blob_id) == (b.src / "big.bin").read_bytes()[: chunks[0][1]]


def test_a_failed_fetch_is_not_cached(backed: Backed) -> None:
    b = backed
    chunks = b.chunks("big.bin")
    (blob_id, _), (other_id, _) = chunks[:2]
    expected, other = b.repo.read_blob(blob_id), b.repo.read_blob(other_id)
    counting = CountingStore(b.repo.store, fail_next=1)
    b.repo.store = counting

    async def main() -> None:
        cache = ChunkCache(b.repo, Limiters.create(), 64 * MiB)
        with pytest.raises(StoreError):
            await cache.get(blob_id)
        assert not cache.cached(blob_id)
        assert cache.size == 0
        assert await cache.get(blob_id) == expected  # the store came back
        assert len(counting.pack_reads) == 2
        assert cache.cached(blob_id)

        # Readers waiting on a fetch that fails get the error or, if they try again
        # themselves, the data; never anything else, and nothing bad stays cached.
        counting.fail_next = 1
        outcomes: list[bytes | StoreError] = []

        async def get() -> None:
            try:
                outcomes.append(await cache.get(other_id))
            except StoreError as e:
                outcomes.append(e)

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(get)
        assert len(outcomes) == 3
        assert isinstance(outcomes[0], StoreError)
        assert all(isinstance(o, StoreError) or o == other for o in outcomes)
        assert await cache.get(other_id) == other

    run(main)


def test_a_store_error_reads_as_eio(backed: Backed) -> None:
    b = backed
    counting = CountingStore(b.repo.store)
    b.repo.store = counting

    async def main() -> None:
        ops = make_ops(b)
        small = await walk(ops, b, b.src / "small.txt")
        fi = await ops.open(small.st_ino, os.O_RDONLY, CTX)
        counting.fail_next = 1
        with pytest.raises(pyfuse3.FUSEError) as err:
            await ops.read(fi.fh, 0, 100)
        assert_errno(err, errno.EIO)
        assert await ops.read(fi.fh, 0, 11) == b"small file\n"

    run(main)


def test_the_chunk_cache_never_holds_more_than_max_bytes(backed: Backed) -> None:
    b = backed
    chunks = b.chunks("big.bin")
    file_data = (b.src / "big.bin").read_bytes()
    expected, pos = {}, 0
    for blob_id, n in chunks:
        expected[blob_id] = file_data[pos : pos + n]
        pos += n
    counting = CountingStore(b.repo.store)
    b.repo.store = counting
    order = [c for c, _ in chunks] * 2 + [chunks[0][0], chunks[0][0], chunks[-1][0]]
    largest = max(n for _, n in chunks)

    def held(cache: ChunkCache) -> int:
        return sum(len(v) for v in cache._lru.values())

    async def main() -> None:
        for max_bytes in (largest // 2, largest, int(largest * 2.5)):
            cache = ChunkCache(b.repo, Limiters.create(), max_bytes)
            for blob_id in order:
                before = len(counting.pack_reads)
                was_cached = cache.cached(blob_id)
                data = await cache.get(blob_id)
                assert data == expected[blob_id]
                assert (len(counting.pack_reads) == before) == was_cached
                assert cache.size == held(cache) <= max_bytes
                # The chunk just read stays cached unless it alone is over the budget.
                assert cache.cached(blob_id) == (len(data) <= max_bytes)
            # Concurrent gets of every chunk at once stay within the budget too.
            async with trio.open_nursery() as nursery:
                for blob_id, _ in chunks:
                    nursery.start_soon(cache.get, blob_id)
            assert cache.size == held(cache) <= max_bytes

    run(main)
