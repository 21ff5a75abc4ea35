"""Directory trees: one tree blob per directory, a JSON list of nodes sorted by name.

Names, link targets and xattr names are bytes on Linux; they are stored as JSON strings
when they are valid UTF-8 and as base64 under a ``*_b64`` key otherwise (docs/format.md).
"""

from __future__ import annotations

import base64
import json
import stat
from dataclasses import dataclass, field
from typing import Any

from snapfs.errors import FormatError

FILE = "file"
DIR = "dir"
SYMLINK = "symlink"
FIFO = "fifo"
CHARDEV = "chardev"
BLOCKDEV = "blockdev"
SOCKET = "socket"
NODE_TYPES = (FILE, DIR, SYMLINK, FIFO, CHARDEV, BLOCKDEV, SOCKET)
_TYPE_BITS = {
    FILE: stat.S_IFREG,
    DIR: stat.S_IFDIR,
    SYMLINK: stat.S_IFLNK,
    FIFO: stat.S_IFIFO,
    CHARDEV: stat.S_IFCHR,
    BLOCKDEV: stat.S_IFBLK,
    SOCKET: stat.S_IFSOCK,
}


def st_mode(node_type: str, permissions: int) -> int:
    """The full ``st_mode`` (type bits and permission bits) of a node."""
    return _TYPE_BITS[node_type] | permissions


@dataclass(slots=True)
class Node:
    """One directory entry with the metadata snapfs keeps."""

    name: bytes
    type: str
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    ctime_ns: int = 0
    size: int = 0
    inode: int = 0
    dev: int = 0
    nlink: int = 1
    rdev: int = 0
    content: list[tuple[bytes, int]] = field(default_factory=list)
    subtree: bytes | None = None
    target: bytes | None = None
    xattrs: list[tuple[bytes, bytes]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        _put_bytes(d, "name", self.name)
        d |= {"type": self.type, "mode": self.mode, "uid": self.uid, "gid": self.gid}
        d |= {"mtime_ns": self.mtime_ns, "ctime_ns": self.ctime_ns}
        d |= {"inode": self.inode, "dev": self.dev, "nlink": self.nlink}
        if self.type == FILE:
            d["size"] = self.size
            d["content"] = [[cid.hex(), size] for cid, size in self.content]
        elif self.type == DIR:
            d["subtree"] = self.subtree.hex() if self.subtree else None
        elif self.type == SYMLINK:
            _put_bytes(d, "target", self.target or b"")
        elif self.type in (CHARDEV, BLOCKDEV):
            d["rdev"] = self.rdev
        if self.xattrs:
            d["xattrs"] = [_xattr_json(k, v) for k, v in self.xattrs]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Node:
        t = d["type"]
        if t not in NODE_TYPES:
            raise FormatError(f"unknown node type {t!r}")
        node = cls(
            name=_get_bytes(d, "name"),
            type=t,
            mode=int(d["mode"]),
            uid=int(d["uid"]),
            gid=int(d["gid"]),
            mtime_ns=int(d["mtime_ns"]),
            ctime_ns=int(d.get("ctime_ns", 0)),
            inode=int(d.get("inode", 0)),
            dev=int(d.get("dev", 0)),
            nlink=int(d.get("nlink", 1)),
        )
        if t == FILE:
            node.size = int(d["size"])
            node.content = [(bytes.fromhex(c), int(s)) for c, s in d["content"]]
        elif t == DIR:
            node.subtree = bytes.fromhex(d["subtree"]) if d.get("subtree") else None
        elif t == SYMLINK:
            node.target = _get_bytes(d, "target")
        elif t in (CHARDEV, BLOCKDEV):
            node.rdev = int(d["rdev"])
        node.xattrs = [_xattr_from_json(x) for x in d.get("xattrs", [])]
        return node


def encode_tree(nodes: list[Node]) -> bytes:
    """Serialise a directory; nodes are sorted by name so equal dirs give equal blobs."""
    ordered = sorted(nodes, key=lambda n: n.name)
    doc = {"version": 1, "nodes": [n.to_json() for n in ordered]}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def decode_tree(data: bytes) -> list[Node]:
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("version") != 1:
            raise FormatError("unsupported tree version")
        return [Node.from_json(n) for n in doc["nodes"]]
    except (ValueError, KeyError, TypeError) as e:
        raise FormatError(f"tree blob is malformed: {e}") from None


def _put_bytes(d: dict[str, Any], key: str, value: bytes) -> None:
    try:
        d[key] = value.decode("utf-8")
    except UnicodeDecodeError:
        d[key + "_b64"] = base64.b64encode(value).decode()


def _get_bytes(d: dict[str, Any], key: str) -> bytes:
    if key in d:
        return str(d[key]).encode("utf-8")
    return base64.b64decode(d[key + "_b64"], validate=True)


def _xattr_json(name: bytes, value: bytes) -> dict[str, str]:
    d: dict[str, Any] = {"value_b64": base64.b64encode(value).decode()}
    _put_bytes(d, "name", name)
    return d


def _xattr_from_json(d: dict[str, Any]) -> tuple[bytes, bytes]:
    return _get_bytes(d, "name"), base64.b64decode(d["value_b64"], validate=True)
