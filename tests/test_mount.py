"""Real FUSE mounts of a repository: what is mounted equals what was backed up."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import mmap
import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from snapfs.cli.mounting import OpeningThread
from snapfs.errors import WrongPassword
from snapfs.mount.lifecycle import mounted_fuse
from snapfs.repo.config import RepoConfig
from snapfs.repo.format import pack_name
from snapfs.repo.repository import Repository, init_repository
from snapfs.store.local import LocalStore
from snapfs.store.memory import MemoryStore
from snapfs.vfs.paths import resolve
from tests.conftest import FAST_KDF, PASSWORD, Cli
from tests.mounts import mounted, skip_without_fuse, unmount
from tests.test_cli import one_line_error
from tests.trees import assert_same_tree

BIG = 12 << 20
LIBC = ctypes.CDLL(None, use_errno=True)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "docs" / "deep").mkdir(parents=True)
    rnd = random.Random(7)
    (root / "big.bin").write_bytes(rnd.randbytes(BIG))
    for i in range(60):
        (root / "docs" / f"note{i}.txt").write_text(f"note {i}\n" * (i * 40 + 1))
    (root / "docs" / "deep" / "ünï.txt").write_text("unicode\n")
    (root / "empty").touch()
    os.symlink("docs/note1.txt", root / "link")
    os.link(root / "docs" / "note2.txt", root / "hard")
    os.mkfifo(root / "fifo")
    os.chmod(root / "docs" / "note3.txt", 0o600)
    with contextlib.suppress(OSError):  # no user xattrs here: the rest is still compared
        os.setxattr(root / "docs" / "note4.txt", "user.origin", b"snapfs test")
    return root


@pytest.fixture
def snapshot_dir(cli: Cli, src: Path, tmp_path: Path) -> Iterator[Path]:
    """A mounted repository holding one snapshot of ``src``; yields the source's path
    inside the mount."""
    cli.ok("init")
    cli.ok("snapshot", str(src), "--tag", "t1")
    with mounted(cli.env, tmp_path / "mnt"):
        (name,) = os.listdir(tmp_path / "mnt" / "snapshots")
        yield tmp_path / "mnt" / "snapshots" / name / str(src).lstrip("/")


def test_mounted_tree_equals_its_source(snapshot_dir: Path, src: Path) -> None:
    assert_same_tree(src, snapshot_dir)
    assert os.stat(snapshot_dir / "hard").st_ino == os.stat(snapshot_dir / "docs/note2.txt").st_ino
    assert os.stat(snapshot_dir / "link", follow_symlinks=False).st_size == len("docs/note1.txt")
    assert os.stat(snapshot_dir / "big.bin").st_blocks == (BIG + 511) // 512


def test_cp_a_out_of_the_mount_equals_the_source(
    snapshot_dir: Path, src: Path, tmp_path: Path
) -> None:
    subprocess.run(["cp", "-a", str(snapshot_dir), str(tmp_path / "copy")], check=True)
    assert_same_tree(src, tmp_path / "copy")


def resident(path: Path) -> bool:
    """Whether every page of the file is in the kernel's page cache (mincore on a
    mapping, which reads nothing)."""
    size = path.stat().st_size
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) as m:
        vec = (ctypes.c_ubyte * pages)()
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        if LIBC.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(size), vec) != 0:
            raise OSError(ctypes.get_errno(), "mincore failed")
        result = all(v & 1 for v in vec)
        del addr  # no export of m may outlive it
    return result


def test_files_after_an_opened_one_are_in_the_page_cache_before_they_are_read(
    cli: Cli, src: Path, tmp_path: Path
) -> None:
    """What makes ``cp -r`` fast: opening docs/note0.txt puts the files listed after it
    into the kernel's page cache, so reading them asks the mount for nothing. (The test
    waits for the read-ahead to have found them: a file opened before that is left to
    the kernel's own READ, and checking residency opens the file.)"""
    cli.ok("init")
    cli.ok("snapshot", str(src))
    mnt = tmp_path / "mnt"
    with mounted(cli.env | {"SNAPFS_DEBUG": "1"}, mnt):
        (name,) = os.listdir(mnt / "snapshots")
        docs = mnt / "snapshots" / name / str(src).lstrip("/") / "docs"
        names = sorted(n for n in os.listdir(docs) if (src / "docs" / n).is_file())
        assert (docs / names[0]).read_bytes() == (src / "docs" / names[0]).read_bytes()
        log = tmp_path / "mnt.log"
        deadline = time.monotonic() + 20
        while "read ahead: " not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.02)
        rest = [docs / n for n in names[1:]]
        while not all(resident(p) for p in rest):
            assert time.monotonic() < deadline, [p.name for p in rest if not resident(p)]
            time.sleep(0.05)
        for p in rest:
            assert p.read_bytes() == (src / "docs" / p.name).read_bytes()


