"""Back up a file tree, restore it, and compare: what comes back is what went in."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import random
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snapfs.repo.repository import Repository
from snapfs.restore.restorer import Restorer
from snapfs.vfs.paths import resolve
from snapfs.writer.backup import Backup, BackupOptions, Summary

MiB = 1 << 20
IS_ROOT = os.geteuid() == 0


@pytest.fixture(params=["memory_repo", "local_repo"])
def repo(request: pytest.FixtureRequest) -> Repository:
    r: Repository = request.getfixturevalue(request.param)
    return r


# -- the tree to build -------------------------------------------------------------------


@dataclass(frozen=True)
class Meta:
    mode: int
    uid: int
    gid: int
    mtime_ns: int


@dataclass(frozen=True)
class FileSpec:
    meta: Meta
    size: int
    seed: int
    compressible: bool
    xattrs: tuple[tuple[bytes, bytes], ...]

    def content(self) -> bytes:
        rng = random.Random(self.seed)
        if self.compressible:
            return (rng.randbytes(64) * (self.size // 64 + 1))[: self.size]
        return rng.randbytes(self.size)


@dataclass(frozen=True)
class LinkSpec:
    target: bytes
    uid: int
    gid: int
    mtime_ns: int


@dataclass(frozen=True)
class FifoSpec:
    meta: Meta


@dataclass(frozen=True)
class DirSpec:
    meta: Meta
    entries: tuple[tuple[bytes, Entry], ...]
    xattrs: tuple[tuple[bytes, bytes], ...] = ()


Entry = FileSpec | LinkSpec | FifoSpec | DirSpec

HARDLINK_A = b"HL-a"
HARDLINK_DIR = b"HL-d"
HARDLINK_B = b"HL-b"

SAFE = "abcdefghijklmnopqrstuvwxyz0123456789._-"
safe_names = st.text(SAFE, min_size=1, max_size=8).filter(lambda s: s not in (".", ".."))
raw_names = st.binary(min_size=1, max_size=6).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b"..")
)
# Mostly readable names; the raw ones are often not UTF-8 (stored as name_b64).
names = st.one_of(safe_names.map(os.fsencode), safe_names.map(os.fsencode), raw_names).filter(
    lambda b: not b.startswith(b"HL-")
)

ids = st.integers(0, 200_000) if IS_ROOT else st.just(os.getuid())
gids = st.integers(0, 200_000) if IS_ROOT else st.just(os.getgid())
# ext4 keeps nanoseconds from 1901 to 2446; stay well inside.
mtimes = st.integers(-(2**31 - 1) * 10**9, 2**33 * 10**9)
modes = st.integers(0, 0o7777) if IS_ROOT else st.integers(0, 0o7777).map(lambda m: m | 0o600)
dir_modes = modes if IS_ROOT else modes.map(lambda m: m | 0o700)
xattr_sets = st.dictionaries(
    st.text(SAFE, min_size=1, max_size=10).map(lambda s: b"user." + s.encode()),
    st.binary(max_size=40),
    max_size=3,
).map(lambda d: tuple(sorted(d.items())))
sizes = st.one_of(
    st.just(0),
    st.integers(1, 4096),
    st.integers(1, 4096),
    st.integers(4097, 200_000),
    st.integers(MiB + 1, MiB + 300_000),  # occasionally more than one chunk's minimum
)

files = st.builds(
    FileSpec,
    meta=st.builds(Meta, mode=modes, uid=ids, gid=gids, mtime_ns=mtimes),
    size=sizes,
    seed=st.integers(0, 2**32),
    compressible=st.booleans(),
    xattrs=xattr_sets,
)
links = st.builds(
    LinkSpec,
    target=st.one_of(
        names,
        st.lists(names, min_size=1, max_size=3).map(b"/".join),
        names.map(lambda n: b"../" + n),
        names.map(lambda n: b"/nonexistent/" + n),
    ),
    uid=ids,
    gid=gids,
    mtime_ns=mtimes,
)
fifos = st.builds(FifoSpec, meta=st.builds(Meta, mode=modes, uid=ids, gid=gids, mtime_ns=mtimes))


def _dirs(children: st.SearchStrategy[Entry]) -> st.SearchStrategy[DirSpec]:
    return st.builds(
        DirSpec,
        meta=st.builds(Meta, mode=dir_modes, uid=ids, gid=gids, mtime_ns=mtimes),
        entries=st.dictionaries(names, children, max_size=5).map(
            lambda d: tuple(sorted(d.items()))
        ),
        xattrs=xattr_sets,
    )


entries: st.SearchStrategy[Entry] = st.recursive(
    st.one_of(files, files, links, fifos), _dirs, max_leaves=12
)


@dataclass(frozen=True)
class TreeSpec:
    root: DirSpec
    hardlink: FileSpec | None  # HL-a at the top and HL-d/HL-b, one inode


trees = st.builds(
    TreeSpec,
    root=st.builds(
        DirSpec,
        meta=st.builds(Meta, mode=dir_modes, uid=ids, gid=gids, mtime_ns=mtimes),
        entries=st.dictionaries(names, entries, max_size=6).map(lambda d: tuple(sorted(d.items()))),
        xattrs=xattr_sets,
    ),
    hardlink=st.one_of(st.none(), files),
)


def xattrs_supported(directory: bytes) -> bool:
    probe = os.path.join(directory, b".xattr-probe")
    with open(probe, "wb"):
        pass
    try:
        os.setxattr(probe, b"user.probe", b"1")
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EPERM):
            return False
        raise
    finally:
        os.unlink(probe)
    return True


def _meta(path: bytes, meta: Meta, xattrs: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    if IS_ROOT:
        os.chown(path, meta.uid, meta.gid)
    for name, value in xattrs:
        os.setxattr(path, name, value)
    os.chmod(path, meta.mode)
    os.utime(path, ns=(meta.mtime_ns, meta.mtime_ns))


def _make_file(path: bytes, spec: FileSpec) -> None:
    with open(path, "wb") as f:
        f.write(spec.content())
    _meta(path, spec.meta, spec.xattrs)


def _make(path: bytes, spec: Entry) -> None:
    if isinstance(spec, FileSpec):
        _make_file(path, spec)
    elif isinstance(spec, LinkSpec):
        os.symlink(spec.target, path)
        if IS_ROOT:
            os.chown(path, spec.uid, spec.gid, follow_symlinks=False)
        os.utime(path, ns=(spec.mtime_ns, spec.mtime_ns), follow_symlinks=False)
    elif isinstance(spec, FifoSpec):
        os.mkfifo(path)
        _meta(path, spec.meta)
    else:
        os.mkdir(path)
        for name, child in spec.entries:
            _make(os.path.join(path, name), child)
        _meta(path, spec.meta, spec.xattrs)  # last: children change a directory's mtime


def build_tree(path: bytes, tree: TreeSpec) -> None:
    """Create ``tree`` at ``path``; every directory's metadata is set after its children."""
    os.mkdir(path)
    for name, child in tree.root.entries:
        _make(os.path.join(path, name), child)
    if tree.hardlink is not None:
        first = os.path.join(path, HARDLINK_A)
        _make_file(first, tree.hardlink)
        os.mkdir(os.path.join(path, HARDLINK_DIR))
        os.link(first, os.path.join(path, HARDLINK_DIR, HARDLINK_B))
        _meta(os.path.join(path, HARDLINK_DIR), tree.root.meta)
    _meta(path, tree.root.meta, tree.root.xattrs)


