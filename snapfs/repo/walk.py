"""Every blob a set of snapshots references, each tree visited once.

Sync. Memory holds the ids of the trees already visited (32 bytes each, one per distinct
directory), never a decoded tree beyond the one being read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from snapfs.repo.format import BLOB_DATA, BLOB_TREE
from snapfs.repo.repository import Repository
from snapfs.repo.snapshot import Snapshot
from snapfs.repo.tree import DIR, FILE, Node


@dataclass(frozen=True, slots=True)
class Reference:
    """A blob as seen from a snapshot: where it is used, for error reports."""

    blob_id: bytes
    type: int
    snapshot: Snapshot
    path: bytes


def referenced(
    repo: Repository,
    snapshots: Iterable[Snapshot],
    on_tree_error: Callable[[Reference, Exception], None] | None = None,
) -> Iterator[Reference]:
    """Yield each tree blob once and every data blob each time a new tree lists it.

    A tree that cannot be read is reported to ``on_tree_error`` (and its subtree skipped)
    when given, else the error propagates."""
    seen: set[bytes] = set()
    for snap in snapshots:
        stack: list[tuple[bytes, bytes]] = [(snap.tree, b"/")]
        while stack:
            tree_id, path = stack.pop()
            if tree_id in seen:
                continue
            seen.add(tree_id)
            ref = Reference(tree_id, BLOB_TREE, snap, path)
            yield ref
            try:
                nodes = repo.read_tree(tree_id)
            except Exception as e:
                if on_tree_error is None:
                    raise
                on_tree_error(ref, e)
                continue
            yield from _children(snap, path, nodes, stack)


def _children(
    snap: Snapshot, path: bytes, nodes: list[Node], stack: list[tuple[bytes, bytes]]
) -> Iterator[Reference]:
    for node in nodes:
        child = path.rstrip(b"/") + b"/" + node.name
        if node.type == FILE:
            for blob_id, _ in node.content:
                yield Reference(blob_id, BLOB_DATA, snap, child)
        elif node.type == DIR and node.subtree is not None:
            stack.append((node.subtree, child))