def test_random_preads_on_a_large_file(snapshot_dir: Path, src: Path) -> None:
    expected = (src / "big.bin").read_bytes()
    rnd = random.Random(3)
    fd = os.open(snapshot_dir / "big.bin", os.O_RDONLY)
    try:
        for _ in range(200):
            off = rnd.randrange(0, BIG + 1000)
            size = rnd.choice([1, 17, 4096, 131072, 3 << 20])
            assert os.pread(fd, size, off) == expected[off : off + size]
    finally:
        os.close(fd)


def test_eight_threads_read_different_files(snapshot_dir: Path, src: Path) -> None:
    names = [f"docs/note{i}.txt" for i in range(0, 60, 8)] + ["big.bin"]

    def same(name: str) -> bool:
        return (snapshot_dir / name).read_bytes() == (src / name).read_bytes()

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(same, names))


WRITES: dict[str, Callable[[Path], object]] = {
    "create": lambda d: open(d / "new", "w"),  # noqa: SIM115
    "open for writing": lambda d: os.open(d / "empty", os.O_WRONLY),
    "truncate": lambda d: os.truncate(d / "big.bin", 0),
    "unlink": lambda d: os.unlink(d / "empty"),
    "mkdir": lambda d: os.mkdir(d / "newdir"),
    "rmdir": lambda d: os.rmdir(d / "docs" / "deep"),
    "rename": lambda d: os.rename(d / "empty", d / "moved"),
    "symlink": lambda d: os.symlink("x", d / "newlink"),
    "hardlink": lambda d: os.link(d / "empty", d / "newhard"),
    "chmod": lambda d: os.chmod(d / "empty", 0o777),
    "chown": lambda d: os.chown(d / "empty", 1, 1),
    "utime": lambda d: os.utime(d / "empty", (0, 0)),
    "setxattr": lambda d: os.setxattr(d / "empty", "user.x", b"y"),
    "removexattr": lambda d: os.removexattr(d / "docs" / "note4.txt", "user.origin"),
    "mknod": lambda d: os.mkfifo(d / "newfifo"),
}


def test_every_kind_of_write_is_erofs(snapshot_dir: Path) -> None:
    for what, action in WRITES.items():
        with pytest.raises(OSError, match="Read-only file system") as err:
            action(snapshot_dir)
        assert err.value.errno == errno.EROFS, f"{what}: {err.value}"


def test_layout_links_and_xattrs(cli: Cli, src: Path, tmp_path: Path) -> None:
    cli.ok("init")
    cli.ok("snapshot", str(src), "--tag", "nightly", "--host", "web1")
    (snap,) = json.loads(cli.ok("snapshots", "--json").stdout)
    with mounted(cli.env, tmp_path / "mnt"):
        mnt = tmp_path / "mnt"
        (name,) = os.listdir(mnt / "snapshots")
        assert (mnt / "latest").is_dir()
        assert not (mnt / "latest").is_symlink()
        assert os.listdir(mnt / "latest") == os.listdir(mnt / "snapshots" / name)
        assert os.readlink(mnt / "ids" / snap["short_id"]) == f"../snapshots/{name}"
        assert os.readlink(mnt / "hosts" / "web1" / name) == f"../../snapshots/{name}"
        assert os.readlink(mnt / "tags" / "nightly" / name) == f"../../snapshots/{name}"
        inside = mnt / "latest" / str(src).lstrip("/")
        assert (inside / "docs/note5.txt").read_bytes() == (src / "docs/note5.txt").read_bytes()
        want = os.listxattr(src / "docs/note4.txt")
        assert os.listxattr(inside / "docs/note4.txt") == want
        if want:
            assert os.getxattr(inside / "docs/note4.txt", "user.origin") == b"snapfs test"
        os.statvfs(mnt)


