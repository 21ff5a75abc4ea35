"""Resolving paths inside a snapshot and walking its trees one directory at a time.

Sync; reads trees through the Repository (which caches a bounded number of them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from snapfs.errors import PathNotFound
from snapfs.repo.repository import Repository
from snapfs.repo.snapshot import Snapshot
from snapfs.repo.tree import DIR, Node


def root_node(snap: Snapshot) -> Node:
    """The snapshot's root as a directory node (it has no entry of its own)."""
    return Node(
        name=b"", type=DIR, mode=0o755, uid=0, gid=0, mtime_ns=snap.time_ns, subtree=snap.tree
    )


def children(repo: Repository, node: Node) -> list[Node]:
    if node.type != DIR or node.subtree is None:
        return []
    return repo.read_tree(node.subtree)


def split_path(path: str) -> list[bytes]:
    return [c for c in os.fsencode(path).split(b"/") if c and c != b"."]


def resolve(repo: Repository, snap: Snapshot, path: str) -> Node:
    """The node at an absolute path of the snapshot (``/`` is the root)."""
    node = root_node(snap)
    for comp in split_path(path):
        if node.type != DIR:
            raise PathNotFound(f"{path}: not a directory in snapshot {snap.short_id}")
        match = [c for c in children(repo, node) if c.name == comp]
        if not match:
            raise PathNotFound(f"{path}: no such file or directory in snapshot {snap.short_id}")
        node = match[0]
    return node


def walk(repo: Repository, node: Node, path: bytes) -> Iterator[tuple[bytes, Node]]:
    """Pre-order (path, node) pairs below ``node``; holds one tree per depth level."""
    for child in children(repo, node):
        cpath = path.rstrip(b"/") + b"/" + child.name
        yield cpath, child
        if child.type == DIR:
            yield from walk(repo, child, cpath)
