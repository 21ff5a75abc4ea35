"""Comparing directory trees and listing repository files, for tests."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def describe(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything snapfs promises to keep, per relative path, hardlinks as group ids."""
    out: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            fmt = stat.S_IFMT(st.st_mode)
            body: object = None
            if stat.S_ISREG(st.st_mode):
                body = p.read_bytes()
                if st.st_nlink > 1:
                    body = (body, "hardlink", inodes.setdefault(st.st_ino, rel))
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(p)
            mtime = None if stat.S_ISDIR(st.st_mode) else st.st_mtime_ns
            xattrs = sorted(
                (k, os.getxattr(p, k, follow_symlinks=False))
                for k in os.listxattr(p, follow_symlinks=False)
            )
            out[rel] = (fmt, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, mtime, body, xattrs)
    return out


def assert_same_tree(a: Path, b: Path) -> None:
    da, db = describe(a), describe(b)
    assert sorted(da) == sorted(db)
    for k in da:
        assert da[k] == db[k], f"{k} differs"


def repo_listing(repo: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(repo)): p.read_bytes() for p in sorted(repo.rglob("*")) if p.is_file()
    }