def test_snapshot_taken_while_mounted_appears(cli: Cli, src: Path, tmp_path: Path) -> None:
    cli.ok("init")
    cli.ok("snapshot", str(src))
    with mounted(cli.env, tmp_path / "mnt"):
        assert len(os.listdir(tmp_path / "mnt" / "snapshots")) == 1
        (src / "added.txt").write_text("new")
        cli.ok("snapshot", str(src))
        deadline = time.monotonic() + 20
        while len(os.listdir(tmp_path / "mnt" / "snapshots")) < 2:
            assert time.monotonic() < deadline, "the new snapshot never appeared"
            time.sleep(0.2)
        added = tmp_path / "mnt" / "latest" / str(src).lstrip("/") / "added.txt"
        assert added.read_text() == "new"


def test_flipped_pack_byte_gives_eio_for_that_file_only(
    cli: Cli, src: Path, tmp_path: Path
) -> None:
    cli.ok("init")
    cli.ok("snapshot", str(src))
    repo = Repository.open(LocalStore(cli.repo), PASSWORD, tmp_path / "inspect")
    try:
        node = resolve(repo, repo.find_snapshot("latest"), str(src / "big.bin"))
        loc = repo.lookup(node.content[1][0])
        assert loc is not None
    finally:
        repo.close()
    pack = cli.repo / pack_name(loc.pack)
    data = bytearray(pack.read_bytes())
    data[loc.offset + 100] ^= 0xFF
    pack.write_bytes(bytes(data))
    with mounted(cli.env, tmp_path / "mnt"):
        inside = tmp_path / "mnt" / "latest" / str(src).lstrip("/")
        with pytest.raises(OSError, match="Input/output error") as err:
            (inside / "big.bin").read_bytes()
        assert err.value.errno == errno.EIO
        assert (inside / "docs/note9.txt").read_bytes() == (src / "docs/note9.txt").read_bytes()
    log = (tmp_path / "mnt.log").read_text()
    assert f"{src}/big.bin" in log
    assert "authentication failed" in log


def test_mount_after_deleting_the_cache(cli: Cli, src: Path, tmp_path: Path) -> None:
    cli.ok("init")
    cli.ok("snapshot", str(src))
    with mounted(cli.env, tmp_path / "mnt"):
        os.listdir(tmp_path / "mnt" / "latest")
    shutil.rmtree(tmp_path / "cache")
    with mounted(cli.env, tmp_path / "mnt"):
        inside = tmp_path / "mnt" / "latest" / str(src).lstrip("/")
        assert (inside / "big.bin").read_bytes() == (src / "big.bin").read_bytes()


def test_background_mount_and_umount_leave_nothing_behind(
    cli: Cli, src: Path, tmp_path: Path
) -> None:
    skip_without_fuse()
    cli.ok("init")
    cli.ok("snapshot", str(src))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        res = cli.ok("mount", str(mnt))
        pid = int(res.stdout.split("(PID ")[1].split(")")[0])
        assert mounted_fuse(str(mnt)) == "fuse.snapfs"
        assert os.listdir(mnt / "latest")
        cli.ok("umount", str(mnt))
        assert mounted_fuse(str(mnt)) is None
        deadline = time.monotonic() + 10
        while _alive(pid):
            assert time.monotonic() < deadline, f"mount process {pid} still running"
            time.sleep(0.05)
    finally:
        unmount(mnt)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def test_sigterm_in_the_foreground_unmounts(cli: Cli, src: Path, tmp_path: Path) -> None:
    cli.ok("init")
    cli.ok("snapshot", str(src))
    with mounted(cli.env, tmp_path / "mnt") as proc:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        assert mounted_fuse(str(tmp_path / "mnt")) is None


