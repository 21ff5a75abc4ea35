"""The FUSE-free view of snapshots: the layout on top, derived inode numbers, the chunk
map of a file, and SnapshotFS over a real backup (lookup, listings, links, xattrs,
contents, inode stability and a vfs cache that may be deleted)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import posixpath
import random
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapfs.cache import Cache
from snapfs.cache.lmdbstore import VFS_TABLES
from snapfs.errors import PathNotFound
from snapfs.repo.repository import Repository
from snapfs.repo.snapshot import Snapshot
from snapfs.repo.tree import CHARDEV, DIR, FIFO, FILE, SYMLINK
from snapfs.vfs.dirindex import DirIndex
from snapfs.vfs.filesystem import Attr, Following, SnapshotFS
from snapfs.vfs.inodes import ROOT_INODE, entry_inode, hardlink_inode, layout_inode
from snapfs.vfs.layout import (
    Layout,
    LayoutDir,
    LayoutLink,
    SnapshotRoot,
    build_layout,
    snapshot_names,
)
from snapfs.vfs.reader import ChunkMap
from snapfs.writer.backup import Backup, BackupOptions

MiB = 1 << 20
SECOND = 10**9
BASE_NS = 1_700_000_000 * SECOND  # 2023-11-14T22:13:20Z
IS_ROOT = os.geteuid() == 0


# -- the layout (pure) ---------------------------------------------------------------------


def make_snap(time_ns: int, seed: int, host: str = "host", tags: tuple[str, ...] = ()) -> Snapshot:
    return Snapshot(
        time_ns=time_ns,
        host=host,
        username="user",
        paths=["/data"],
        tree=hashlib.sha256(b"tree %d" % seed).digest(),
        tags=list(tags),
        id=hashlib.sha256(b"snapshot %d" % seed).digest(),
    )


def utc_name(time_ns: int) -> bytes:
    return time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime(time_ns // SECOND)).encode()


def layout_paths(layout: Layout) -> dict[bytes, int]:
    """Every path reachable from the root (the root itself as b"") and its inode."""
    out = {b"": ROOT_INODE}

    def visit(prefix: bytes, d: LayoutDir) -> None:
        for name, ino in d.children.items():
            path = prefix + b"/" + name if prefix else name
            assert path not in out
            out[path] = ino
            node = layout.nodes[ino]
            if isinstance(node, LayoutDir):
                visit(path, node)

    root = layout.nodes[ROOT_INODE]
    assert isinstance(root, LayoutDir)
    visit(b"", root)
    return out


def node_at(layout: Layout, path: bytes) -> LayoutDir | LayoutLink | SnapshotRoot:
    return layout.nodes[layout_paths(layout)[path]]


def dir_at(layout: Layout, path: bytes) -> LayoutDir:
    d = node_at(layout, path)
    assert isinstance(d, LayoutDir)
    return d


def link_target(layout: Layout, path: bytes) -> SnapshotRoot:
    """Follow the layout symlink at ``path`` the way the kernel would."""
    link = node_at(layout, path)
    assert isinstance(link, LayoutLink)
    directory = path.rpartition(b"/")[0]
    resolved = posixpath.normpath(posixpath.join(directory, link.target))
    target = node_at(layout, resolved)
    assert isinstance(target, SnapshotRoot)
    return target


def latest_of(layout: Layout) -> SnapshotRoot:
    """``latest`` is a directory: the newest snapshot seen through a view of its own."""
    node = node_at(layout, b"latest")
    assert isinstance(node, SnapshotRoot)
    assert node.moving
    return node


def names_by_id(snaps: list[Snapshot]) -> dict[bytes, bytes]:
    return {s.id: name for name, s in snapshot_names(snaps)}


hosts = st.sampled_from(["alpha", "beta", "a/b", "a_b", "/", ".", "..", "", "x\0y", "ünï"])
tag_lists = st.lists(
    st.sampled_from(["daily", "weekly", "a/b", ".", "..", "", "x\0y"]), max_size=3
).map(tuple)
fractions = st.integers(0, SECOND - 1)


@st.composite
def snapshot_lists(draw: st.DrawFn, max_size: int = 12) -> list[Snapshot]:
    seeds = draw(st.lists(st.integers(0, 10**6), unique=True, max_size=max_size))
    out = []
    for seed in seeds:
        # Few distinct seconds, so names in the same second are common.
        second = draw(st.integers(0, 3))
        out.append(
            make_snap(
                BASE_NS + second * SECOND + draw(fractions),
                seed,
                draw(hosts),
                draw(tag_lists),
            )
        )
    return out


def test_snapshot_names_are_utc_seconds() -> None:
    snap = make_snap(BASE_NS + 3 * 3600 * SECOND + 7 * SECOND + 123_456_789, 1)
    ((name, same),) = snapshot_names([snap])
    assert name == b"2023-11-15T01-13-27Z"
    assert same is snap


@given(time_ns=st.integers(0, 4_000_000_000).map(lambda s: s * SECOND), fraction=fractions)
def test_snapshot_name_is_the_utc_second_of_its_time(time_ns: int, fraction: int) -> None:
    ((name, _),) = snapshot_names([make_snap(time_ns + fraction, 1)])
    assert name == utc_name(time_ns + fraction)


def test_snapshot_in_the_last_microsecond_keeps_its_second() -> None:
    """Truncated, never rounded into the next second."""
    for time_ns in (BASE_NS + SECOND - 400, BASE_NS + SECOND - 1):  # 22:13:20.9999996Z
        ((name, _),) = snapshot_names([make_snap(time_ns, 1)])
        assert name == b"2023-11-14T22-13-20Z"
    ((name, _),) = snapshot_names([make_snap(BASE_NS + SECOND, 1)])
    assert name == b"2023-11-14T22-13-21Z"


def test_snapshots_in_the_same_second_get_distinct_names() -> None:
    first = make_snap(BASE_NS + 10, 1)
    second = make_snap(BASE_NS + 500_000_000, 2)
    third = make_snap(BASE_NS + 999_000_000, 3)
    names = names_by_id([third, first, second])  # input order does not matter
    assert names[first.id] == b"2023-11-14T22-13-20Z"
    assert names[second.id] == b"2023-11-14T22-13-20Z-" + second.short_id.encode()
    assert names[third.id] == b"2023-11-14T22-13-20Z-" + third.short_id.encode()
    layout = build_layout([third, first, second])
    assert sorted(dir_at(layout, b"snapshots").children) == sorted(names.values())


@settings(max_examples=200, deadline=None)
@given(snaps=snapshot_lists())
def test_snapshot_names_are_distinct_and_the_first_in_a_second_is_plain(
    snaps: list[Snapshot],
) -> None:
    names = names_by_id(snaps)
    assert len(set(names.values())) == len(snaps)
    by_second: dict[int, list[Snapshot]] = {}
    for s in sorted(snaps, key=lambda s: (s.time_ns, s.id)):
        by_second.setdefault(s.time_ns // SECOND, []).append(s)
    for second, group in by_second.items():
        plain = utc_name(second * SECOND)
        assert names[group[0].id] == plain
        for s in group[1:]:
            assert names[s.id] == plain + b"-" + s.short_id.encode()


@settings(max_examples=200, deadline=None)
@given(
    snaps=snapshot_lists(),
    delay=st.integers(1, 3 * SECOND),
    seed=st.integers(10**6 + 1, 2 * 10**6),
    host=hosts,
    tags=tag_lists,
)
def test_a_newer_snapshot_never_renames_existing_ones(
    snaps: list[Snapshot], delay: int, seed: int, host: str, tags: tuple[str, ...]
) -> None:
    newest_ns = max((s.time_ns for s in snaps), default=BASE_NS)
    new = make_snap(newest_ns + delay, seed, host, tags)
    before, after = names_by_id(snaps), names_by_id([*snaps, new])
    assert {k: after[k] for k in before} == before
    # Every path of the old layout is still there with the same inode; links other than
    # ``latest`` still point where they did.
    old, grown = build_layout(snaps), build_layout([*snaps, new])
    old_paths, new_paths = layout_paths(old), layout_paths(grown)
    for path, ino in old_paths.items():
        if path == b"latest":  # moves to a new inode, so no kernel cache serves the old one
            assert new_paths[path] != ino
            assert grown.nodes[ino] == old.nodes[ino]  # still there for whoever is inside
            continue
        assert new_paths[path] == ino, path
        node = old.nodes[ino]
        if isinstance(node, LayoutLink):
            assert grown.nodes[ino] == node
    assert latest_of(grown).snapshot is new


@pytest.mark.xfail(
    reason="snapshot_names orders by (time_ns, id), so a snapshot that arrives later with "
    "an earlier time in the same second (another host's clock) takes the plain name and "
    "the snapshot already shown under it is renamed",
    strict=True,
)
def test_a_late_snapshot_from_the_same_second_renames_nothing() -> None:
    shown = make_snap(BASE_NS + 600_000_000, 1)
    late = make_snap(BASE_NS + 100_000_000, 2)  # saved later, clock slightly behind
    before = names_by_id([shown])
    after = names_by_id([shown, late])
    assert after[shown.id] == before[shown.id]


def test_latest_and_every_link_point_at_the_right_snapshot() -> None:
    older = make_snap(BASE_NS, 1, "alpha", ("daily",))
    newer = make_snap(BASE_NS + 3600 * SECOND, 2, "beta", ("daily", "weekly"))
    layout = build_layout([newer, older])
    old_name, new_name = b"2023-11-14T22-13-20Z", b"2023-11-14T23-13-20Z"

    latest = latest_of(layout)
    assert latest.snapshot is newer
    assert latest.name == new_name
    assert latest.ino != node_at(layout, b"snapshots/" + new_name).ino

    for snap, name in ((older, old_name), (newer, new_name)):
        root = node_at(layout, b"snapshots/" + name)
        assert isinstance(root, SnapshotRoot)
        assert root.snapshot is snap
        assert root.name == name
        short = snap.short_id.encode()
        assert len(short) == 8
        id_link = node_at(layout, b"ids/" + short)
        assert isinstance(id_link, LayoutLink)
        assert id_link.target == b"../snapshots/" + name
        assert id_link.mtime_ns == snap.time_ns
        host_link = node_at(layout, b"hosts/" + snap.host.encode() + b"/" + name)
        assert isinstance(host_link, LayoutLink)
        assert host_link.target == b"../../snapshots/" + name
        for tag in snap.tags:
            tag_link = node_at(layout, b"tags/" + tag.encode() + b"/" + name)
            assert isinstance(tag_link, LayoutLink)
            assert tag_link.target == b"../../snapshots/" + name
            assert link_target(layout, b"tags/" + tag.encode() + b"/" + name) is root
        assert link_target(layout, b"ids/" + short) is root
        assert link_target(layout, b"hosts/" + snap.host.encode() + b"/" + name) is root

    assert sorted(dir_at(layout, b"tags/daily").children) == [old_name, new_name]
    assert sorted(dir_at(layout, b"tags/weekly").children) == [new_name]
    assert sorted(dir_at(layout, b"hosts").children) == [b"alpha", b"beta"]
    root_dir = layout.nodes[ROOT_INODE]
    assert isinstance(root_dir, LayoutDir)
    assert sorted(root_dir.children) == [b"hosts", b"ids", b"latest", b"snapshots", b"tags"]
    assert root_dir.mtime_ns == newer.time_ns
    assert layout.ids == frozenset({older.id, newer.id})


def test_an_empty_repository_has_the_top_directories_and_no_latest() -> None:
    layout = build_layout([])
    root_dir = layout.nodes[ROOT_INODE]
    assert isinstance(root_dir, LayoutDir)
    assert sorted(root_dir.children) == [b"hosts", b"ids", b"snapshots", b"tags"]
    for top in (b"hosts", b"ids", b"snapshots", b"tags"):
        d = node_at(layout, top)
        assert isinstance(d, LayoutDir)
        assert d.children == {}


@pytest.mark.parametrize(
    ("label", "safe"),
    [
        ("a/b", b"a_b"),
        ("/", b"_"),
        ("/etc/passwd", b"_etc_passwd"),
        (".", b"_._"),
        ("..", b"_.._"),
        ("", b"__"),
        ("x\0y", b"x_y"),
        ("ünï", "ünï".encode()),
    ],
)
def test_hosts_and_tags_become_safe_directory_names(label: str, safe: bytes) -> None:
    snap = make_snap(BASE_NS, 1, host=label, tags=(label,))
    layout = build_layout([snap])
    name = b"2023-11-14T22-13-20Z"
    for top in (b"hosts", b"tags"):
        d = node_at(layout, top)
        assert isinstance(d, LayoutDir)
        assert list(d.children) == [safe]
        assert link_target(layout, top + b"/" + safe + b"/" + name).snapshot is snap


@settings(max_examples=200, deadline=None)
@given(snaps=snapshot_lists(), shuffle_seed=st.integers(0, 2**32))
def test_layout_inodes_are_a_function_of_the_snapshot_list(
    snaps: list[Snapshot], shuffle_seed: int
) -> None:
    first = layout_paths(build_layout(snaps))
    shuffled = list(snaps)
    random.Random(shuffle_seed).shuffle(shuffled)
    assert layout_paths(build_layout(shuffled)) == first
    assert layout_paths(build_layout(snaps)) == first


@settings(max_examples=200, deadline=None)
@given(snaps=snapshot_lists())
def test_no_two_layout_nodes_share_an_inode(snaps: list[Snapshot]) -> None:
    layout = build_layout(snaps)
    paths = layout_paths(layout)
    inodes = list(paths.values())
    assert len(set(inodes)) == len(inodes)
    # nothing was overwritten; unreachable are only the ``latest`` views of older
    # snapshots, kept for processes still inside them
    hidden = set(layout.nodes) - set(inodes)
    assert len(hidden) == max(0, len(snaps) - 1)
    assert all(isinstance(n := layout.nodes[i], SnapshotRoot) and n.moving for i in hidden)
    for ino, node in layout.nodes.items():
        assert node.ino == ino
    snapshots_dir = node_at(layout, b"snapshots")
    assert isinstance(snapshots_dir, LayoutDir)
    assert len(snapshots_dir.children) == len(snaps)
    for path in paths:
        for component in path.split(b"/") if path else []:
            assert component not in (b"", b".", b"..")
            assert b"\0" not in component


# -- inode numbers -------------------------------------------------------------------------


def _check_range(ino: int) -> None:
    assert 1 << 16 <= ino < 1 << 63


def test_inode_functions_are_deterministic_and_in_range() -> None:
    assert entry_inode(ROOT_INODE, 0) == entry_inode(ROOT_INODE, 0)
    assert entry_inode(ROOT_INODE, 1) == entry_inode(ROOT_INODE, 0) + 1  # listing order
    assert layout_inode(b"snapshots") == layout_inode(b"snapshots")
    assert hardlink_inode(5, 6, 7) == hardlink_inode(5, 6, 7)
    assert ROOT_INODE < 1 << 16


@settings(max_examples=300, deadline=None)
@given(
    a=st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**25)),
    b=st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**25)),
    h1=st.tuples(*[st.integers(0, 2**64 - 1)] * 3),
    h2=st.tuples(*[st.integers(0, 2**64 - 1)] * 3),
)
def test_inodes_are_in_range_and_differ_for_different_inputs(
    a: tuple[int, int],
    b: tuple[int, int],
    h1: tuple[int, int, int],
    h2: tuple[int, int, int],
) -> None:
    for ino in (
        entry_inode(*a),
        entry_inode(*b),
        layout_inode(b"%d" % a[1]),
        layout_inode(b"%d" % b[1]),
        hardlink_inode(*h1),
        hardlink_inode(*h2),
    ):
        _check_range(ino)
    assert (entry_inode(*a) == entry_inode(*b)) == (a == b)
    assert (layout_inode(b"%d" % a[1]) == layout_inode(b"%d" % b[1])) == (a[1] == b[1])
    assert (hardlink_inode(*h1) == hardlink_inode(*h2)) == (h1 == h2)
    # The three kinds are separate name spaces.
    assert entry_inode(*a) != layout_inode(b"%d" % a[1])
    assert entry_inode(h1[0], 0) != hardlink_inode(*h1)


def test_inodes_of_many_names_do_not_collide() -> None:
    names = [b"f%d" % i for i in range(20_000)]
    inodes = {entry_inode(ROOT_INODE, i) for i in range(len(names))}
    inodes |= {entry_inode(2, i) for i in range(len(names))}
    inodes |= {layout_inode(n) for n in names}
    inodes |= {hardlink_inode(1, 2, i) for i in range(20_000)}
    assert len(inodes) == 80_000
    for ino in inodes:
        _check_range(ino)


# -- the chunk map -------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 64), max_size=10),
    offset=st.integers(0, 800),
    length=st.integers(0, 800),
    seed=st.integers(0, 2**32),
)
def test_chunk_map_pieces_cover_exactly_the_range(
    sizes: list[int], offset: int, length: int, seed: int
) -> None:
    rng = random.Random(seed)
    chunks = [rng.randbytes(n) for n in sizes]
    ids = [hashlib.sha256(b"%d" % i).digest() for i in range(len(chunks))]
    data = b"".join(chunks)
    cmap = ChunkMap(list(zip(ids, sizes, strict=True)))
    assert cmap.size == len(data)
    pieces = cmap.pieces(offset, length)
    assert (
        b"".join(chunks[p.index][p.start : p.end] for p in pieces) == data[offset : offset + length]
    )
    for p in pieces:
        assert p.blob_id == ids[p.index]
        assert 0 <= p.start < p.end <= sizes[p.index]
    assert [p.index for p in pieces] == sorted({p.index for p in pieces})
    if offset >= len(data) or length == 0:
        assert pieces == []


def test_chunk_map_of_an_empty_file() -> None:
    cmap = ChunkMap([])
    assert cmap.size == 0
    assert cmap.pieces(0, 4096) == []
    assert cmap.pieces(10, 1) == []


# -- SnapshotFS over a real backup ----------------------------------------------------------

MANY = 1500
FIXED_MTIME = 1_234_567_890_123_456_789


def xattrs_of(path: Path) -> list[tuple[bytes, bytes]]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EPERM):
            return []
        raise
    return sorted((os.fsencode(n), os.getxattr(path, n, follow_symlinks=False)) for n in names)


def make_source(root: Path) -> bool:
    """A small tree with one of everything; True if a user xattr could be set."""
    rng = random.Random(17)
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "hello.txt").write_bytes(b"hello\n")
    (root / "empty").touch()
    (root / "big.bin").write_bytes(rng.randbytes(9 * MiB + 12345))  # over the max chunk size
    (root / "sub" / "inner.txt").write_bytes(b"inner " * 100)
    (root / "sub" / "deeper" / "ünï.txt").write_text("unicode\n", encoding="utf-8")
    os.chmod(root / "sub" / "inner.txt", 0o640)
    os.chmod(root / "hello.txt", 0o4755 if IS_ROOT else 0o755)
    os.symlink("sub/inner.txt", root / "link")
    os.symlink("/nonexistent/target/of/some/length", root / "dangling")
    (root / "hard_a").write_bytes(b"shared content\n")
    os.link(root / "hard_a", root / "sub" / "hard_b")
    os.mkfifo(root / "fifo")
    (root / os.fsdecode(b"raw-\xff\xfe-name")).write_bytes(b"not utf-8\n")
    if IS_ROOT:
        with contextlib.suppress(PermissionError):  # no CAP_MKNOD in some containers
            os.mknod(root / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        os.chown(root / "sub" / "inner.txt", 1234, 5678)
        os.chown(root / "link", 4321, 8765, follow_symlinks=False)
    os.utime(root / "empty", ns=(FIXED_MTIME, FIXED_MTIME))
    many = root / "many"
    many.mkdir()
    order = list(range(MANY))
    rng.shuffle(order)  # creation order is not listing order
    for i in order:
        (many / f"n{i:05d}").write_bytes(b"%d\n" % i)
    xattr_ok = True
    try:
        os.setxattr(root / "sub" / "inner.txt", "user.origin", b"snapfs test")
        os.setxattr(root / "sub", "user.dir", b"\x00\xff binary")
    except OSError as e:
        if e.errno not in (errno.ENOTSUP, errno.EPERM):
            raise
        xattr_ok = False
    os.utime(root / "sub" / "deeper", ns=(FIXED_MTIME, FIXED_MTIME))
    return xattr_ok


def backup(repo: Repository, src: Path, host: str = "testhost") -> Snapshot:
    job = Backup(repo, [str(src)], BackupOptions(host=host, tags=("t1",)))
    snap = job.run()
    assert job.warnings == []
    return snap


def vfs_cache(path: Path) -> Cache:
    return Cache(path, tables=VFS_TABLES, durable=False)


@dataclass
class Backed:
    repo: Repository
    src: Path
    snap: Snapshot
    xattrs: bool
    cache_dir: Path
    cache: Cache
    fs: SnapshotFS


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bool]:
    """Made once: creating its files costs more than backing them up. No test changes it."""
    src = tmp_path_factory.mktemp("vfs") / "src"
    src.mkdir()
    return src, make_source(src)


@pytest.fixture
def backed(local_repo: Repository, tmp_path: Path, source: tuple[Path, bool]) -> Iterator[Backed]:
    src, xattr_ok = source
    snap = backup(local_repo, src)
    cache_dir = tmp_path / "vfs"
    cache = vfs_cache(cache_dir)
    try:
        yield Backed(
            local_repo, src, snap, xattr_ok, cache_dir, cache, SnapshotFS(local_repo, cache)
        )
    finally:
        cache.close()


def snapshot_ino(fs: SnapshotFS) -> int:
    snaps = fs.lookup(ROOT_INODE, b"snapshots")
    ((name, attr, _),) = fs.readdir(snaps.ino, 0, 10)
    assert fs.lookup(snaps.ino, name) == attr
    return attr.ino


def lookup_path(fs: SnapshotFS, path: Path) -> Attr:
    """The attributes of an absolute path of the (only) snapshot."""
    attr = fs.getattr(snapshot_ino(fs))
    for comp in path.parts[1:]:
        attr = fs.lookup(attr.ino, os.fsencode(comp))
    return attr


_KIND = {
    stat.S_IFREG: FILE,
    stat.S_IFDIR: DIR,
    stat.S_IFLNK: SYMLINK,
    stat.S_IFIFO: FIFO,
    stat.S_IFCHR: CHARDEV,
}


def assert_matches_lstat(attr: Attr, path: Path) -> None:
    st_ = path.lstat()
    assert attr.type == _KIND[stat.S_IFMT(st_.st_mode)], path
    assert attr.mode == stat.S_IMODE(st_.st_mode), path
    assert (attr.uid, attr.gid) == (st_.st_uid, st_.st_gid), path
    assert attr.mtime_ns == st_.st_mtime_ns, path
    assert attr.ctime_ns == st_.st_ctime_ns, path
    if attr.type == SYMLINK:
        assert attr.size == len(os.readlink(path)) == st_.st_size, path
    elif attr.type != DIR:
        assert attr.size == st_.st_size, path
    if attr.type == CHARDEV:
        assert attr.rdev == st_.st_rdev, path
    if attr.type == DIR:
        assert attr.nlink == 2
    else:
        assert attr.nlink == st_.st_nlink, path
    assert attr.immutable


def all_paths(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        out += [Path(dirpath) / n for n in dirnames + filenames]
    return sorted(out)


def inode_map(fs: SnapshotFS, src: Path) -> dict[Path, int]:
    src_attr = lookup_path(fs, src)
    out = {src: src_attr.ino}
    for path in all_paths(src):
        parent = out[path.parent]
        out[path] = fs.lookup(parent, os.fsencode(path.name)).ino
    return out


def test_lookup_of_every_name_matches_the_source(backed: Backed) -> None:
    fs, src = backed.fs, backed.src
    src_attr = lookup_path(fs, src)
    assert_matches_lstat(src_attr, src)
    inodes = {src: src_attr.ino}
    for path in all_paths(src):
        attr = fs.lookup(inodes[path.parent], os.fsencode(path.name))
        assert_matches_lstat(attr, path)
        assert fs.getattr(attr.ino) == attr
        inodes[path] = attr.ino
    # Only hardlinks share an inode.
    by_ino: dict[int, set[Path]] = {}
    for path, ino in inodes.items():
        by_ino.setdefault(ino, set()).add(path)
    shared = [paths for paths in by_ino.values() if len(paths) > 1]
    assert shared == [{src / "hard_a", src / "sub" / "hard_b"}]
    for ino in inodes.values():
        _check_range(ino)


def test_the_layout_on_top_of_a_backup(backed: Backed) -> None:
    fs, snap = backed.fs, backed.snap
    ((name, _),) = snapshot_names([snap])
    root = fs.getattr(ROOT_INODE)
    assert (root.type, root.mode, root.immutable) == (DIR, 0o555, False)
    listing = fs.readdir(ROOT_INODE, 0, 100)
    assert [n for n, _, _ in listing] == [b"hosts", b"ids", b"latest", b"snapshots", b"tags"]
    assert [off for _, _, off in listing] == [1, 2, 3, 4, 5]
    latest = fs.lookup(ROOT_INODE, b"latest")
    assert (latest.type, latest.immutable) == (DIR, False)
    same = fs.lookup(fs.lookup(ROOT_INODE, b"snapshots").ino, name)
    assert [n for n, _, _ in fs.readdir(latest.ino, 0, 100)] == [
        n for n, _, _ in fs.readdir(same.ino, 0, 100)
    ]
    ids = fs.lookup(ROOT_INODE, b"ids")
    id_link = fs.lookup(ids.ino, snap.short_id.encode())
    assert fs.readlink(id_link.ino) == b"../snapshots/" + name
    hosts = fs.lookup(ROOT_INODE, b"hosts")
    host = fs.lookup(hosts.ino, b"testhost")
    assert fs.readlink(fs.lookup(host.ino, name).ino) == b"../../snapshots/" + name
    tags = fs.lookup(ROOT_INODE, b"tags")
    tag = fs.lookup(tags.ino, b"t1")
    assert fs.readlink(fs.lookup(tag.ino, name).ino) == b"../../snapshots/" + name
    sroot = fs.getattr(snapshot_ino(fs))
    assert (sroot.type, sroot.mtime_ns, sroot.immutable) == (DIR, snap.time_ns, True)
    assert fs.xattrs(ROOT_INODE) == []
    assert fs.xattrs(sroot.ino) == []
    with pytest.raises(PathNotFound):
        fs.lookup(ROOT_INODE, b"nothing")
    with pytest.raises(PathNotFound):
        fs.lookup(fs.lookup(ROOT_INODE, b"snapshots").ino, b"2000-01-01T00-00-00Z")
    with pytest.raises(PathNotFound):
        fs.lookup(latest.ino, b"x")  # not a directory


def test_readdir_pages_return_every_entry_once_in_order(backed: Backed) -> None:
    fs, src = backed.fs, backed.src
    many = lookup_path(fs, src / "many")
    expected = sorted(os.fsencode(n) for n in os.listdir(src / "many"))
    assert len(expected) == MANY

    seen: list[bytes] = []
    offset = 0
    while page := fs.readdir(many.ino, offset, 7):
        assert len(page) <= 7
        for name, attr, next_offset in page:
            assert next_offset > offset
            assert fs.lookup(many.ino, name) == attr
            seen.append(name)
            offset = next_offset
        # Resuming at any returned offset gives what follows that entry.
        mid_name, _, mid_offset = page[0]
        after = fs.readdir(many.ino, mid_offset, 2)
        assert [n for n, _, _ in after] == expected[expected.index(mid_name) + 1 :][:2]
    assert seen == expected
    assert fs.readdir(many.ino, offset, 7) == []
    assert fs.readdir(many.ino, offset + 1000, 7) == []
    # A page from the middle equals the slice it stands for.
    assert [n for n, _, _ in fs.readdir(many.ino, 700, 7)] == expected[700:707]
    # The source directory itself, with a large limit.
    top = lookup_path(fs, src)
    assert [n for n, _, _ in fs.readdir(top.ino, 0, 10_000)] == sorted(
        os.fsencode(n) for n in os.listdir(src)
    )


def test_readdir_of_a_file_is_empty(backed: Backed) -> None:
    fs = backed.fs
    hello = lookup_path(fs, backed.src / "hello.txt")
    assert fs.readdir(hello.ino, 0, 10) == []


def test_hardlinked_files_share_an_inode(backed: Backed) -> None:
    fs, src = backed.fs, backed.src
    a = lookup_path(fs, src / "hard_a")
    b = lookup_path(fs, src / "sub" / "hard_b")
    assert a.ino == b.ino
    assert a.nlink == b.nlink == 2
    listed = {n: attr for n, attr, _ in fs.readdir(lookup_path(fs, src / "sub").ino, 0, 100)}
    assert listed[b"hard_b"].ino == a.ino
    assert fs.content(a.ino) == fs.content(b.ino)


def test_lookup_of_a_missing_name_raises_path_not_found(backed: Backed) -> None:
    fs, src = backed.fs, backed.src
    top = lookup_path(fs, src)
    for name in (b"missing", b"HELLO.TXT", b"hello.tx", b"sub/inner.txt", b""):
        with pytest.raises(PathNotFound):
            fs.lookup(top.ino, name)
    hello = lookup_path(fs, src / "hello.txt")
    with pytest.raises(PathNotFound):
        fs.lookup(hello.ino, b"x")  # a file has no entries
    with pytest.raises(PathNotFound):
        fs.getattr(12345678)  # never looked up
    with pytest.raises(PathNotFound):
        fs.readlink(hello.ino)


def test_content_chunks_concatenate_to_the_file(backed: Backed) -> None:
    fs, src, repo = backed.fs, backed.src, backed.repo
    for rel in ("big.bin", "hello.txt", "empty", "hard_a", "sub/inner.txt", "many/n00042"):
        attr = lookup_path(fs, src / rel)
        content = fs.content(attr.ino)
        data = b"".join(repo.read_blob(blob_id) for blob_id, _ in content)
        assert data == (src / rel).read_bytes(), rel
        assert [len(repo.read_blob(b)) for b, _ in content] == [n for _, n in content]
        assert sum(n for _, n in content) == attr.size
    assert fs.content(lookup_path(fs, src / "empty").ino) == []
    assert len(fs.content(lookup_path(fs, src / "big.bin").ino)) > 1


def test_xattrs_round_trip(backed: Backed) -> None:
    fs, src = backed.fs, backed.src
    if not backed.xattrs:
        pytest.skip("this file system does not take user xattrs")
    inner = lookup_path(fs, src / "sub" / "inner.txt")
    assert (b"user.origin", b"snapfs test") in fs.xattrs(inner.ino)
    sub = lookup_path(fs, src / "sub")
    assert (b"user.dir", b"\x00\xff binary") in fs.xattrs(sub.ino)
    for path in all_paths(src):
        assert sorted(fs.xattrs(lookup_path(fs, path).ino)) == xattrs_of(path), path


def test_readlink_gives_the_stored_target(backed: Backed) -> None:
    fs, src = backed.fs, backed.src
    for rel in ("link", "dangling"):
        attr = lookup_path(fs, src / rel)
        target = fs.readlink(attr.ino)
        assert target == os.fsencode(os.readlink(src / rel))
        assert attr.size == len(target)


def test_describe_names_the_snapshot_and_the_path(backed: Backed) -> None:
    fs, src = backed.fs, backed.src
    ((name, _),) = snapshot_names([backed.snap])
    for rel in ("sub/inner.txt", "sub/deeper/ünï.txt", "many/n01499"):
        attr = lookup_path(fs, src / rel)
        assert fs.describe(attr.ino) == f"snapshot {name.decode()}: {src / rel}"
    assert fs.describe(snapshot_ino(fs)) == f"snapshot {name.decode()}: /"
    assert fs.describe(987654321) == "inode 987654321"  # never looked up: no exception


def test_inode_numbers_are_stable_across_caches(backed: Backed, tmp_path: Path) -> None:
    first = inode_map(backed.fs, backed.src)
    other = vfs_cache(tmp_path / "vfs2")
    try:
        second_fs = SnapshotFS(backed.repo, other)
        # Reached by listings this time, not lookups.
        assert inode_map(second_fs, backed.src) == first
        many = first[backed.src / "many"]
        listed = {n: a.ino for n, a, _ in second_fs.readdir(many, 0, 10_000)}
        assert listed == {
            os.fsencode(p.name): ino for p, ino in first.items() if p.parent.name == "many"
        }
    finally:
        other.close()
    with pytest.raises(PathNotFound):
        # (not max ^ 1: entries of one directory have consecutive numbers)
        SnapshotFS(backed.repo, backed.cache).getattr(entry_inode(ROOT_INODE + 12345, 7))


def test_the_vfs_cache_is_derived_and_may_be_deleted(backed: Backed) -> None:
    before = inode_map(backed.fs, backed.src)
    backed.cache.close()
    shutil.rmtree(backed.cache_dir)
    assert not backed.cache_dir.exists()
    fresh = vfs_cache(backed.cache_dir)
    backed.cache = fresh  # closed by the fixture
    fs = SnapshotFS(backed.repo, fresh)
    assert inode_map(fs, backed.src) == before
    big = lookup_path(fs, backed.src / "big.bin")
    data = b"".join(backed.repo.read_blob(b) for b, _ in fs.content(big.ino))
    assert data == (backed.src / "big.bin").read_bytes()


def test_dirindex_counts_and_finds_entries(backed: Backed) -> None:
    index = DirIndex(backed.repo, backed.cache)
    tree = backed.snap.tree
    assert index.ensure(tree) == len(backed.repo.read_tree(tree))
    assert index.ensure(tree) == len(backed.repo.read_tree(tree))  # second time from LMDB
    first = backed.repo.read_tree(tree)[0]
    found = index.find(tree, first.name)
    assert found is not None
    assert found[0] == 0
    assert found[1].name == first.name
    assert index.find(tree, b"\xffno such name") is None


def test_a_new_snapshot_appears_when_the_layout_ttl_has_passed(
    local_repo: Repository, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"one\n")
    first = backup(local_repo, src)
    cache = vfs_cache(tmp_path / "vfs")
    try:
        fs = SnapshotFS(local_repo, cache, layout_ttl=0)
        snaps = fs.lookup(ROOT_INODE, b"snapshots")
        assert len(fs.readdir(snaps.ino, 0, 100)) == 1
        assert [n for n, _, _ in fs.readdir(ROOT_INODE, 0, 100)] == [
            b"hosts",
            b"ids",
            b"latest",
            b"snapshots",
            b"tags",
        ]
        before = fs.lookup(ROOT_INODE, b"latest").ino

        (src / "b.txt").write_bytes(b"two\n")
        second = backup(local_repo, src, host="otherhost")
        names = names_by_id([first, second])

        listed = [n for n, _, _ in fs.readdir(snaps.ino, 0, 100)]
        assert listed == sorted(names.values())
        new_root = fs.lookup(snaps.ino, names[second.id])
        b_txt = new_root
        for comp in src.parts[1:]:
            b_txt = fs.lookup(b_txt.ino, os.fsencode(comp))
        b_txt = fs.lookup(b_txt.ino, b"b.txt")
        assert b"".join(local_repo.read_blob(c) for c, _ in fs.content(b_txt.ino)) == b"two\n"
        latest = fs.lookup(ROOT_INODE, b"latest")
        assert before == layout_inode(b"latest/" + names[first.id])
        assert latest.ino == layout_inode(b"latest/" + names[second.id])
        assert [n for n, _, _ in fs.readdir(latest.ino, 0, 10)] == [src.parts[1].encode()]
        hosts = fs.lookup(ROOT_INODE, b"hosts")
        assert fs.lookup(hosts.ino, b"otherhost").type == DIR
        ids = fs.lookup(ROOT_INODE, b"ids")
        assert fs.lookup(ids.ino, second.short_id.encode()).type == SYMLINK
        # The snapshot that was there keeps its inode.
        assert fs.lookup(snaps.ino, names[first.id]).ino == layout_inode(
            b"snapshots/" + names[first.id]
        )
    finally:
        cache.close()


def test_files_after_walk_on_into_the_next_directories(
    local_repo: Repository, tmp_path: Path
) -> None:
    """What a ``cp -r`` opens after a file: the rest of its directory, then depth-first
    through the directories after it (empty files and empty directories have nothing),
    each under the inode a lookup gives it."""
    src = tmp_path / "src"
    layout = {
        "a/1": b"one",
        "a/2": b"two",
        "a/3sub/x": b"three",
        "a/4": b"four",
        "b/5": b"five",
        "b/6empty": b"",
        "d/7": b"seven",
    }
    for rel, data in layout.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    (src / "c").mkdir()
    backup(local_repo, src)
    cache = vfs_cache(tmp_path / "vfs")
    try:
        fs = SnapshotFS(local_repo, cache)
        first = lookup_path(fs, src / "a/1").ino
        # before anything after a/1 was looked up: the walk numbers them itself
        found = fs.files_after(first).take(10, 1 << 20)
        order = ["a/2", "a/3sub/x", "a/4", "b/5", "d/7"]
        inos = {rel: lookup_path(fs, src / rel).ino for rel in layout}
        parents = {r: lookup_path(fs, src / r).ino for r in ["a", "a/3sub", "b", "d"]}
        expected = [
            Following(inos[r], parents[r.rsplit("/", 1)[0]], len(layout[r]), fs.content(inos[r]))
            for r in order
        ]
        assert found == expected
        walk = fs.files_after(first)
        taken = [walk.take(2, 1 << 20), walk.take(1, 1 << 20), walk.take(10, 1 << 20)]
        assert taken == [expected[:2], expected[2:3], expected[3:]]  # each goes on
        assert walk.done
        walk = fs.files_after(first)
        assert walk.take(10, 3) == expected[:1]  # "two" is 3 bytes: the budget is spent
        assert walk.take(10, 1) == expected[1:2]  # at least one file
        assert walk.take(10, 8) == expected[2:4]  # "four" and "five" spend 8
        assert walk.take(10, 9) == expected[4:]
        last = inos["d/7"]
        walk = fs.files_after(last)
        assert walk.take(10, 1 << 20) == []  # the end of the snapshot
        assert walk.done
    finally:
        cache.close()


def test_list_subdirs_lists_and_loads_the_subdirectories_of_a_listed_directory(
    backed: Backed, tmp_path: Path
) -> None:
    cache = vfs_cache(tmp_path / "fresh")
    try:
        fs = SnapshotFS(backed.repo, cache)
        src = lookup_path(fs, backed.src)
        listing = fs.readdir_details(src.ino, 0, 1000)
        subdirs = [d.attr.ino for _, d, _ in listing if d.attr.type == DIR]
        page = fs.dirs.page(listing[0][1].tree or b"", 0, 1000)
        subtrees = [e.subtree for _, e in page if e.subtree is not None]
        assert len(subdirs) == len(subtrees) >= 2
        assert all(cache.get("dirs", t) is None for t in subtrees)
        one = fs.list_subdirs(src.ino, 1, 10_000)
        assert list(one) == subdirs[:1]  # bounded
        got = fs.list_subdirs(src.ino, 64, 10_000)
        assert list(got) == subdirs
        for ino, entries in got.items():
            assert entries == fs.readdir_details(ino, 0, 100_000)
        assert all(cache.get("dirs", t) is not None for t in subtrees)
        sizes = [len(got[ino]) for ino in subdirs]
        budget = fs.list_subdirs(src.ino, 64, sizes[0])  # only the first fits
        assert list(budget) == subdirs[:1]
        assert fs.list_subdirs(lookup_path(fs, backed.src / "hello.txt").ino, 64, 100) == {}
    finally:
        cache.close()
