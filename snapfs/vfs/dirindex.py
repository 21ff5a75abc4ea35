"""Decoded directory trees in LMDB, addressable by (tree id, ordinal) and by name.

A tree blob is fetched, decrypted and parsed once; after that a lookup or a page of a
listing is a few LMDB reads and no Python object holds the directory. Trees are
immutable, so the table is valid across mounts; it is derived, so it may be lost.

Sync; every method runs in a worker thread.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from snapfs.cache import Cache
from snapfs.errors import FormatError
from snapfs.repo.repository import Repository
from snapfs.repo.tree import NODE_TYPES, Node, decode_tree

_ORD = struct.Struct(">I")  # big-endian so LMDB key order is ordinal order
_REC = struct.Struct("<BIIIQqqIQQQ32sH")
_CHUNK = struct.Struct("<32sI")
_XATTR = struct.Struct("<HI")
_NO_TREE = bytes(32)


@dataclass(frozen=True, slots=True)
class Entry:
    """What a directory listing and ``stat`` need of one tree node."""

    name: bytes
    type: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    ctime_ns: int
    nlink: int
    inode: int
    dev: int
    rdev: int
    subtree: bytes | None
    target: bytes | None


def encode_entry(n: Node) -> bytes:
    head = _REC.pack(
        NODE_TYPES.index(n.type),
        n.mode,
        n.uid,
        n.gid,
        n.size,
        n.mtime_ns,
        n.ctime_ns,
        n.nlink,
        n.inode,
        n.dev,
        n.rdev,
        n.subtree or _NO_TREE,
        len(n.name),
    )
    return head + n.name + (n.target or b"")


def decode_entry(raw: bytes) -> Entry:
    t, mode, uid, gid, size, mtime, ctime, nlink, ino, dev, rdev, sub, nlen = _REC.unpack_from(raw)
    name = raw[_REC.size : _REC.size + nlen]
    kind = NODE_TYPES[t]
    return Entry(
        name=name,
        type=kind,
        mode=mode,
        uid=uid,
        gid=gid,
        size=size,
        mtime_ns=mtime,
        ctime_ns=ctime,
        nlink=nlink,
        inode=ino,
        dev=dev,
        rdev=rdev,
        subtree=None if sub == _NO_TREE else sub,
        target=raw[_REC.size + nlen :] if kind == "symlink" else None,
    )


class DirIndex:
    def __init__(self, repo: Repository, cache: Cache) -> None:
        self.repo = repo
        self.cache = cache

    def ensure(self, tree_id: bytes) -> int:
        """Number of entries of a tree, loading it into the table on first use."""
        raw = self.cache.get("dirs", tree_id)
        if raw is not None:
            return int(_ORD.unpack(raw)[0])
        nodes = decode_tree(self.repo.read_blob(tree_id))
        self.cache.put_tables(self._rows(tree_id, nodes))
        return len(nodes)

    @staticmethod
    def _rows(tree_id: bytes, nodes: list[Node]) -> list[tuple[str, bytes, bytes]]:
        rows: list[tuple[str, bytes, bytes]] = []
        for i, n in enumerate(nodes):
            key = tree_id + _ORD.pack(i)
            rows.append(("entries", key, encode_entry(n)))
            rows.append(("names", tree_id + n.name, _ORD.pack(i)))
            if n.content:
                rows.append(("contents", key, b"".join(_CHUNK.pack(c, s) for c, s in n.content)))
            if n.xattrs:
                rows.append(("xattrs", key, _encode_xattrs(n.xattrs)))
        rows.append(("dirs", tree_id, _ORD.pack(len(nodes))))  # last: marks the tree complete
        return rows

    def find(self, tree_id: bytes, name: bytes) -> tuple[int, Entry] | None:
        self.ensure(tree_id)
        raw = self.cache.get("names", tree_id + name)
        if raw is None:
            return None
        ordinal = int(_ORD.unpack(raw)[0])
        return ordinal, self.entry(tree_id, ordinal)

    def entry(self, tree_id: bytes, ordinal: int) -> Entry:
        raw = self.cache.get("entries", tree_id + _ORD.pack(ordinal))
        if raw is None:
            self.ensure(tree_id)
            raw = self.cache.get("entries", tree_id + _ORD.pack(ordinal))
            if raw is None:
                raise FormatError(f"tree {tree_id.hex()[:16]} has no entry {ordinal}")
        return decode_entry(raw)

    def page(self, tree_id: bytes, start: int, limit: int) -> list[tuple[int, Entry]]:
        self.ensure(tree_id)
        rows = self.cache.scan("entries", tree_id, _ORD.pack(start), limit)
        return [(int(_ORD.unpack(k[32:])[0]), decode_entry(v)) for k, v in rows]

    def content(self, tree_id: bytes, ordinal: int) -> list[tuple[bytes, int]]:
        return _decode_content(self.cache.get("contents", tree_id + _ORD.pack(ordinal)) or b"")

    def extras(
        self, tree_id: bytes, ordinals: list[int]
    ) -> list[tuple[list[tuple[bytes, bytes]], list[tuple[bytes, int]]]]:
        """(xattrs, content) of several entries, in two LMDB reads."""
        keys = [tree_id + _ORD.pack(i) for i in ordinals]
        xattrs = self.cache.get_many("xattrs", keys)
        contents = self.cache.get_many("contents", keys)
        return [
            (_decode_xattrs(x) if x else [], _decode_content(c) if c else [])
            for x, c in zip(xattrs, contents, strict=True)
        ]

    def contents(self, tree_id: bytes, ordinals: list[int]) -> list[list[tuple[bytes, int]]]:
        keys = [tree_id + _ORD.pack(i) for i in ordinals]
        return [_decode_content(c or b"") for c in self.cache.get_many("contents", keys)]

    def xattrs(self, tree_id: bytes, ordinal: int) -> list[tuple[bytes, bytes]]:
        raw = self.cache.get("xattrs", tree_id + _ORD.pack(ordinal))
        return _decode_xattrs(raw) if raw else []


def _decode_content(raw: bytes) -> list[tuple[bytes, int]]:
    return [_CHUNK.unpack_from(raw, i) for i in range(0, len(raw), _CHUNK.size)]


def _encode_xattrs(xattrs: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(_XATTR.pack(len(k), len(v)) + k + v for k, v in xattrs)


def _decode_xattrs(raw: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 0
    while pos < len(raw):
        klen, vlen = _XATTR.unpack_from(raw, pos)
        pos += _XATTR.size
        out.append((raw[pos : pos + klen], raw[pos + klen : pos + klen + vlen]))
        pos += klen + vlen
    return out
