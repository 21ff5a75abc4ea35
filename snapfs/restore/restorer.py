"""Restore: walk the trees in the calling thread, creating links and special files in
tree order; fetch, decrypt and ``pwrite`` file contents in worker threads, which also
create the files. Directories are made and their trees read a little ahead of the walk
in preparation threads, nearest first: each costs a wait on the disk, which the workers
keep busy, and the walk would otherwise wait for them one at a time.

Chunks go to the workers in batches in tree order, so a batch covers neighbouring blobs
of a pack or two and is read in a few long ranged reads (streamed on S3). A file is
created by the worker that lands its first chunk and closed with its metadata by the one
that lands its last. A directory's metadata waits until the walk has left it and every
file in it is closed, since creating a file changes the directory's mtime (and fails in a
read-only one). Nothing per file is kept after it is done: memory is bounded by the
batches in flight, not by the size of what is restored. A chunk that fails authentication
removes the file it belongs to; wrong bytes are never left behind.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

from snapfs.errors import IntegrityError, SnapfsError
from snapfs.repo.format import BlobLocation
from snapfs.repo.repository import Repository
from snapfs.repo.tree import DIR, FILE, SYMLINK, Node, st_mode
from snapfs.restore.copies import Copies
from snapfs.restore.priority import PriorityPool
from snapfs.vfs.paths import children

log = logging.getLogger(__name__)

_IS_ROOT = os.geteuid() == 0
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
BATCH_BLOBS = 1024
BATCH_BYTES = 16 << 20  # plaintext; about a pack, read in one or a few requests
LOCAL_WORKERS = 4
PREP_THREADS = 2  # each waits on the disk; more only add thread switches (measured)
DIRS_AHEAD = 16  # directories made and read ahead of the walk, at most
SUBDIRS_AHEAD = 8  # of the directory being walked
FIRST_SUBDIRS = 2  # of one prepared ahead: the budget goes down the walk's path first

Target = tuple["_OpenFile", int]  # a file and the offset of a chunk in it


@dataclass(slots=True)
class RestoreStats:
    files: int = 0
    dirs: int = 0
    others: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)


class _Dir:
    """A directory whose metadata waits: ``pending`` counts the walk (until it leaves)
    plus each file and subdirectory in it not finished yet. ``plain``: made by this
    restore with no set-group-id directory above, so it and what is made in it start out
    owned by our uid and gid (no chown needed when those are the recorded ones)."""

    __slots__ = ("lock", "node", "parent", "path", "pending", "plain")

    def __init__(self, node: Node, path: bytes, parent: _Dir | None, plain: bool) -> None:
        self.node, self.path, self.parent, self.plain = node, path, parent, plain
        self.pending = 1
        self.lock = threading.Lock()


@dataclass(slots=True)
class _Prepared:
    """A directory made (or why not), its entries, and its subdirectories being
    prepared in turn."""

    made: bool | OSError
    entries: list[Node]
    subdirs: _Ahead | None


class _OpenFile:
    """A file being filled by chunk tasks: created by the first, closed with its
    metadata by the last."""

    __slots__ = ("failed", "fd", "lock", "node", "parent", "path", "remaining")

    def __init__(self, node: Node, path: bytes, parent: _Dir | None, fd: int | None) -> None:
        self.node, self.path, self.parent, self.fd = node, path, parent, fd
        self.remaining = len(node.content)
        self.failed = False
        self.lock = threading.Lock()


class Restorer:
    def __init__(
        self, repo: Repository, workers: int | None = None, max_inflight: int | None = None
    ) -> None:
        self.repo = repo
        self.stats = RestoreStats()
        workers = workers or _workers(repo)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="restore")
        self._slots = threading.BoundedSemaphore(max_inflight or 2 * workers)
        self._copies = Copies(repo.key)
        self._prep = PriorityPool(PREP_THREADS, "restore-dirs")
        self._prep_budget = threading.Semaphore(DIRS_AHEAD)
        self._hardlinks: dict[tuple[int, int], bytes] = {}
        self._batch: list[tuple[_OpenFile, bytes, int]] = []
        self._batch_bytes = 0
        self._lock = threading.Lock()
        self._ids = (os.geteuid(), os.getegid())
        self._umask = _umask()

    def restore(self, node: Node, target: bytes) -> RestoreStats:
        """Restore ``node`` as ``target`` (a directory's contents go inside it)."""
        try:
            if node.type == DIR:
                os.makedirs(target, exist_ok=True)
                fresh = not os.listdir(target)
                plain = not os.stat(target).st_mode & stat.S_ISGID
                self._dir(node, target, None, plain, self._read_dir(node, target, fresh, ()))
            else:
                os.makedirs(os.path.dirname(target) or b".", exist_ok=True)
                self._entry(node, target, None, fresh=False)
            self._flush()
        finally:
            self._prep.shutdown()
            self._pool.shutdown(wait=True)
        return self.stats

    def _error(self, path: bytes, err: BaseException) -> None:
        text = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        with self._lock:
            self.stats.errors.append(f"{os.fsdecode(path)}: {text}")

    # -- the walk (calling thread) ---------------------------------------------------------

    def _dir(
        self, node: Node, path: bytes, parent: _Dir | None, plain: bool, prepared: _Prepared
    ) -> None:
        here = _Dir(node, path, parent, plain)
        if parent is not None:
            _hold(parent)
        fresh = prepared.made is True  # just made: no old entry in it needs removing
        for child in prepared.entries:
            cpath = os.path.join(path, child.name)
            if child.type == DIR:
                assert prepared.subdirs is not None
                sub = prepared.subdirs.next()
                if isinstance(sub.made, OSError):
                    self._error(cpath, sub.made)
                    continue
                self._dir(child, cpath, here, sub.made and plain, sub)
            else:
                try:
                    self._entry(child, cpath, here, fresh)
                except OSError as e:
                    self._error(cpath, e)
        self.stats.dirs += 1
        self._release(here)

    def _prepare(self, node: Node, path: bytes, key: tuple[int, ...]) -> _Prepared:
        """Preparation thread: make a subdirectory and read its tree before the walk
        gets there (both wait on the disk, which the workers keep busy), and start on its
        own subdirectories."""
        try:
            made = _make_dir(path)
        except OSError as e:
            return _Prepared(e, [], None)
        return self._read_dir(node, path, made, key)

    def _read_dir(self, node: Node, path: bytes, made: bool, key: tuple[int, ...]) -> _Prepared:
        """``key``: the directory's place in walk order (entry indices from the root)."""
        entries = children(self.repo, node)
        subdirs = [((*key, i), c) for i, c in enumerate(entries) if c.type == DIR]
        if not subdirs:
            return _Prepared(made, entries, None)
        return _Prepared(
            made, entries, _Ahead(self._prep, self._prep_budget, self._prepare, subdirs, path)
        )

    def _entry(self, node: Node, path: bytes, parent: _Dir | None, fresh: bool) -> None:
        if not fresh and os.path.lexists(path):
            _remove(path)
        if node.type == FILE:
            self._file(node, path, parent)
            return
        if node.type == SYMLINK:
            os.symlink(node.target or b"", path)
        else:
            os.mknod(path, st_mode(node.type, node.mode), node.rdev)
        self._apply_meta(node, path, None, parent)
        self.stats.others += 1

    def _file(self, node: Node, path: bytes, parent: _Dir | None) -> None:
        """An empty file or the first name of a hard-linked one is created here (later
        names link to it); any other file by the worker that lands its first chunk."""
        fd = None
        if node.nlink > 1:
            link_key = (node.dev, node.inode)
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
            fd = self._create(node, path)
        self.stats.files += 1
        self.stats.bytes += node.size
        if parent is not None:
            _hold(parent)
        of = _OpenFile(node, path, parent, fd)
        if not node.content:
            with self._failing(of):
                of.fd = self._create(node, path) if fd is None else fd
                if node.size:
                    os.ftruncate(of.fd, node.size)
            self._close(of)
            return
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
        fut.add_done_callback(self._batch_done)

    def _batch_done(self, fut: Future[None]) -> None:
        self._slots.release()
        err = fut.exception()
        if err is not None:  # a bug: its files are left unfinished, so say so
            log.error("restore worker failed: %r", err)
            self._error(b"(restore worker)", err)

    # -- workers ---------------------------------------------------------------------------

    def _fetch_batch(self, batch: list[tuple[_OpenFile, bytes, int]]) -> None:
        """Each blob is read once for all its places in the batch: from a file restored
        earlier if one holds it, else from the store, where neighbours in a pack come in
        one ranged read (many small files cost one request, not one each)."""
        wanted: dict[bytes, list[Target]] = {}
        for of, blob_id, offset in batch:
            wanted.setdefault(blob_id, []).append((of, offset))
        located: list[tuple[bytes, BlobLocation]] = []
        for blob_id, targets in wanted.items():
            loc = self.repo.lookup(blob_id)
            if loc is None:
                err = IntegrityError(f"blob {blob_id.hex()[:16]} is not in the repository index")
                self._deliver(blob_id, targets, err)
            elif (data := self._copies.read(blob_id, loc.raw_length)) is not None:
                self._deliver(blob_id, targets, data)
            else:
                located.append((blob_id, loc))
        try:
            for blob_id, loc, sealed in self.repo.fetcher.iter_sealed(located):
                targets = wanted.pop(blob_id)
                self._deliver(blob_id, targets, self._open(blob_id, loc, sealed, targets))
        except SnapfsError as e:
            for blob_id, _ in located:
                if blob_id in wanted:
                    self._deliver(blob_id, wanted.pop(blob_id), e)

    def _open(
        self, blob_id: bytes, loc: BlobLocation, sealed: bytes, targets: list[Target]
    ) -> bytes | SnapfsError:
        if all(of.failed for of, _ in targets):
            return b""  # its files are being removed anyway
        try:
            return self.repo.fetcher.open(blob_id, loc, sealed)
        except IntegrityError as e:
            return IntegrityError(f"pack {loc.pack.hex()[:16]}: {e}")
        except SnapfsError as e:
            return e

    def _deliver(self, blob_id: bytes, targets: list[Target], data: bytes | SnapfsError) -> None:
        """Write one blob to all its places; the first place written is remembered as a
        copy that later batches read instead of fetching the blob again."""
        remembered = isinstance(data, SnapfsError)
        for of, offset in targets:
            if self._chunk(of, data, offset) and not remembered:
                self._copies.remember(blob_id, of.path, offset)
                remembered = True

    def _chunk(self, of: _OpenFile, data: bytes | SnapfsError, offset: int) -> bool:
        """Write one chunk (or record why it failed); True if it was written."""
        written = False
        with self._failing(of):
            if isinstance(data, SnapfsError):
                raise data
            fd = self._fd(of)
            if fd is not None:
                _pwrite_all(fd, data, offset)
                written = True
        with of.lock:
            of.remaining -= 1
            done = of.remaining == 0
        if done:
            self._close(of)
        return written

    @contextlib.contextmanager
    def _failing(self, of: _OpenFile) -> Iterator[None]:
        """An error marks the file failed (to be removed) and is reported once."""
        try:
            yield
        except (SnapfsError, OSError) as e:
            with of.lock:
                first_failure = not of.failed
                of.failed = True
            if first_failure:
                self._error(of.path, e)

    def _fd(self, of: _OpenFile) -> int | None:
        """The file's descriptor, creating the file on first use; None once it failed."""
        with of.lock:
            if of.failed:
                return None
            if of.fd is None:
                of.fd = self._create(of.node, of.path)
                if len(of.node.content) > 1:
                    os.ftruncate(of.fd, of.node.size)
            return of.fd

    def _create(self, node: Node, path: bytes) -> int:
        """Created with its final permission bits when it has no special ones: never
        more open than it ends up, and no chmod to follow."""
        mode = 0o600 if node.mode & 0o7000 else node.mode & 0o777
        return os.open(path, _CREATE, mode)

    def _close(self, of: _OpenFile) -> None:
        try:
            if of.failed:
                _unlink(of.path)
            elif of.fd is not None:
                self._apply_meta(of.node, of.path, of.fd, of.parent)
        except OSError as e:
            self._error(of.path, e)
        finally:
            if of.fd is not None:
                os.close(of.fd)
        if of.parent is not None:
            self._release(of.parent)

    # -- directories, metadata -------------------------------------------------------------

    def _release(self, d: _Dir) -> None:
        """One thing in ``d`` is finished; the last one applies its metadata, and so on
        up the tree."""
        here: _Dir | None = d
        while here is not None:
            with here.lock:
                here.pending -= 1
                if here.pending:
                    return
            try:
                self._apply_meta(here.node, here.path, None, here.parent, made=here.plain)
            except OSError as e:
                self._error(here.path, e)
            here = here.parent

    def _apply_meta(
        self, node: Node, path: bytes, fd: int | None, parent: _Dir | None, made: bool = True
    ) -> None:
        """Ownership, xattrs, mode, then times (last, since the others change ctime).
        A chown or chmod that would change nothing is skipped: a restore of many small
        files spends much of its time on such calls."""
        link = node.type == SYMLINK
        target: int | bytes = fd if fd is not None else path
        follow = not link
        ours = made and parent is not None and parent.plain
        if _IS_ROOT and not (ours and (node.uid, node.gid) == self._ids):
            os.chown(target, node.uid, node.gid, follow_symlinks=follow)
        for name, value in node.xattrs:
            try:
                os.setxattr(target, name, value, follow_symlinks=follow)
            except OSError as e:
                if e.errno not in (errno.ENOTSUP, errno.EPERM):
                    raise
                log.debug("xattr %r not restored on %r: %s", name, path, e)
        if not link and not self._mode_is_set(node, fd):
            os.chmod(target, node.mode)
        os.utime(target, ns=(node.mtime_ns, node.mtime_ns), follow_symlinks=follow)

    def _mode_is_set(self, node: Node, fd: int | None) -> bool:
        """A file we created (``fd``) already has its mode when the umask took nothing
        from it (see ``_create``)."""
        if fd is None or node.type != FILE or self._umask is None or node.mode & 0o7000:
            return False
        return node.mode & 0o777 & ~self._umask == node.mode & 0o7777


class _Ahead:
    """The subdirectories of one directory, each prepared (``prepare(node, path)``) in a
    thread ahead of the walk, results in order. Preparing one starts on its own
    subdirectories, so the walk finds whole subtrees ready; ``budget`` bounds how many
    are prepared and not yet walked (when it is spent, the walk prepares the next one
    itself)."""

    def __init__(
        self,
        pool: PriorityPool,
        budget: threading.Semaphore,
        prepare: Callable[[Node, bytes, tuple[int, ...]], _Prepared],
        subdirs: list[tuple[tuple[int, ...], Node]],
        path: bytes,
    ) -> None:
        self._pool, self._budget, self._prepare, self._path = pool, budget, prepare, path
        self._todo = deque(subdirs)
        self._ready: deque[Future[_Prepared]] = deque()
        self._fill(FIRST_SUBDIRS)

    def _fill(self, width: int = SUBDIRS_AHEAD) -> None:
        while self._todo and len(self._ready) < width:
            if not self._budget.acquire(blocking=False):
                return
            self._submit()

    def _submit(self) -> None:
        key, node = self._todo.popleft()
        cpath = os.path.join(self._path, node.name)
        self._ready.append(self._pool.submit(key, partial(self._prepare, node, cpath, key)))

    def next(self) -> _Prepared:
        """The next subdirectory, prepared; a tree that cannot be read raises here.
        Called by the walk only (the thread that made this object handed it over)."""
        if self._ready:
            try:
                prepared = self._ready.popleft().result()
            finally:
                self._budget.release()
        else:  # the budget is held further ahead: here and now, not behind it in the queue
            key, node = self._todo.popleft()
            prepared = self._prepare(node, os.path.join(self._path, node.name), key)
        if prepared.subdirs is not None:
            prepared.subdirs._fill()  # what the walk needs next first, then siblings
        self._fill()
        return prepared


def _workers(repo: Repository) -> int:
    """A remote store answers each read later than a disk does: as many reads in flight
    as it is worth running at once (S3: 8)."""
    if getattr(repo.store, "remote", False):
        return max(LOCAL_WORKERS, int(getattr(repo.store, "parallelism", LOCAL_WORKERS)))
    return LOCAL_WORKERS


def _hold(d: _Dir) -> None:
    with d.lock:
        d.pending += 1


def _umask() -> int | None:
    """The process umask, read without changing it (os.umask would, for every thread);
    None where /proc does not say."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _make_dir(path: bytes) -> bool:
    """A directory (0700 until its metadata is applied); True if it is new, so nothing
    in it needs removing."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if os.path.isdir(path) and not os.path.islink(path):
            return False
        _remove(path)
        os.mkdir(path, 0o700)
    return True


def _remove(path: bytes) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _unlink(path: bytes) -> None:
    with contextlib.suppress(FileNotFoundError):  # failed before its first chunk: never made
        os.unlink(path)