def _strip(spec: Entry) -> Entry:
    if isinstance(spec, FileSpec):
        return dataclasses.replace(spec, xattrs=())
    if isinstance(spec, DirSpec):
        return DirSpec(spec.meta, tuple((n, _strip(c)) for n, c in spec.entries))
    return spec


def strip_xattrs(tree: TreeSpec) -> TreeSpec:
    """The same tree without xattrs, for file systems that do not take user xattrs."""
    root = _strip(tree.root)
    assert isinstance(root, DirSpec)
    hardlink = None if tree.hardlink is None else dataclasses.replace(tree.hardlink, xattrs=())
    return TreeSpec(root, hardlink)


# -- comparing trees ---------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    fmt: int
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    size: int | None  # files only
    content: bytes | None  # sha256 of a file, target of a symlink
    xattrs: tuple[tuple[bytes, bytes], ...]


def _xattrs(path: bytes) -> tuple[tuple[bytes, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EPERM):
            return ()
        raise
    return tuple(
        sorted((os.fsencode(n), os.getxattr(path, n, follow_symlinks=False)) for n in names)
    )


def observe(root: bytes) -> tuple[dict[bytes, Seen], set[frozenset[bytes]]]:
    """Every entry below ``root`` (itself as b".") and the groups of hardlinked files."""
    seen: dict[bytes, Seen] = {}
    inodes: dict[tuple[int, int], set[bytes]] = {}

    def visit(path: bytes, rel: bytes) -> None:
        st_ = os.lstat(path)
        fmt = stat.S_IFMT(st_.st_mode)
        size: int | None = None
        content: bytes | None = None
        if fmt == stat.S_IFREG:
            size = st_.st_size
            with open(path, "rb") as f:
                content = hashlib.sha256(f.read()).digest()
            inodes.setdefault((st_.st_dev, st_.st_ino), set()).add(rel)
        elif fmt == stat.S_IFLNK:
            content = os.readlink(path)
        seen[rel] = Seen(
            fmt,
            stat.S_IMODE(st_.st_mode),
            st_.st_uid,
            st_.st_gid,
            st_.st_mtime_ns,
            size,
            content,
            _xattrs(path),
        )
        if fmt == stat.S_IFDIR:
            for name in sorted(os.listdir(path)):
                visit(os.path.join(path, name), os.path.join(rel, name))

    visit(root, b".")
    return seen, {frozenset(paths) for paths in inodes.values() if len(paths) > 1}


def backup(repo: Repository, src: Path) -> Summary:
    job = Backup(repo, [str(src)], BackupOptions())
    job.run()
    assert job.warnings == []
    return job.summary


def backup_and_restore(repo: Repository, src: bytes, dst: bytes) -> None:
    job = Backup(repo, [os.fsdecode(src)], BackupOptions())
    snap = job.run()
    assert job.warnings == []
    node = resolve(repo, snap, os.fsdecode(src))
    stats = Restorer(repo).restore(node, dst)
    assert stats.errors == []


# -- tests -------------------------------------------------------------------------------


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(tree=trees)
def test_restore_reproduces_the_backed_up_tree(
    repo: Repository, tmp_path_factory: pytest.TempPathFactory, tree: TreeSpec
) -> None:
    # The repository is shared by the examples (each adds a snapshot); the directories are
    # fresh for every example. ``work`` itself is kept so its path is never reused: the
    # files cache is keyed by path and must not see an earlier example's file there.
    work = os.fsencode(tmp_path_factory.mktemp("roundtrip"))
    if not xattrs_supported(work):
        tree = strip_xattrs(tree)
    src, dst = os.path.join(work, b"src"), os.path.join(work, b"dst")
    try:
        build_tree(src, tree)
        backup_and_restore(repo, src, dst)
        src_seen, src_links = observe(src)
        dst_seen, dst_links = observe(dst)
        assert sorted(dst_seen) == sorted(src_seen)
        for rel, want in src_seen.items():
            assert dst_seen[rel] == want, rel
        assert dst_links == src_links
        if tree.hardlink is not None:
            assert frozenset({b"./HL-a", b"./HL-d/HL-b"}) in src_links
    finally:
        for path in (src, dst):
            if os.path.lexists(path):
                shutil.rmtree(path)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_second_backup_of_unchanged_tree_reads_nothing(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    rng = random.Random(5)
    _write(src / "a.txt", b"hello\n")
    _write(src / "empty", b"")
    _write(src / "sub" / "big.bin", rng.randbytes(2 * MiB + 123))
    _write(src / "sub" / "deeper" / "c.bin", rng.randbytes(5000))
    _write(src / "sub" / "deeper" / "d.txt", b"text " * 1000)
    os.symlink("a.txt", src / "link")

    first = backup(repo, src)
    assert first.files_new == 5
    assert first.bytes_read == sum(
        len(p.read_bytes()) for p in src.rglob("*") if p.is_file() and not p.is_symlink()
    )
    second = backup(repo, src)
    assert second.files_unchanged == 5
    assert second.files_new == second.files_changed == 0
    assert second.bytes_read == 0
    assert second.total_files == 5
    assert second.total_bytes == first.total_bytes
    # Trees are deduplicated too; only directories above the source could have changed.
    assert second.bytes_added < 4096


def test_identical_files_are_stored_once(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    data = random.Random(11).randbytes(3 * MiB)
    _write(src / "one.bin", data)
    _write(src / "copy" / "two.bin", data)

    summary = backup(repo, src)
    assert summary.bytes_read == 2 * len(data)
    assert len(data) <= summary.bytes_added < len(data) * 1.1


def test_file_larger_than_the_chunk_maximum_round_trips(repo: Repository, tmp_path: Path) -> None:
    """Files above chunker_max are streamed rather than read whole."""
    src = tmp_path / "src"
    data = random.Random(3).randbytes(repo.config.chunker_max * 2 + 12345)
    _write(src / "huge.bin", data)
    dst = tmp_path / "dst"

    backup_and_restore(repo, os.fsencode(src), os.fsencode(dst))
    assert (dst / "huge.bin").read_bytes() == data
