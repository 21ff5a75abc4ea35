"""Reading the source file system: stat → Node, xattrs, directory listing, excludes.

Sync; runs in the walker thread. Errors on single entries are returned to the caller to
report as warnings, never raised, so one unreadable file does not stop a backup.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from dataclasses import dataclass

from snapfs.repo.tree import BLOCKDEV, CHARDEV, DIR, FIFO, FILE, SOCKET, SYMLINK, Node

_TYPES = {
    stat.S_IFREG: FILE,
    stat.S_IFDIR: DIR,
    stat.S_IFLNK: SYMLINK,
    stat.S_IFIFO: FIFO,
    stat.S_IFCHR: CHARDEV,
    stat.S_IFBLK: BLOCKDEV,
    stat.S_IFSOCK: SOCKET,
}


@dataclass(frozen=True, slots=True)
class Excludes:
    """Glob patterns (``*``, ``?``, ``[...]``; a trailing '/' is ignored):
    - without '/': matches an entry by its name, at any depth (``*.tmp``, ``.cache``);
    - starting with '/': matches the whole absolute path (``/home/*/Downloads``);
    - with '/' inside: matches the end of the path (``build/out`` excludes any
      ``.../build/out``).
    ``*`` also matches across '/' in the path forms."""

    patterns: tuple[str, ...] = ()

    def match(self, path: bytes, name: bytes) -> bool:
        if not self.patterns:
            return False
        p, n = os.fsdecode(path), os.fsdecode(name)
        for raw in self.patterns:
            pat = raw.rstrip("/") or raw
            if "/" not in pat:
                hit = fnmatch.fnmatchcase(n, pat)
            elif pat.startswith("/"):
                hit = fnmatch.fnmatchcase(p, pat)
            else:
                hit = fnmatch.fnmatchcase(p, "*/" + pat)
            if hit:
                return True
        return False


def read_exclude_file(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        lines = (line.strip() for line in f)
        return [line for line in lines if line and not line.startswith("#")]


def node_from_stat(name: bytes, path: bytes, st: os.stat_result) -> Node:
    fmt = stat.S_IFMT(st.st_mode)
    node = Node(
        name=name,
        type=_TYPES.get(fmt, FILE),
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        mtime_ns=st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns,
        inode=st.st_ino,
        dev=st.st_dev,
        nlink=st.st_nlink,
    )
    if node.type == FILE:
        node.size = st.st_size
    elif node.type in (CHARDEV, BLOCKDEV):
        node.rdev = st.st_rdev
    node.xattrs = read_xattrs(path)
    return node


def read_xattrs(path: bytes) -> list[tuple[bytes, bytes]]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return []
    out = []
    for name in sorted(names):
        try:
            out.append((os.fsencode(name), os.getxattr(path, name, follow_symlinks=False)))
        except OSError:
            continue
    return out


def list_dir(path: bytes) -> list[tuple[bytes, bytes, os.stat_result]]:
    """Entries of a directory as (name, path, lstat), sorted by name; raises OSError."""
    out = []
    with os.scandir(path) as it:
        for entry in it:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # vanished between listing and stat
            out.append((entry.name, entry.path, st))
    out.sort(key=lambda e: e[0])
    return out


def scan_dir(path: bytes, excludes: Excludes) -> list[tuple[bytes, os.stat_result, Node]]:
    """A directory's entries that are not excluded, as (path, lstat, node with xattrs);
    raises OSError. Thread-safe, so listings can be read ahead of the walk."""
    out = []
    for name, cpath, st in list_dir(path):
        if not excludes.match(cpath, name):
            out.append((cpath, st, node_from_stat(name, cpath, st)))
    return out


def open_for_reading(path: bytes) -> int:
    """Open without touching atime when the kernel lets us."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        return os.open(path, flags | getattr(os, "O_NOATIME", 0))
    except PermissionError:
        return os.open(path, flags)
