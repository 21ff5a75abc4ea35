"""pyfuse3 Operations over SnapshotFS: each handler is a few lines that offload one
coarse unit of work and translate the answer. Runs on the trio loop.

Only FUSEError leaves a handler (``_errors``): a missing entry is ENOENT, every write is
EROFS, and corrupt, unauthenticated or missing data or an unreachable store is EIO with
one log line naming the snapshot and file.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pyfuse3
import trio

from snapfs.errors import IntegrityError, PathNotFound, SnapfsError, StoreError
from snapfs.mount.chunkcache import ChunkCache
from snapfs.mount.offload import Limiters, offload
from snapfs.repo.tree import DIR, st_mode
from snapfs.vfs.filesystem import Attr, Details, SnapshotFS
from snapfs.vfs.reader import ChunkMap

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

IMMUTABLE_TIMEOUT = 86400.0
LAYOUT_TIMEOUT = 1.0
READDIR_PAGE = 512
PREFETCH_CHUNKS = 4
PREFETCH_CHUNKS_REMOTE = 16  # a GET costs milliseconds: keep more of them in flight
DETAILS_ENTRIES = 65536
FOLLOWING_FILES = 64
SUBDIRS_AHEAD = 64
FOLLOWING_FILES_REMOTE = 256
FOLLOWING_BYTES = 16 << 20

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT


def _errors(fn: F) -> F:
    @functools.wraps(fn)
    async def wrapper(self: SnapfsOperations, *args: Any) -> Any:
        try:
            return await fn(self, *args)
        except pyfuse3.FUSEError:
            raise
        except PathNotFound:
            raise pyfuse3.FUSEError(errno.ENOENT) from None
        except (IntegrityError, StoreError) as e:
            raise pyfuse3.FUSEError(errno.EIO) from e
        except SnapfsError as e:
            log.error("%s: %s", fn.__name__, e)
            raise pyfuse3.FUSEError(e.errno) from None
        except Exception:
            log.exception("unexpected error in %s", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper  # type: ignore[return-value]


def _readonly(fn: F) -> F:
    @functools.wraps(fn)
    async def wrapper(self: SnapfsOperations, *args: Any) -> Any:
        raise pyfuse3.FUSEError(errno.EROFS)

    return wrapper  # type: ignore[return-value]


@dataclass(slots=True)
class _Handle:
    ino: int
    chunks: ChunkMap
    next_offset: int = 0
    prefetched: int = -1


class SnapfsOperations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, fs: SnapshotFS, cache: ChunkCache, limiters: Limiters) -> None:
        super().__init__()
        self.fs, self.cache, self.limiters = fs, cache, limiters
        self.nursery: trio.Nursery | None = None
        self.xattrs_enabled = True
        self._handles: dict[int, _Handle] = {}
        self._dirs: dict[int, list[int]] = {}  # open directory: [inode, end offset or -1]
        self._next_fh = 1
        self._details: OrderedDict[int, Details] = OrderedDict()
        self._walks: OrderedDict[bytes, int] = OrderedDict()  # tree -> prefetched up to
        remote = getattr(fs.repo.store, "remote", False)
        self.prefetch_chunks = PREFETCH_CHUNKS_REMOTE if remote else PREFETCH_CHUNKS
        self.following_files = FOLLOWING_FILES_REMOTE if remote else FOLLOWING_FILES

    def _remember(self, d: Details) -> Details:
        """Keep what lookup and readdir learnt, so getattr, the xattr calls and open of
        a recently listed entry are answered on the loop without a thread hop."""
        self._details[d.attr.ino] = d
        self._details.move_to_end(d.attr.ino)
        if len(self._details) > DETAILS_ENTRIES:
            self._details.popitem(last=False)
        return d

    async def _get_details(self, inode: int) -> Details:
        d = self._details.get(inode)
        if d is not None and d.attr.immutable:
            return d
        return Details(await offload(self.limiters.index, self.fs.getattr, inode))

    # -- attributes ---------------------------------------------------------------------

    @staticmethod
    def entry(attr: Attr) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = attr.ino
        e.st_mode = st_mode(attr.type, attr.mode)
        e.st_nlink = attr.nlink
        e.st_uid, e.st_gid = attr.uid, attr.gid
        e.st_rdev = attr.rdev
        e.st_size = attr.size
        e.st_blksize = 128 * 1024
        e.st_blocks = (attr.size + 511) // 512
        e.st_atime_ns = e.st_mtime_ns = attr.mtime_ns
        e.st_ctime_ns = attr.ctime_ns
        timeout = IMMUTABLE_TIMEOUT if attr.immutable else LAYOUT_TIMEOUT
        e.entry_timeout = e.attr_timeout = timeout
        return e

    # -- lookups and listings -------------------------------------------------------------

    @_errors
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        d = await offload(self.limiters.index, self.fs.lookup_details, parent_inode, name)
        return self.entry(self._remember(d).attr)

    @_errors
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self.entry((await self._get_details(inode)).attr)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        """Inodes are derived and their records live in LMDB: nothing to drop."""

    @_errors
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        """The kernel does not cache symlinks of this mount: every path through a link
        asks again, so the answer comes from memory when it can."""
        d = self._details.get(inode)
        if d is not None and d.target is not None:
            return d.target
        return await offload(self.limiters.index, self.fs.readlink, inode)

    @_errors
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        attr = (await self._get_details(inode)).attr
        if attr.type != DIR:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        fh = self._next_fh
        self._next_fh += 1
        self._dirs[fh] = [inode, -1]
        return fh

    @_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        listing = self._dirs[fh]
        inode, end = listing
        if 0 <= end <= start_id:
            return  # the kernel's closing call past the last entry: nothing to fetch
        if start_id == 0:
            self._load_subdirs(inode)
        offset = start_id
        while True:
            page = await offload(
                self.limiters.index, self.fs.readdir_details, inode, offset, READDIR_PAGE
            )
            for name, d, next_id in page:
                if not pyfuse3.readdir_reply(
                    token, name, self.entry(self._remember(d).attr), next_id
                ):
                    return
                offset = next_id
            if len(page) < READDIR_PAGE:
                listing[1] = offset
                return

    def _load_subdirs(self, inode: int) -> None:
        if self.nursery is not None:
            self.nursery.start_soon(self._load_subdirs_task, inode)

    async def _load_subdirs_task(self, inode: int) -> None:
        try:
            await offload(self.limiters.prefetch, self.fs.load_subdirs, inode, SUBDIRS_AHEAD)
        except Exception as e:  # the listing that needs a tree reports the error
            log.debug("loading the subdirectories of inode %d failed: %s", inode, e)

    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    @_errors
    async def _xattrs(self, inode: int) -> Sequence[tuple[bytes, bytes]]:
        if not self.xattrs_enabled:
            # ENOSYS makes the kernel stop asking for the rest of the mount: two to three
            # requests less per file copied, decided at mount time from the snapshots.
            raise pyfuse3.FUSEError(errno.ENOSYS)
        d = self._details.get(inode)
        if d is not None and d.tree is not None:
            return d.xattrs
        return await offload(self.limiters.index, self.fs.xattrs, inode)

    @_errors
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        for key, value in await self._xattrs(inode):
            if key == name:
                return value
        raise pyfuse3.FUSEError(errno.ENODATA)

    @_errors
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> Sequence[bytes]:
        return [key for key, _ in await self._xattrs(inode)]

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = s.f_bfree = s.f_bavail = 0
        s.f_files = s.f_ffree = s.f_favail = 0
        s.f_namemax = 255
        return s

    # -- reading ---------------------------------------------------------------------------

    @_errors
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if flags & _WRITE_FLAGS:
            raise pyfuse3.FUSEError(errno.EROFS)
        d = self._details.get(inode)
        if d is not None and d.content is not None:
            content = list(d.content)
        else:
            content = await offload(self.limiters.index, self.fs.content, inode)
        if d is not None and d.tree is not None:
            self._prefetch_following(inode, d.tree, d.ordinal)
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = _Handle(inode, ChunkMap(content))
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    @_errors
    async def read(self, fh: int, off: int, size: int) -> bytes:
        h = self._handles[fh]
        pieces = h.chunks.pieces(off, size)
        if not pieces:
            return b""
        sequential = off == h.next_offset
        h.next_offset = off + size
        if sequential:
            self._prefetch(h, pieces[-1].index + 1)
        try:
            parts = [(await self.cache.get(p.blob_id))[p.start : p.end] for p in pieces]
        except (IntegrityError, StoreError) as e:
            where = await offload(self.limiters.index, self.fs.describe, h.ino)
            log.error("%s: read at offset %d failed: %s", where, off, e)
            raise
        if sequential:
            # read to its end by a sequential reader: the kernel's page cache has it now
            # (keep_cache), so it need not take chunk-cache room from what is ahead.
            for p in pieces:
                if p.end == h.chunks.starts[p.index + 1] - h.chunks.starts[p.index]:
                    self.cache.drop(p.blob_id)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _prefetch(self, h: _Handle, first: int) -> None:
        """Sequential reader: keep the next few chunks in flight."""
        if self.nursery is None:
            return
        last = min(first + self.prefetch_chunks, len(h.chunks.ids))
        for i in range(max(first, h.prefetched + 1), last):
            blob_id = h.chunks.ids[i]
            if not self.cache.cached(blob_id):
                self.nursery.start_soon(self._prefetch_one, blob_id)
            h.prefetched = i

    def _prefetch_following(self, inode: int, tree: bytes, ordinal: int) -> None:
        """A file of a directory is opened: the files after it, in this directory and
        the ones after, are likely next (cp -r, tar, rsync read in listing order). Fetch
        their chunks ahead, coalesced; again only once the reader is halfway there."""
        if self.nursery is None:
            return
        done = self._walks.get(tree, -1)
        if ordinal + self.following_files // 2 < done:
            return
        self._walks[tree] = ordinal + self.following_files
        self._walks.move_to_end(tree)
        if len(self._walks) > 1024:
            self._walks.popitem(last=False)
        self.nursery.start_soon(self._prefetch_files, inode)

    async def _prefetch_files(self, inode: int) -> None:
        try:
            ids = await offload(  # a long walk: never on the tokens listings wait for
                self.limiters.prefetch, self.fs.following_chunks, inode, self.following_files
            )
            await self.cache.prefetch(ids, FOLLOWING_BYTES)
        except Exception as e:  # the read that needs a chunk reports the error
            log.debug("prefetch of following files failed: %s", e)

    async def _prefetch_one(self, blob_id: bytes) -> None:
        try:
            await self.cache.get(blob_id)
        except Exception as e:  # the read that needs it reports the error
            log.debug("prefetch of %s failed: %s", blob_id.hex()[:16], e)

    async def flush(self, fh: int) -> None:
        """Nothing is ever dirty here. ENOSYS makes the kernel stop sending FLUSH for
        the rest of the mount, which takes one synchronous round trip off every close."""
        raise pyfuse3.FUSEError(errno.ENOSYS)

    async def release(self, fh: int) -> None:
        self._handles.pop(fh, None)

    # -- everything that would write -----------------------------------------------------------

    setattr = _readonly(pyfuse3.Operations.setattr)
    mknod = _readonly(pyfuse3.Operations.mknod)
    mkdir = _readonly(pyfuse3.Operations.mkdir)
    unlink = _readonly(pyfuse3.Operations.unlink)
    rmdir = _readonly(pyfuse3.Operations.rmdir)
    symlink = _readonly(pyfuse3.Operations.symlink)
    rename = _readonly(pyfuse3.Operations.rename)
    link = _readonly(pyfuse3.Operations.link)
    write = _readonly(pyfuse3.Operations.write)
    create = _readonly(pyfuse3.Operations.create)
    setxattr = _readonly(pyfuse3.Operations.setxattr)
    removexattr = _readonly(pyfuse3.Operations.removexattr)
