"""Restore: recreate entries in tree order in the calling thread, fetch and decrypt
chunks in worker threads and ``pwrite`` them at their offsets.

Metadata of a file is applied when its last chunk lands, of a directory when the walk
leaves it, so nothing is remembered per file after it is done: memory is bounded by the
in-flight chunk count, not by the size of what is restored. A chunk that fails
authentication removes the file it belongs to; wrong bytes are never left behind.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from snapfs.errors import IntegrityError, SnapfsError
from snapfs.repo.format import BlobLocation
from snapfs.repo.repository import Repository
from snapfs.repo.tree import DIR, FILE, SYMLINK, Node, st_mode
from snapfs.vfs.paths import children

log = logging.getLogger(__name__)

_IS_ROOT = os.geteuid() == 0
BATCH_BLOBS = 64
BATCH_BYTES = 8 << 20


@dataclass(slots=True)
class RestoreStats:
    files: int = 0
    dirs: int = 0
    others: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)


class _OpenFile:
    """A file being filled by chunk tasks; closed with its metadata by the last one."""

    __slots__ = ("failed", "fd", "lock", "node", "path", "remaining")

    def __init__(self, fd: int, node: Node, path: bytes, remaining: int) -> None:
        self.fd, self.node, self.path, self.remaining = fd, node, path, remaining
        self.failed = False
        self.lock = threading.Lock()


class Restorer:
    def __init__(self, repo: Repository, workers: int = 4, max_inflight: int = 16) -> None:
        self.repo = repo
        self.stats = RestoreStats()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="restore")
        self._slots = threading.BoundedSemaphore(max_inflight)
        self._hardlinks: dict[tuple[int, int], bytes] = {}
        self._batch: list[tuple[_OpenFile, bytes, int]] = []
        self._batch_bytes = 0
        self._lock = threading.Lock()

    def restore(self, node: Node, target: bytes) -> RestoreStats:
        """Restore ``node`` as ``target`` (a directory's contents go inside it)."""
        try:
            if node.type == DIR:
                os.makedirs(target, exist_ok=True)
                self._dir(node, target)
            else:
                os.makedirs(os.path.dirname(target) or b".", exist_ok=True)
                self._entry(node, target)
            self._flush()
        finally:
            self._pool.shutdown(wait=True)
        return self.stats

    def _error(self, path: bytes, err: BaseException) -> None:
        text = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        with self._lock:
            self.stats.errors.append(f"{os.fsdecode(path)}: {text}")

    def _dir(self, node: Node, path: bytes) -> None:
        for child in children(self.repo, node):
            cpath = os.path.join(path, child.name)
            if child.type == DIR:
                try:
                    _make_dir(cpath)
                except OSError as e:
                    self._error(cpath, e)
                    continue
                self._dir(child, cpath)
            else:
                try:
                    self._entry(child, cpath)
                except OSError as e:
                    self._error(cpath, e)
        self.stats.dirs += 1
        try:
            self._apply_meta(node, path, None)
        except OSError as e:
            self._error(path, e)

    def _entry(self, node: Node, path: bytes) -> None:
        if os.path.lexists(path):
            _remove(path)
        if node.type == FILE:
            self._file(node, path)
        elif node.type == SYMLINK:
            os.symlink(node.target or b"", path)
            self._apply_meta(node, path, None)
            self.stats.others += 1
        else:
            os.mknod(path, st_mode(node.type, node.mode), node.rdev)
            self._apply_meta(node, path, None)
            self.stats.others += 1

    def _file(self, node: Node, path: bytes) -> None:
        link_key = (node.dev, node.inode)
        if node.nlink > 1:
            first = self._hardlinks.get(link_key)
            if first is not None:
                try:
                    os.link(first, path)
                    self.stats.files += 1
                    return
                except OSError as e:
                    log.debug("hardlink %r -> %r failed (%s); restoring a copy", path, first, e)
            else:
                self._hardlinks[link_key] = path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        self.stats.files += 1
        self.stats.bytes += node.size
        if node.size:
            os.ftruncate(fd, node.size)
        if not node.content:
            self._close(_OpenFile(fd, node, path, 0))
            return
        of = _OpenFile(fd, node, path, len(node.content))
        offset = 0
        for blob_id, size in node.content:
            self._batch.append((of, blob_id, offset))
            self._batch_bytes += size
            if len(self._batch) >= BATCH_BLOBS or self._batch_bytes >= BATCH_BYTES:
                self._flush()
            offset += size

    def _flush(self) -> None:
        """Hand the queued chunks (of one or many files, in tree order) to a worker."""
        if not self._batch:
            return
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        self._slots.acquire()
        fut = self._pool.submit(self._fetch_batch, batch)
        fut.add_done_callback(self._release)

    def _release(self, _: Future[None]) -> None:
        self._slots.release()

    def _fetch_batch(self, batch: list[tuple[_OpenFile, bytes, int]]) -> None:
        """Worker thread: neighbours in a pack come in one ranged read (many small files
        cost one request, not one each), then each chunk is verified and written."""
        located: dict[bytes, BlobLocation] = {}
        for _, blob_id, _ in batch:
            loc = self.repo.lookup(blob_id)
            if loc is not None:
                located[blob_id] = loc
        failure: SnapfsError | None = None
        fetched: dict[bytes, bytes] = {}
        try:
            fetched = {b: s for b, _, s in self.repo.fetcher.sealed_many(list(located.items()))}
        except SnapfsError as e:
            failure = e
        for of, blob_id, offset in batch:
            loc, sealed = located.get(blob_id), fetched.get(blob_id)
            data: bytes | SnapfsError
            if loc is None:
                data = IntegrityError(f"blob {blob_id.hex()[:16]} is not in the repository index")
            elif sealed is None:
                data = failure or IntegrityError(f"blob {blob_id.hex()[:16]} could not be read")
            elif of.failed:
                data = b""  # the file is being removed anyway
            else:
                try:
                    data = self._open(blob_id, loc, sealed)
                except SnapfsError as e:
                    data = e
            self._chunk(of, data, offset)

    def _open(self, blob_id: bytes, loc: BlobLocation, sealed: bytes) -> bytes:
        try:
            return self.repo.fetcher.open(blob_id, loc, sealed)
        except IntegrityError as e:
            raise IntegrityError(f"pack {loc.pack.hex()[:16]}: {e}") from None

    def _chunk(self, of: _OpenFile, data: bytes | SnapfsError, offset: int) -> None:
        try:
            if isinstance(data, SnapfsError):
                raise data
            if not of.failed:
                os.pwrite(of.fd, data, offset)
        except (SnapfsError, OSError) as e:
            with of.lock:
                first_failure = not of.failed
                of.failed = True
            if first_failure:
                self._error(of.path, e)
        with of.lock:
            of.remaining -= 1
            done = of.remaining == 0
        if done:
            self._close(of)

    def _close(self, of: _OpenFile) -> None:
        try:
            if of.failed:
                os.unlink(of.path)
            else:
                self._apply_meta(of.node, of.path, of.fd)
        except OSError as e:
            self._error(of.path, e)
        finally:
            os.close(of.fd)

    def _apply_meta(self, node: Node, path: bytes, fd: int | None) -> None:
        """Ownership, xattrs, mode, then times (last, since the others change ctime)."""
        link = node.type == SYMLINK
        target: int | bytes = fd if fd is not None else path
        follow = not link
        if _IS_ROOT:
            os.chown(target, node.uid, node.gid, follow_symlinks=follow)
        for name, value in node.xattrs:
            try:
                os.setxattr(target, name, value, follow_symlinks=follow)
            except OSError as e:
                if e.errno not in (errno.ENOTSUP, errno.EPERM):
                    raise
                log.debug("xattr %r not restored on %r: %s", name, path, e)
        if not link:
            os.chmod(target, node.mode)
        os.utime(target, ns=(node.mtime_ns, node.mtime_ns), follow_symlinks=follow)


def _make_dir(path: bytes) -> None:
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not os.path.isdir(path) or os.path.islink(path):
            _remove(path)
            os.mkdir(path, 0o700)


def _remove(path: bytes) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)
