"""A full consistency check of a repository through the public API, for tests: every
index entry points at an existing pack, every snapshot's trees and blobs read back."""

from __future__ import annotations

from pathlib import Path

from snapfs.repo.format import pack_name
from snapfs.repo.repository import Repository
from snapfs.repo.tree import DIR, FILE
from snapfs.store.local import LocalStore
from snapfs.vfs.paths import root_node, walk


def check_repository(path: Path, password: bytes, cache: Path) -> int:
    """Return the number of snapshots; raise on any inconsistency."""
    repo = Repository.open(LocalStore(path), password, cache)
    try:
        packs = {bytes(v[1:33]) for _, v in repo.cache.items("blobs")}
        for pack in packs:
            assert repo.store.exists(pack_name(pack)), f"indexed pack {pack.hex()} is missing"
        snaps = repo.list_snapshots()
        for snap in snaps:
            for _, node in walk(repo, root_node(snap), b"/"):
                if node.type == FILE:
                    for blob_id, size in node.content:
                        assert len(repo.read_blob(blob_id)) == size
                elif node.type == DIR:
                    assert node.subtree is not None
        return len(snaps)
    finally:
        repo.close()
