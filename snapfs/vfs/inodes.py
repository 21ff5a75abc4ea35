"""Derived inode numbers: stable for a path (and across mounts), shared by hardlinks.

A tree entry's inode is a keyed hash of its parent's inode and its name; a file with
more than one link hashes (snapshot directory inode, device, original inode) instead,
so every link to it in one snapshot shows the same st_ino.
"""

from __future__ import annotations

import hashlib
import struct

ROOT_INODE = 1
_FIRST_FREE = 1 << 16  # never collide with the root or small numbers tools treat specially


def _h(*parts: bytes) -> int:
    d = hashlib.blake2b(b"\0".join(parts), digest_size=8, person=b"snapfs-ino").digest()
    return (int.from_bytes(d, "little") >> 1) | _FIRST_FREE


def layout_inode(path: bytes) -> int:
    return _h(b"layout", path)


def entry_inode(parent_ino: int, name: bytes) -> int:
    return _h(b"entry", struct.pack("<Q", parent_ino), name)


def hardlink_inode(snapshot_ino: int, dev: int, inode: int) -> int:
    return _h(b"hardlink", struct.pack("<QQQ", snapshot_ino, dev, inode))
