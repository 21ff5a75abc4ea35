"""The top of the mounted tree as a pure function of the snapshot list:

    snapshots/<UTC time>/...   latest/... (the newest snapshot again)
    ids/<8-hex id> -> ../snapshots/<time>
    hosts/<host>/<time> -> ../../snapshots/<time>
    tags/<tag>/<time> -> ../../snapshots/<time>

Inode numbers are derived from paths, so the same layout always gets the same inodes.
``latest`` is a directory, not a symlink: the kernel does not cache FUSE symlinks, so
every path through a ``latest`` link cost a READLINK round trip per system call (2-3 per
file for ``cp -a``). Its inodes are those of a view of its own, ``latest/<name>``, so
when a newer snapshot arrives the name moves to a new inode and nothing stale is served.
Memory is proportional to the number of snapshots (a few hundred bytes each).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from snapfs.repo.snapshot import Snapshot
from snapfs.vfs.inodes import ROOT_INODE, layout_inode


@dataclass(slots=True)
class LayoutDir:
    ino: int
    children: dict[bytes, int] = field(default_factory=dict)
    mtime_ns: int = 0


@dataclass(frozen=True, slots=True)
class LayoutLink:
    ino: int
    target: bytes
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class SnapshotRoot:
    """The directory of one snapshot; its contents come from the snapshot's tree.
    ``moving`` marks a ``latest`` view: its name goes to another inode when a newer
    snapshot arrives, so the kernel may cache it only briefly."""

    ino: int
    snapshot: Snapshot
    name: bytes
    moving: bool = False


LayoutNode = LayoutDir | LayoutLink | SnapshotRoot


@dataclass(slots=True)
class Layout:
    nodes: dict[int, LayoutNode]
    ids: frozenset[bytes]

    def get(self, ino: int) -> LayoutNode | None:
        return self.nodes.get(ino)


def snapshot_names(snaps: list[Snapshot]) -> list[tuple[bytes, Snapshot]]:
    """UTC second names; later snapshots in the same second get their short id appended,
    so names already shown do not change when a newer snapshot is added. (A snapshot
    dated earlier within the same second but written later — clock skew between hosts —
    takes the plain name; docs/guide.md says so.)"""
    seen: set[str] = set()
    out = []
    for s in sorted(snaps, key=lambda s: (s.time_ns, s.id)):
        name = s.time.strftime("%Y-%m-%dT%H-%M-%SZ")
        if name in seen:
            name = f"{name}-{s.short_id}"
        seen.add(name)
        out.append((name.encode(), s))
    return out


def _safe(label: str) -> bytes:
    """Hosts and tags become directory names: '/' and NUL cannot appear in one."""
    cleaned = label.replace("/", "_").replace("\0", "_")
    return (cleaned if cleaned not in ("", ".", "..") else f"_{cleaned}_").encode()


def build_layout(snaps: list[Snapshot]) -> Layout:
    nodes: dict[int, LayoutNode] = {}

    def mkdir(path: bytes) -> LayoutDir:
        ino = ROOT_INODE if path == b"" else layout_inode(path)
        d = nodes.get(ino)
        if not isinstance(d, LayoutDir):
            d = LayoutDir(ino)
            nodes[ino] = d
            if path:
                parent_path, _, name = path.rpartition(b"/")
                mkdir(parent_path).children[name] = ino
        return d

    def link(dir_path: bytes, name: bytes, target: bytes, mtime_ns: int) -> None:
        path = dir_path + b"/" + name
        ino = layout_inode(path)
        nodes[ino] = LayoutLink(ino, target, mtime_ns)
        mkdir(dir_path).children[name] = ino

    root = mkdir(b"")
    for top in (b"snapshots", b"ids", b"hosts", b"tags"):
        mkdir(top)
    named = snapshot_names(snaps)
    for name, snap in named:
        ino = layout_inode(b"snapshots/" + name)
        nodes[ino] = SnapshotRoot(ino, snap, name)
        mkdir(b"snapshots").children[name] = ino
        # a view for every snapshot: a process inside an older ``latest`` goes on working
        view = layout_inode(b"latest/" + name)
        nodes[view] = SnapshotRoot(view, snap, name, moving=True)
        short = snap.short_id.encode()
        if short in mkdir(b"ids").children:  # 1 in 4 billion: show more digits
            short = snap.id.hex()[:16].encode()
        link(b"ids", short, b"../snapshots/" + name, snap.time_ns)
        link(b"hosts/" + _safe(snap.host), name, b"../../snapshots/" + name, snap.time_ns)
        for tag in snap.tags:
            link(b"tags/" + _safe(tag), name, b"../../snapshots/" + name, snap.time_ns)
    if named:
        newest_name, newest = named[-1]
        root.children[b"latest"] = layout_inode(b"latest/" + newest_name)
        root.mtime_ns = newest.time_ns
    for node in nodes.values():
        if isinstance(node, LayoutDir) and node.ino != ROOT_INODE:
            node.mtime_ns = root.mtime_ns
    return Layout(nodes, frozenset(s.id for s in snaps))
