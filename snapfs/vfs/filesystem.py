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


@dataclass(frozen=True, slots=True)
class Following:
    """A file a sequential reader is likely to open next."""

    ino: int
    parent: int
    size: int
    chunks: list[tuple[bytes, int]]


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

    def list_subdirs(
        self, ino: int, limit: int, max_entries: int
    ) -> dict[int, list[tuple[bytes, Details, int]]]:
        """The listings of up to ``limit`` subdirectories of a directory, as
        ``readdir_details`` gives them, while they add up to at most ``max_entries``:
        a directory just listed is usually entered next (cp -r, find, ls -R), and its
        listing is then ready without a lookup. Subdirectories past the budget get their
        trees loaded into the index only, so listing them costs LMDB reads instead of a
        fetch and a decode."""
        where = self._dir_tree(ino)
        if where is None:
            return {}
        tree, snap = where
        subdirs = [
            (self._entry_ino(ino, snap, ordinal, e), e.subtree)
            for ordinal, e in self.dirs.page(tree, 0, max(4 * limit, 1024))
            if e.type == DIR and e.subtree is not None
        ][:limit]
        out: dict[int, list[tuple[bytes, Details, int]]] = {}
        for sub, subtree in subdirs:
            self.dirs.ensure(subtree)
            if max_entries > 0:
                listing = self.readdir_details(sub, 0, max_entries + 1)
                if len(listing) <= max_entries:
                    out[sub] = listing
                max_entries -= len(listing)
        return out

    def may_hold_xattrs(self) -> bool:
        """Whether any snapshot has extended attributes (older ones may, unrecorded)."""
        return any(s.summary.get("xattrs", 1) for s in self.repo.list_snapshots())

    def files_after(self, ino: int) -> FileWalk:
        """The regular files after file ``ino`` in depth-first listing order, on into
        the directories after its own: what ``cp -r``, tar and rsync read next, and the
        order the writer stored them in."""
        return FileWalk(self, ino)

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


class FileWalk:
    """A resumable depth-first walk over the files after one file. Each ``take``
    goes on where the last stopped, so a reader that keeps going costs every entry
    one look, however often the walk is extended. Not thread-safe: one ``take`` at a
    time (each is a unit of work for a worker thread)."""

    def __init__(self, fs: SnapshotFS, ino: int) -> None:
        self.fs = fs
        self.ino = ino
        self.done = False
        self._stack: list[_Where] | None = None  # positions still to visit, next last
        self._outer = 0  # the directory the walk climbs out of once the stack is empty
        self._snapshot = 0

    def take(self, files: int, max_bytes: int) -> list[Following]:
        """The next non-empty files, up to ``files`` of them or ``max_bytes`` of
        contents (at least one file). Inodes are numbered as lookups and listings
        number them, so a front end can hand the contents to the kernel under the
        inode it will be asked for. Looks at a bounded number of entries, so a tree of
        directories without files cannot keep one call going."""
        out: list[Following] = []
        try:
            if self._stack is None:
                w = self.fs._where(self.ino)
                self._stack = [_Where(w.parent, w.snapshot, w.tree, w.ordinal + 1)]
                self._outer, self._snapshot = w.parent, w.snapshot
            entries, size = 0, 0
            while len(out) < files and size < max_bytes and entries < 4 * (files + WALK_PAGE):
                if not self._stack and not self._climb():
                    self.done = True
                    break
                found, looked = self._visit(self._stack.pop(), files - len(out), max_bytes - size)
                out += found
                entries += looked
                size += sum(f.size for f in found)
        except PathNotFound:
            self.done = True
        return out

    def _climb(self) -> bool:
        """Go on after the outermost directory walked, in its parent."""
        assert self._stack is not None
        if self.fs.layout().get(self._outer) is not None:
            return False  # the snapshot's root is finished
        up = self.fs._where(self._outer)
        self._stack.append(_Where(up.parent, self._snapshot, up.tree, up.ordinal + 1))
        self._outer = up.parent
        return True

    def _visit(self, w: _Where, files: int, max_bytes: int) -> tuple[list[Following], int]:
        """Files from entry ``w.ordinal`` of directory ``w.parent`` (listing ``w.tree``)
        up to its first subdirectory, which is pushed to be visited next, then the
        rest of this directory after it; or up to the budget, and the rest is pushed.
        Returns the files and the entries looked at."""
        assert self._stack is not None
        fs = self.fs
        page = fs.dirs.page(w.tree, w.ordinal, WALK_PAGE)
        found: list[tuple[int, Entry]] = []
        for ordinal, e in page:
            if len(found) == files or max_bytes <= 0:
                self._stack.append(_Where(w.parent, w.snapshot, w.tree, ordinal))
                break
            if e.type == FILE and e.size > 0:
                found.append((ordinal, e))
                max_bytes -= e.size
            elif e.type == DIR and e.subtree is not None:
                sub = fs._entry_ino(w.parent, w.snapshot, ordinal, e)
                self._stack += [  # the subtree first
                    _Where(w.parent, w.snapshot, w.tree, ordinal + 1),
                    _Where(sub, w.snapshot, e.subtree, 0),
                ]
                break
        else:
            if len(page) == WALK_PAGE:
                self._stack.append(_Where(w.parent, w.snapshot, w.tree, w.ordinal + WALK_PAGE))
        contents = fs.dirs.contents(w.tree, [ordinal for ordinal, _ in found])
        return [
            Following(fs._entry_ino(w.parent, w.snapshot, ordinal, e), w.parent, e.size, content)
            for (ordinal, e), content in zip(found, contents, strict=True)
        ], len(page)
