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
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pyfuse3
import trio

from snapfs.errors import IntegrityError, PathNotFound, SnapfsError, StoreError
from snapfs.mount.chunkcache import ChunkCache
from snapfs.mount.offload import Limiters, offload
from snapfs.mount.pagecache import PageCache, PageStore
from snapfs.repo.tree import DIR, st_mode
from snapfs.vfs.filesystem import Attr, Details, FileWalk, SnapshotFS
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
LISTED_AHEAD_ENTRIES = 2048  # of the subdirectories of one directory listed
LISTINGS_ENTRIES = 8192  # listed ahead and kept
FOLLOWING_FILES_REMOTE = 256
FOLLOWING_BYTES = 16 << 20
AHEAD_FILES = 4096

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
class _Listing:
    """An open directory: what the last readdir fetched but could not hand over."""

    inode: int
    end: int = -1  # offset past the last entry, once known
    rest: list[tuple[bytes, Details, int]] = field(default_factory=list)
    rest_at: int = -1  # the offset of rest[0]


@dataclass(slots=True)
class _Ahead:
    """A read-ahead walk and how many files it has found."""

    walk: FileWalk
    taken: int = 0
    busy: bool = False


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

    def __init__(
        self,
        fs: SnapshotFS,
        cache: ChunkCache,
        limiters: Limiters,
        page_store: PageStore | None = None,
    ) -> None:
        """``page_store`` (``pyfuse3.notify_store`` once mounted) hands the files read
        ahead to the kernel's page cache; without it they wait in the chunk cache."""
        super().__init__()
        self.fs, self.cache, self.limiters = fs, cache, limiters
        self.pages = None if page_store is None else PageCache(cache, limiters.pages, page_store)
        self.nursery: trio.Nursery | None = None
        self.xattrs_enabled = True
        self._handles: dict[int, _Handle] = {}
        self._dirs: dict[int, _Listing] = {}
        self._listings: OrderedDict[int, list[tuple[bytes, Details, int]]] = OrderedDict()
        self._listings_size = 0
        self._next_fh = 1
        self._details: OrderedDict[int, Details] = OrderedDict()
        self._ahead: OrderedDict[int, tuple[_Ahead, int]] = OrderedDict()  # ino -> walk, #
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
        self._dirs[fh] = _Listing(inode)
        return fh

    @_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        """The kernel asks for a page (4 KiB, ~25 entries) at a time: the entries
        fetched beyond what fitted answer the next call without another thread hop."""
        listing = self._dirs[fh]
        if 0 <= listing.end <= start_id:
            return  # the kernel's closing call past the last entry: nothing to fetch
        if start_id == 0:
            whole = self._listing(listing.inode)
            if whole is not None:
                listing.rest, listing.rest_at = whole, 0
                listing.end = whole[-1][2] if whole else 0
                self._list_subdirs(listing.inode)
                if not whole:
                    return
        while True:
            page = listing.rest if listing.rest and listing.rest_at == start_id else None
            listing.rest = []
            if page is None:
                page = await offload(
                    self.limiters.index,
                    self.fs.readdir_details,
                    listing.inode,
                    start_id,
                    READDIR_PAGE,
                )
                if len(page) < READDIR_PAGE:
                    listing.end = page[-1][2] if page else start_id
                if start_id == 0:  # now the subdirectories' inodes are known
                    self._list_subdirs(listing.inode)
            for i, (name, d, next_id) in enumerate(page):
                if not pyfuse3.readdir_reply(
                    token, name, self.entry(self._remember(d).attr), next_id
                ):
                    listing.rest, listing.rest_at = page[i:], start_id
                    self._listed(listing.inode)
                    return
                start_id = next_id
            if 0 <= listing.end <= start_id:
                self._listed(listing.inode)
                return

    def _listed(self, inode: int) -> None:
        """Files read ahead in this directory can go to the kernel once this reply
        has introduced them (it is sent when the handler returns)."""
        if self.pages is not None and self.nursery is not None and self.pages.listed(inode):
            self.nursery.start_soon(self.pages.store_ready)

    def _list_subdirs(self, inode: int) -> None:
        if self.nursery is not None:
            self.nursery.start_soon(self._list_subdirs_task, inode)

    async def _list_subdirs_task(self, inode: int) -> None:
        """List the subdirectories of a directory being listed, in the background:
        their own listings are then answered on the loop, without a thread hop."""
        try:
            listings = await offload(
                self.limiters.prefetch,
                self.fs.list_subdirs,
                inode,
                SUBDIRS_AHEAD,
                LISTED_AHEAD_ENTRIES,
            )
        except Exception as e:  # the listing that needs a tree reports the error
            log.debug("listing the subdirectories of inode %d failed: %s", inode, e)
            return
        for ino, entries in listings.items():
            old = self._listings.pop(ino, None)
            self._listings_size += len(entries) - (len(old) if old is not None else 0)
            self._listings[ino] = entries
        while self._listings_size > LISTINGS_ENTRIES:
            _, old = self._listings.popitem(last=False)
            self._listings_size -= len(old)

    def _listing(self, inode: int) -> list[tuple[bytes, Details, int]] | None:
        entries = self._listings.get(inode)
        if entries is not None:
            self._listings.move_to_end(inode)
        return entries

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
            self._read_ahead(inode)
        if self.pages is not None:
            self.pages.seen(inode)
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

    def _read_ahead(self, inode: int) -> None:
        """A file in a snapshot is opened: the files after it, in its directory and
        the ones after, are likely next (cp -r, tar, rsync read in listing order).
        Fetch their chunks ahead, coalesced, and hand them to the kernel. The walk goes
        on where it stopped each time the reader is halfway through what it found;
        a file no walk found starts a new one."""
        if self.nursery is None:
            return
        hit = self._ahead.get(inode)
        if hit is None:
            ahead, files = _Ahead(self.fs.files_after(inode)), self.following_files
        else:
            ahead, seq = hit
            if ahead.busy or ahead.walk.done or ahead.taken - seq > self.following_files // 2:
                return
            files = self.following_files // 2
        ahead.busy = True
        self.nursery.start_soon(self._prefetch_files, ahead, files)

    async def _prefetch_files(self, ahead: _Ahead, files: int) -> None:
        try:
            found = await offload(  # a long walk: never on the tokens listings wait for
                self.limiters.prefetch, ahead.walk.take, files, FOLLOWING_BYTES
            )
            log.debug("read ahead: %d files after inode %d", len(found), ahead.walk.ino)
            for f in found:
                ahead.taken += 1
                self._ahead[f.ino] = (ahead, ahead.taken)
                self._ahead.move_to_end(f.ino)
            while len(self._ahead) > AHEAD_FILES:
                self._ahead.popitem(last=False)
            ahead.busy = False
            arrived = None
            if self.pages is not None:
                found = self.pages.offer(found)
                arrived = self.pages.store_ready
                await arrived()  # those whose chunks are here already
            ids = [blob_id for f in found for blob_id, _ in f.chunks]
            await self.cache.prefetch(ids, FOLLOWING_BYTES, arrived)
        except Exception as e:  # the read that needs a chunk reports the error
            log.debug("prefetch of following files failed: %s", e)
        finally:
            ahead.busy = False

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
