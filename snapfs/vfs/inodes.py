"""Derived inode numbers: stable for a path (and across mounts), shared by hardlinks.

The entries of one directory get consecutive numbers in listing order: a hash of the
parent's inode in the high bits, the entry's ordinal in the low 24. Tools that sort a
directory by inode before reading it (GNU cp does) then read files in the order the
writer stored them, which is what the mount's prefetch of the following files expects.
A file with more than one link hashes (snapshot directory inode, device, original inode)
instead, so every link to it in one snapshot shows the same st_ino.
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


ORDINAL_BITS = 24


def entry_inode(parent_ino: int, ordinal: int) -> int:
    if not 0 <= ordinal < 1 << ORDINAL_BITS:  # a directory of 16M+ entries: plain hash
        return _h(b"entry", struct.pack("<QQ", parent_ino, ordinal))
    base = _h(b"dir", struct.pack("<Q", parent_ino)) >> ORDINAL_BITS << ORDINAL_BITS
    return base | 1 << ORDINAL_BITS | ordinal


def hardlink_inode(snapshot_ino: int, dev: int, inode: int) -> int:
    return _h(b"hardlink", struct.pack("<QQQ", snapshot_ino, dev, inode))