@pytest.mark.parametrize("problem", ["missing", "not empty", "busy", "inside the repository"])
def test_bad_mountpoints_are_one_clear_error(
    cli: Cli, src: Path, tmp_path: Path, problem: str
) -> None:
    skip_without_fuse()
    cli.ok("init")
    target = {
        "missing": tmp_path / "nope",
        "not empty": src,
        "busy": tmp_path / "mnt",
        "inside the repository": cli.repo / "mnt",
    }[problem]
    if problem == "inside the repository":
        target.mkdir()
    if problem == "busy":
        with mounted(cli.env, target):
            res = cli.run("mount", str(target))
    else:
        res = cli.run("mount", str(target))
    assert res.returncode == 1
    line = one_line_error(res)
    assert {"missing": "does not exist", "not empty": "is not empty", "busy": "is busy"}.get(
        problem, "inside the repository"
    ) in line


@pytest.mark.parametrize("mode", [[], ["--foreground"]])
def test_wrong_password_for_mount_exits_12_without_mounting(
    cli: Cli, tmp_path: Path, mode: list[str]
) -> None:
    skip_without_fuse()
    cli.ok("init")
    (tmp_path / "mnt").mkdir()
    res = cli.run("mount", str(tmp_path / "mnt"), *mode, SNAPFS_PASSWORD="wrong")
    assert res.returncode == 12
    assert "wrong password" in one_line_error(res)
    assert mounted_fuse(str(tmp_path / "mnt")) is None


def test_umount_of_something_not_mounted(cli: Cli, tmp_path: Path) -> None:
    res = cli.run("umount", str(tmp_path))
    assert res.returncode == 1
    assert "is not a FUSE mount" in one_line_error(res)


def test_mount_without_any_xattrs_switches_xattr_requests_off(cli: Cli, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.txt").write_text("no xattrs here")
    cli.ok("init")
    cli.ok("snapshot", str(plain))
    with mounted(cli.env, tmp_path / "mnt"):
        inside = tmp_path / "mnt" / "latest" / str(plain).lstrip("/")
        with pytest.raises(OSError, match="Operation not supported"):
            os.listxattr(inside / "a.txt")
        subprocess.run(["cp", "-a", str(inside), str(tmp_path / "copy")], check=True)
    assert (tmp_path / "copy" / "a.txt").read_text() == "no xattrs here"


@pytest.fixture
def memory_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MemoryStore:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    store = MemoryStore()
    init_repository(store, PASSWORD, RepoConfig.new(), FAST_KDF)
    return store


def _locks(store: MemoryStore) -> list[str]:
    return [name for name, _ in store.list("locks/")]


@pytest.mark.parametrize("waited", [True, False])
def test_opening_thread_unlocks_and_closes_when_the_mount_fails(
    memory_store: MemoryStore, waited: bool
) -> None:
    """Serving may fail after the repository is open, or before anyone waited for it
    (pyfuse3 failing to import): either way the shared lock goes and the cache closes."""

    def mount_that_fails() -> None:
        with OpeningThread(memory_store, PASSWORD, 0) as opening:
            if waited:
                opening.wait()
                assert len(_locks(memory_store)) == 1
            raise RuntimeError("mount failed")

    with pytest.raises(RuntimeError, match="mount failed"):
        mount_that_fails()
    assert _locks(memory_store) == []
    with OpeningThread(memory_store, PASSWORD, 0) as opening:  # the cache was closed
        assert opening.wait().list_snapshots() == []


def test_opening_thread_hands_a_wrong_password_to_the_waiter(memory_store: MemoryStore) -> None:
    with pytest.raises(WrongPassword), OpeningThread(memory_store, b"wrong", 0) as opening:
        opening.wait()
    assert _locks(memory_store) == []
