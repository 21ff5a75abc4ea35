"""What changed between two snapshots: added, removed, changed and metadata-only paths.

Sync. The two root trees are walked together and a directory is entered only when its
subtree ids differ: equal tree ids mean identical subtrees (trees are content-addressed),
so an unchanged part of the file system costs nothing. Memory holds, per depth level, the
two trees being compared (one when a whole directory was added or removed), plus the
Repository's bounded tree cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from snapfs.repo.repository import Repository
from snapfs.repo.snapshot import Snapshot
from snapfs.repo.tree import BLOCKDEV, CHARDEV, DIR, FILE, SYMLINK, Node

ADDED = "+"
REMOVED = "-"
CHANGED = "M"
METADATA = "U"
KINDS = (ADDED, REMOVED, CHANGED, METADATA)


@dataclass(frozen=True, slots=True)
class Change:
    """One path that differs. ``old``/``new`` are its nodes (None where absent).

    ``bytes_added``/``bytes_removed`` count file data, per file: the bytes of the chunks
    the new version has and the old one does not, and the converse (an added file counts
    whole, a removed file too)."""

    kind: str
    path: bytes
    old: Node | None
    new: Node | None
    bytes_added: int = 0
    bytes_removed: int = 0


@dataclass(slots=True)
class DiffSummary:
    added: int = 0
    removed: int = 0
    changed: int = 0
    metadata: int = 0
    bytes_added: int = 0
    bytes_removed: int = 0

    def count(self, change: Change) -> None:
        if change.kind == ADDED:
            self.added += 1
        elif change.kind == REMOVED:
            self.removed += 1
        elif change.kind == CHANGED:
            self.changed += 1
        else:
            self.metadata += 1
        self.bytes_added += change.bytes_added
        self.bytes_removed += change.bytes_removed


@dataclass(slots=True)
class Diff:
    """Runs a diff; ``changes()`` streams the paths, ``summary`` adds them up as it goes."""

    repo: Repository
    old: Snapshot
    new: Snapshot
    summary: DiffSummary = field(default_factory=DiffSummary)

    def changes(self) -> Iterator[Change]:
        for change in diff_trees(self.repo, self.old.tree, self.new.tree):
            self.summary.count(change)
            yield change


def diff_trees(
    repo: Repository, old_tree: bytes | None, new_tree: bytes | None, base: bytes = b"/"
) -> Iterator[Change]:
    """Every differing path below two trees, in tree order: each directory's entries
    sorted by name bytes, a directory followed by what changed inside it.

    A directory that was added or removed is reported with everything below it; an entry
    whose type changed is ``M`` and, when a directory is involved, the old directory's
    contents are removed and the new one's added."""
    if old_tree == new_tree:
        return
    stack = [_pairs(base, _read(repo, old_tree), _read(repo, new_tree))]
    while stack:
        pair = next(stack[-1], None)
        if pair is None:
            stack.pop()
            continue
        path, old, new = pair
        change = _compare(path, old, new)
        if change is not None:
            yield change
        old_sub = old.subtree if old is not None and old.type == DIR else None
        new_sub = new.subtree if new is not None and new.type == DIR else None
        if old_sub != new_sub:
            stack.append(_pairs(path, _read(repo, old_sub), _read(repo, new_sub)))


def _read(repo: Repository, tree_id: bytes | None) -> list[Node]:
    return [] if tree_id is None else repo.read_tree(tree_id)


def _pairs(
    base: bytes, old_nodes: list[Node], new_nodes: list[Node]
) -> Iterator[tuple[bytes, Node | None, Node | None]]:
    """Merge two directories by name: (path, old node or None, new node or None)."""
    prefix = base.rstrip(b"/") + b"/"
    old_sorted = sorted(old_nodes, key=lambda n: n.name)
    new_sorted = sorted(new_nodes, key=lambda n: n.name)
    i = j = 0
    while i < len(old_sorted) or j < len(new_sorted):
        o = old_sorted[i] if i < len(old_sorted) else None
        n = new_sorted[j] if j < len(new_sorted) else None
        if n is None or (o is not None and o.name < n.name):
            assert o is not None
            yield prefix + o.name, o, None
            i += 1
        elif o is None or n.name < o.name:
            yield prefix + n.name, None, n
            j += 1
        else:
            yield prefix + n.name, o, n
            i += 1
            j += 1


def _compare(path: bytes, old: Node | None, new: Node | None) -> Change | None:
    if old is None:
        assert new is not None
        return Change(ADDED, path, None, new, bytes_added=_data_size(new))
    if new is None:
        return Change(REMOVED, path, old, None, bytes_removed=_data_size(old))
    if old.type != new.type:
        return Change(CHANGED, path, old, new, _data_size(new), _data_size(old))
    if _content(old) != _content(new):
        if old.type != FILE:
            return Change(CHANGED, path, old, new)
        old_ids = {cid for cid, _ in old.content}
        new_ids = {cid for cid, _ in new.content}
        added = sum(size for cid, size in new.content if cid not in old_ids)
        removed = sum(size for cid, size in old.content if cid not in new_ids)
        return Change(CHANGED, path, old, new, added, removed)
    if _metadata(old) != _metadata(new):
        return Change(METADATA, path, old, new)
    return None


def _data_size(node: Node) -> int:
    return sum(size for _, size in node.content) if node.type == FILE else 0


def _content(node: Node) -> object:
    """What ``M`` compares: a file's chunk list, a link target, a device number."""
    if node.type == FILE:
        return node.content
    if node.type == SYMLINK:
        return node.target
    if node.type in (CHARDEV, BLOCKDEV):
        return node.rdev
    return None


def _metadata(node: Node) -> tuple[int, int, int, int, list[tuple[bytes, bytes]]]:
    """What ``U`` compares (ctime, inode, device and link count are not compared)."""
    return node.mode, node.uid, node.gid, node.mtime_ns, sorted(node.xattrs)
