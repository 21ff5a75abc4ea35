"""Snapshots as one read-only file system: lookup, attributes, listings, links, xattrs
and file contents by inode — everything a mount (or any other front end) needs, with
no FUSE in sight.

Sync and thread-safe; each call is one coarse unit of work for a worker thread.
Memory: the layout (per snapshot) and nothing per file — inode records live in LMDB.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from dataclasses import dataclass

from snapfs.cache import Cache
from snapfs.errors import PathNotFound
from snapfs.repo.repository import Repository
from snapfs.repo.tree import DIR, FILE, SYMLINK
from snapfs.vfs.dirindex import DirIndex, Entry
from snapfs.vfs.inodes import ROOT_INODE, entry_inode, hardlink_inode
from snapfs.vfs.layout import Layout, LayoutDir, LayoutLink, SnapshotRoot, build_layout

log = logging.getLogger(__name__)

_INO = struct.Struct("<QQ32sI")  # parent inode, snapshot inode, tree id, ordinal
LAYOUT_TTL = 5.0


@dataclass(frozen=True, slots=True)
class Attr:
    ino: int
    type: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    ctime_ns: int
    nlink: int
    rdev: int = 0
    immutable: bool = True  # False for the layout, which changes as snapshots come


@dataclass(frozen=True, slots=True)
class Details:
    """An entry with everything a front end answers without asking again: attributes,
    xattrs and, for files of a few chunks, the chunk list; plus where it is listed
    (tree, ordinal) so the files after it can be prefetched."""

    attr: Attr
    xattrs: tuple[tuple[bytes, bytes], ...] = ()
    content: tuple[tuple[bytes, int], ...] | None = None
    tree: bytes | None = None
    ordinal: int = -1
    target: bytes | None = None  # symlinks


SMALL_CONTENT = 16  # chunks; longer lists are fetched when the file is opened
WALK_PAGE = 128


@dataclass(slots=True)
class _Budget:
    """How far a look-ahead walk may go: files to collect, and entries to look at, so
    a tree of directories without files cannot keep it going."""

    files: int
    entries: int = 0

    def done(self) -> bool:
        return self.files <= 0 or self.entries > 4 * self.files + 4 * WALK_PAGE


@dataclass(frozen=True, slots=True)
class _Where:
    parent: int
    snapshot: int
    tree: bytes
    ordinal: int


class SnapshotFS:
    def __init__(self, repo: Repository, vfs_cache: Cache, layout_ttl: float = LAYOUT_TTL) -> None:
        self.repo = repo
        self.cache = vfs_cache
        self.dirs = DirIndex(repo, vfs_cache)
        self._ttl = layout_ttl
        self._layout: Layout | None = None
        self._layout_time = 0.0
        self._layout_lock = threading.Lock()
        self.mounted_ns = time.time_ns()

    # -- layout -------------------------------------------------------------------------

    def layout(self, fresh: bool = False) -> Layout:
        """The current layout; re-listed when older than the TTL and ``fresh`` is asked
        (listings and lookups of layout directories), rebuilt only if the ids changed."""
        with self._layout_lock:
            now = time.monotonic()
            stale = self._layout is None or (fresh and now - self._layout_time > self._ttl)
            if stale:
                names = {n.rsplit("/", 1)[-1] for n, _ in self.repo.store.list("snapshots/")}
                ids = frozenset(bytes.fromhex(n) for n in names)
                if self._layout is None or ids != self._layout.ids:
                    self._layout = build_layout(self.repo.list_snapshots())
                self._layout_time = now
            assert self._layout is not None
            return self._layout

    # -- inode records ------------------------------------------------------------------

    def _where(self, ino: int) -> _Where:
        raw = self.cache.get("inodes", struct.pack("<Q", ino))
        if raw is None:
            raise PathNotFound(f"inode {ino} is not known")
        parent, snap, tree, ordinal = _INO.unpack(raw)
        return _Where(parent, snap, tree, ordinal)

    def _remember(self, rows: list[tuple[int, _Where]]) -> None:
        self.cache.put_tables(
            ("inodes", struct.pack("<Q", ino), _INO.pack(w.parent, w.snapshot, w.tree, w.ordinal))
            for ino, w in rows
        )

    def _entry_ino(self, parent: int, snapshot: int, ordinal: int, e: Entry) -> int:
        if e.type == FILE and e.nlink > 1:
            return hardlink_inode(snapshot, e.dev, e.inode)
        return entry_inode(parent, ordinal)

    # -- attributes -----------------------------------------------------------------------

    def _layout_attr(self, ino: int, layout: Layout) -> Attr | None:
        node = layout.get(ino)
        if isinstance(node, LayoutDir):
            return Attr(ino, DIR, 0o555, 0, 0, 0, node.mtime_ns, node.mtime_ns, 2, immutable=False)
        if isinstance(node, LayoutLink):
            n = len(node.target)
            return Attr(
                ino, SYMLINK, 0o777, 0, 0, n, node.mtime_ns, node.mtime_ns, 1, immutable=False
            )
        if isinstance(node, SnapshotRoot):
            t = node.snapshot.time_ns
            return Attr(ino, DIR, 0o555, 0, 0, 0, t, t, 2, immutable=not node.moving)
        return None

    @staticmethod
    def _layout_target(ino: int, layout: Layout) -> bytes | None:
        node = layout.get(ino)
        return node.target if isinstance(node, LayoutLink) else None

    @staticmethod
    def _entry_attr(ino: int, e: Entry) -> Attr:
        nlink = 2 if e.type == DIR else max(1, e.nlink)
        size = len(e.target or b"") if e.type == SYMLINK else e.size
        return Attr(ino, e.type, e.mode, e.uid, e.gid, size, e.mtime_ns, e.ctime_ns, nlink, e.rdev)

    def getattr(self, ino: int) -> Attr:
        attr = self._layout_attr(ino, self.layout())
        if attr is not None:
            return attr
        w = self._where(ino)
        return self._entry_attr(ino, self.dirs.entry(w.tree, w.ordinal))

    def _dir_tree(self, ino: int) -> tuple[bytes, int] | None:
        """(tree id, snapshot inode) of a directory inside a snapshot, else None."""
        node = self.layout().get(ino)
        if isinstance(node, SnapshotRoot):
            return node.snapshot.tree, ino
        if node is not None:
            return None
        w = self._where(ino)
        e = self.dirs.entry(w.tree, w.ordinal)
        if e.type != DIR or e.subtree is None:
            return None
        return e.subtree, w.snapshot

    # -- operations -------------------------------------------------------------------------

    def lookup(self, parent: int, name: bytes) -> Attr:
        return self.lookup_details(parent, name).attr

    def _details(self, tree: bytes, rows: list[tuple[int, int, Entry]]) -> list[Details]:
        extras = self.dirs.extras(tree, [ordinal for _, ordinal, _ in rows])
        out = []
        for (ino, ordinal, e), (xattrs, content) in zip(rows, extras, strict=True):
            small = tuple(content) if e.type == FILE and len(content) <= SMALL_CONTENT else None
            attr = self._entry_attr(ino, e)
            out.append(Details(attr, tuple(xattrs), small, tree, ordinal, e.target))
        return out

    def lookup_details(self, parent: int, name: bytes) -> Details:
        layout = self.layout(fresh=parent == ROOT_INODE)
        pnode = layout.get(parent)
        if isinstance(pnode, LayoutDir):
            if pnode.ino != ROOT_INODE:
                layout = self.layout(fresh=True)
                pnode = layout.get(parent)
            child = pnode.children.get(name) if isinstance(pnode, LayoutDir) else None
            attr = self._layout_attr(child, layout) if child is not None else None
            if attr is None:
                raise PathNotFound(f"{name!r} not found")
            return Details(attr, target=self._layout_target(attr.ino, layout))
        where = self._dir_tree(parent)
        if where is None:
            raise PathNotFound(f"{name!r} not found")
        tree, snap = where
        found = self.dirs.find(tree, name)
        if found is None:
            raise PathNotFound(f"{name!r} not found")
        ordinal, e = found
        ino = self._entry_ino(parent, snap, ordinal, e)
        self._remember([(ino, _Where(parent, snap, tree, ordinal))])
        return self._details(tree, [(ino, ordinal, e)])[0]

    def readdir(self, ino: int, start: int, limit: int) -> list[tuple[bytes, Attr, int]]:
        """Up to ``limit`` (name, attr, next offset) from offset ``start``."""
        return [(n, d.attr, i) for n, d, i in self.readdir_details(ino, start, limit)]

    def readdir_details(self, ino: int, start: int, limit: int) -> list[tuple[bytes, Details, int]]:
        layout = self.layout(fresh=start == 0)
        node = layout.get(ino)
        if isinstance(node, LayoutDir):
            names = sorted(node.children)[start : start + limit]
            out = []
            for i, name in enumerate(names, start + 1):
                attr = self._layout_attr(node.children[name], layout)
                if attr is not None:
                    out.append(
                        (name, Details(attr, target=self._layout_target(attr.ino, layout)), i)
                    )
            return out
        where = self._dir_tree(ino)
        if where is None:
            return []
        tree, snap = where
        page = self.dirs.page(tree, start, limit)
        inos = [self._entry_ino(ino, snap, o, e) for o, e in page]
        self._remember(
            [(c, _Where(ino, snap, tree, o)) for c, (o, _) in zip(inos, page, strict=True)]
        )
        details = self._details(tree, [(c, o, e) for c, (o, e) in zip(inos, page, strict=True)])
        return [(e.name, d, o + 1) for (o, e), d in zip(page, details, strict=True)]

    def load_subdirs(self, ino: int, limit: int) -> int:
        """Load the trees of up to ``limit`` subdirectories of a directory into the
        index: a directory just listed is usually entered next (cp -r, find, ls -R), and
        then its listing costs LMDB reads instead of a fetch and a decode. Returns how
        many were looked at."""
        where = self._dir_tree(ino)
        if where is None:
            return 0
        subtrees = [
            e.subtree
            for _, e in self.dirs.page(where[0], 0, max(4 * limit, 1024))
            if e.type == DIR and e.subtree is not None
        ][:limit]
        for tree in subtrees:
            self.dirs.ensure(tree)
        return len(subtrees)

    def may_hold_xattrs(self) -> bool:
        """Whether any snapshot has extended attributes (older ones may, unrecorded)."""
        return any(s.summary.get("xattrs", 1) for s in self.repo.list_snapshots())

    def following_chunks(self, ino: int, files: int) -> list[bytes]:
        """Chunk ids of the next ``files`` regular files after file ``ino`` in
        depth-first listing order, on into the directories after its own: what
        ``cp -r``, tar and rsync read next, and the order the writer stored them in."""
        out: list[bytes] = []
        try:
            w = self._where(ino)
            tree, start, dir_ino = w.tree, w.ordinal + 1, w.parent
            budget = _Budget(files)
            while True:
                self._files_from(tree, start, budget, out)
                if budget.done() or self.layout().get(dir_ino) is not None:
                    return out  # enough, or the snapshot's root is finished
                up = self._where(dir_ino)  # go on after this directory in its parent
                tree, start, dir_ino = up.tree, up.ordinal + 1, up.parent
        except PathNotFound:
            return out

    def _files_from(self, tree: bytes, start: int, budget: _Budget, out: list[bytes]) -> None:
        """Depth-first from entry ``start`` of ``tree`` to its end, or the budget's."""
        stack = [(tree, start)]
        while stack and not budget.done():
            t, pos = stack.pop()
            page = self.dirs.page(t, pos, WALK_PAGE)
            budget.entries += len(page)
            files: list[int] = []
            for ordinal, e in page:
                if e.type == FILE and e.size > 0:
                    files.append(ordinal)
                elif e.type == DIR and e.subtree is not None:
                    stack += [(t, ordinal + 1), (e.subtree, 0)]  # the subtree first
                    break
            else:
                if len(page) == WALK_PAGE:
                    stack.append((t, pos + WALK_PAGE))
            files = files[: budget.files]
            budget.files -= len(files)
            out += [blob_id for content in self.dirs.contents(t, files) for blob_id, _ in content]

    def readlink(self, ino: int) -> bytes:
        node = self.layout().get(ino)
        if isinstance(node, LayoutLink):
            return node.target
        w = self._where(ino)
        e = self.dirs.entry(w.tree, w.ordinal)
        if e.type != SYMLINK or e.target is None:
            raise PathNotFound("not a symlink")
        return e.target

    def xattrs(self, ino: int) -> list[tuple[bytes, bytes]]:
        if self.layout().get(ino) is not None:
            return []
        w = self._where(ino)
        return self.dirs.xattrs(w.tree, w.ordinal)

    def content(self, ino: int) -> list[tuple[bytes, int]]:
        w = self._where(ino)
        return self.dirs.content(w.tree, w.ordinal)

    def describe(self, ino: int) -> str:
        """'snapshot <name>: /path' for log lines; best effort, never raises."""
        parts: list[bytes] = []
        try:
            layout = self.layout()
            cur = ino
            while layout.get(cur) is None:
                w = self._where(cur)
                parts.append(self.dirs.entry(w.tree, w.ordinal).name)
                cur = w.parent
            root = layout.get(cur)
            label = root.name.decode() if isinstance(root, SnapshotRoot) else "?"
        except Exception as e:
            log.debug("cannot name inode %d: %s", ino, e)
            return f"inode {ino}"
        path = b"/" + b"/".join(reversed(parts))
        return f"snapshot {label}: {path.decode('utf-8', 'backslashreplace')}"
