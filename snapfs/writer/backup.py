"""One snapshot run: walk the sources in a walker thread, store chunks through the
BlobSaver, and assemble directory trees bottom-up in the calling thread.

The walker emits each directory after all of its subdirectories (post-order) into a
bounded queue, so the tree builder never waits for a directory it has not yet seen and
memory holds only the directories in that queue, not the whole source tree.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import queue
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO

from snapfs.chunker import Chunker
from snapfs.errors import UsageError
from snapfs.repo.repository import Repository
from snapfs.repo.snapshot import Snapshot
from snapfs.repo.tree import DIR, FILE, SYMLINK, Node, encode_tree
from snapfs.writer.filescache import Content, FilesCache, Fingerprint, fingerprint
from snapfs.writer.readahead import ReadAhead
from snapfs.writer.saver import BlobSaver, Saved, SaverLimits
from snapfs.writer.walker import Excludes, node_from_stat, open_for_reading, scan_dir

log = logging.getLogger(__name__)

QUEUE_DIRS = 64
FILES_CACHE_BATCH = 2000
READ_BLOCK = 1 << 20
SCAN_THREADS = 4  # directory listings read ahead of the walker: cold inodes are disk reads
CACHE_READ_AHEAD_MAX = 256 << 20
PREFETCH_DIRS = 64  # listings read ahead and not yet walked, at most


@dataclass(slots=True)
class Summary:
    files_new: int = 0
    files_changed: int = 0
    files_unchanged: int = 0
    dirs: int = 0
    total_files: int = 0
    total_bytes: int = 0
    bytes_read: int = 0
    bytes_added: int = 0
    errors: int = 0
    xattrs: int = 0  # entries with extended attributes (a mount without any skips them)
    duration: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class BackupOptions:
    tags: tuple[str, ...] = ()
    excludes: Excludes = field(default_factory=Excludes)
    one_file_system: bool = False
    host: str = field(default_factory=socket.gethostname)
    limits: SaverLimits = field(default_factory=SaverLimits)


@dataclass(slots=True)
class _File:
    node: Node
    path: bytes
    fp: Fingerprint
    new: bool
    small: Future[list[Saved]] | None = None  # read and stored whole by a reader thread
    chunks: list[Future[Saved]] | None = None  # streamed by the walker, chunk by chunk

    @property
    def reused(self) -> bool:
        return self.small is None and self.chunks is None

    def saved(self) -> list[Saved]:
        if self.small is not None:
            return self.small.result()
        return [c.result() for c in self.chunks or ()]


@dataclass(slots=True)
class _Listing:
    """A directory read by a scan thread: entries, and the files-cache verdict per file."""

    entries: list[tuple[bytes, os.stat_result, Node]]
    reusable: dict[bytes, Content] = field(default_factory=dict)  # unchanged, chunks indexed
    known: set[bytes] = field(default_factory=set)  # files with any files-cache record
    error: OSError | None = None

    def subdirs(self, dev: int | None) -> list[tuple[bytes, int | None]]:
        """The subdirectories a walk limited to ``dev`` (None: any device) enters."""
        return [
            (path, dev)
            for path, st, node in self.entries
            if node.type == DIR and (dev is None or st.st_dev == dev)
        ]


@dataclass(slots=True)
class _DirJob:
    node: Node
    children: list[Node] = field(default_factory=list)
    files: list[_File] = field(default_factory=list)


class _Cancelled(Exception):
    pass


_LEAF: dict[bytes, Any] = {}


def source_paths(paths: list[str]) -> list[bytes]:
    """Absolute, existing sources; a path inside another one is dropped.

    Symlinks on the way to a source are resolved (the tree mirrors real directories);
    a source that is itself a symlink is kept as the link, as restic and borg do."""
    out: list[bytes] = []
    for p in paths:
        ap = os.path.abspath(os.fsencode(p))
        if not os.path.lexists(ap):
            raise UsageError(f"source path {p} does not exist")
        parent, name = os.path.split(ap)
        out.append(os.path.join(os.path.realpath(parent), name) if name else ap)
    out.sort()
    kept: list[bytes] = []
    for src in out:
        if not any(src == k or src.startswith(k.rstrip(b"/") + b"/") for k in kept):
            kept.append(src)
    return kept


def _trie(paths: list[bytes]) -> dict[bytes, Any]:
    root: dict[bytes, Any] = {}
    for p in paths:
        parts = [c for c in p.split(b"/") if c]
        cur = root
        for comp in parts[:-1]:
            cur = cur.setdefault(comp, {})
        if parts:
            cur[parts[-1]] = _LEAF
    return root


ProgressFn = Callable[[Summary, bytes], None]


class Backup:
    def __init__(
        self,
        repo: Repository,
        paths: list[str],
        options: BackupOptions,
        progress: ProgressFn | None = None,
    ) -> None:
        self.repo = repo
        self.sources = source_paths(paths)
        self.options = options
        self.progress = progress
        self.summary = Summary()
        self.warnings: list[str] = []
        self._max_chunk = repo.config.chunker_max
        self._readers = ThreadPoolExecutor(options.limits.readers, thread_name_prefix="read")
        self._ahead = ReadAhead(self._scan, SCAN_THREADS, PREFETCH_DIRS)
        self._small_slots = threading.BoundedSemaphore(options.limits.max_small_files)
        self._cache_updates: list[tuple[bytes, Fingerprint, Content]] = []
        self._files = FilesCache(repo.cache)
        self._queue: queue.Queue[_DirJob | BaseException | None] = queue.Queue(QUEUE_DIRS)
        self._cancel = threading.Event()
        self._saver = BlobSaver(repo, options.limits)

    # -- walker thread ------------------------------------------------------------------

    def _emit(self, item: _DirJob | BaseException | None) -> None:
        while True:
            if self._cancel.is_set():
                raise _Cancelled
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _warn(self, path: bytes, err: OSError | str) -> None:
        text = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        self.warnings.append(f"{os.fsdecode(path)}: {text}")

    def _walk(self) -> None:
        try:
            root = Node(name=b"", type=DIR, mode=0o755, uid=0, gid=0, mtime_ns=0)
            if self.sources == [b"/"]:
                self._walk_dir(root, b"/", os.lstat(b"/").st_dev)
            else:
                self._walk_virtual(b"/", _trie(self.sources), root)
            self._emit(None)
        except _Cancelled:
            pass
        except BaseException as e:
            with contextlib.suppress(_Cancelled):
                self._emit(e)

    def _walk_virtual(self, path: bytes, trie: dict[bytes, Any], node: Node) -> None:
        """A directory on the way to a source: only the components leading there."""
        job = _DirJob(node)
        for name in sorted(trie):
            cpath = os.path.join(path, name)
            try:
                st = os.lstat(cpath)
            except OSError as e:
                self._warn(cpath, e)
                continue
            child = node_from_stat(name, cpath, st)
            if trie[name] is _LEAF:
                if not self._entry(child, cpath, st, job, st.st_dev):
                    continue
            elif child.type == DIR:
                self._walk_virtual(cpath, trie[name], child)
            else:
                self._warn(cpath, "not a directory any more")
                continue
            job.children.append(child)
        self._emit(job)

    def _walk_dir(self, node: Node, path: bytes, root_dev: int) -> None:
        job = _DirJob(node)
        listing = self._ahead.take(path, root_dev if self.options.one_file_system else None)
        if listing.error is not None:
            self._warn(path, listing.error)
        for cpath, st, child in listing.entries:
            if self._entry(child, cpath, st, job, root_dev, listing=listing):
                job.children.append(child)
        self._emit(job)

    def _scan(self, path: bytes) -> _Listing:
        """Runs in a scan thread: lstat, xattrs and files-cache lookups of one directory."""
        try:
            listing = _Listing(scan_dir(path, self.options.excludes))
        except OSError as e:
            return _Listing([], error=e)
        files = [(p, st) for p, st, n in listing.entries if n.type == FILE]
        self._judge(listing, files, self._files.lookup_many([p for p, _ in files]))
        return listing

    def _entry(
        self,
        node: Node,
        path: bytes,
        st: os.stat_result,
        job: _DirJob,
        dev: int,
        *,
        listing: _Listing | None = None,
    ) -> bool:
        """Fill in one entry; False when it could not be read and is left out."""
        if self._cancel.is_set():
            raise _Cancelled
        if node.type == DIR:
            if self.options.one_file_system and st.st_dev != dev:
                self._emit(_DirJob(node))
            else:
                self._walk_dir(node, path, dev)
            return True
        if node.type == SYMLINK:
            try:
                node.target = os.readlink(path)
            except OSError as e:
                self._warn(path, e)
                return False
            return True
        if node.type == FILE:
            return self._file(node, path, st, job, listing or self._scan_one(path, st))
        return True

    def _scan_one(self, path: bytes, st: os.stat_result) -> _Listing:
        """The files-cache verdict for a source that is a single file."""
        listing = _Listing([])
        self._judge(listing, [(path, st)], [self._files.lookup(path)])
        return listing

    def _judge(
        self,
        listing: _Listing,
        files: list[tuple[bytes, os.stat_result]],
        records: list[tuple[Fingerprint, Content] | None],
    ) -> None:
        """A file is reused when its stat is unchanged and every chunk is still indexed.
        One index transaction covers the directory in the usual case that all are; a
        transaction per file only when some are not."""
        hits = [(p, st, rec) for (p, st), rec in zip(files, records, strict=True) if rec]
        listing.known.update(p for p, _, _ in hits)
        fresh = [(p, rec[1]) for p, st, rec in hits if rec[0] == fingerprint(st)]
        if self.repo.has_blobs(i for _, content in fresh for i, _ in content):
            listing.reusable.update(fresh)
            return
        for p, content in fresh:
            if self.repo.has_blobs(i for i, _ in content):
                listing.reusable[p] = content

    def _file(
        self, node: Node, path: bytes, st: os.stat_result, job: _DirJob, listing: _Listing
    ) -> bool:
        fp = fingerprint(st)
        content = listing.reusable.get(path)
        if content is not None:
            node.content = content
            job.files.append(_File(node, path, fp, new=False))
            return True
        entry = _File(node, path, fp, new=path not in listing.known)
        if st.st_size <= self._max_chunk:
            self._small_slots.acquire()
            entry.small = self._readers.submit(self._read_small, path)
            entry.small.add_done_callback(lambda _: self._small_slots.release())
        else:
            try:
                entry.chunks = self._read_large(path)
            except OSError as e:
                self._warn(path, e)
                return False
        job.files.append(entry)
        return True

    def _read_small(self, path: bytes) -> list[Saved]:
        """Runs in a reader thread: many small reads in flight keep the disk busy."""
        with _open_regular(path) as f:
            data = f.read(self._max_chunk + 1)
            if len(data) > self._max_chunk:
                f.seek(0)  # grew since stat: stream it like any large file
                return [fut.result() for fut in self._stream(f)]
        chunker = _thread_chunker(self.repo)
        return [self._saver.store_now(c) for c in chunker.chunk_buffer(data)]

    def _read_large(self, path: bytes) -> list[Future[Saved]]:
        with _open_regular(path) as f:
            return self._stream(f)

    def _stream(self, f: BinaryIO) -> list[Future[Saved]]:
        out = []
        for chunk in _thread_chunker(self.repo).chunks(f):
            if self._cancel.is_set():
                raise _Cancelled
            out.append(self._saver.save_data(chunk))
        return out

    # -- tree builder (calling thread) ----------------------------------------------------

    def _finish_dir(self, job: _DirJob) -> None:
        s = self.summary
        updates: list[tuple[bytes, Fingerprint, Content]] = []
        for f in job.files:
            if f.reused:
                s.files_unchanged += 1
            else:
                try:
                    saved = f.saved()
                except OSError as e:
                    self._warn(f.path, e)
                    job.children = [c for c in job.children if c is not f.node]
                    continue
                f.node.content = [(x.id, x.size) for x in saved]
                s.bytes_added += sum(x.stored for x in saved)
                read = sum(x.size for x in saved)
                s.bytes_read += read
                s.files_new += f.new
                s.files_changed += not f.new
                updates.append((f.path, f.fp, f.node.content))
            f.node.size = sum(size for _, size in f.node.content)
            s.total_files += 1
            s.total_bytes += f.node.size
        s.xattrs += sum(1 for c in job.children if c.xattrs)
        tree = self._saver.save_tree(encode_tree(job.children))
        s.bytes_added += tree.stored
        s.dirs += 1
        job.node.subtree = tree.id
        self._cache_updates += updates
        if len(self._cache_updates) >= FILES_CACHE_BATCH:
            self._flush_files_cache()

    def _flush_files_cache(self) -> None:
        self._files.store(self._cache_updates)
        self._cache_updates = []

    def run(self) -> Snapshot:
        """Store the sources and write the manifest; the manifest is the last write."""
        start = time.monotonic()
        self.repo.cache.read_ahead(CACHE_READ_AHEAD_MAX)  # files cache and blob index
        parent = self._find_parent()
        walker = threading.Thread(target=self._walk, name="walker", daemon=True)
        walker.start()
        root: Node | None = None
        try:
            while (item := self._queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                self._finish_dir(item)
                root = item.node
                if self.progress:
                    self.progress(self.summary, b"")
            self._shutdown_readers(cancel=False)
            self._saver.finish()
            self._flush_files_cache()
        except BaseException:
            self._cancel.set()
            walker.join()
            self._shutdown_readers(cancel=True)
            self._saver.abort()
            raise
        walker.join()
        assert root is not None
        assert root.subtree is not None
        self.summary.errors = len(self.warnings)
        self.summary.duration = time.monotonic() - start
        snap = Snapshot(
            time_ns=time.time_ns(),
            host=self.options.host,
            username=_username(),
            paths=[os.fsdecode(p) for p in self.sources],
            tree=root.subtree,
            tags=sorted(set(self.options.tags)),
            parent=parent,
            excludes=list(self.options.excludes.patterns),
            summary=self.summary.to_dict(),
        )
        self.repo.save_snapshot(snap)
        return snap

    def _shutdown_readers(self, cancel: bool) -> None:
        """Before the saver finishes: these threads are the ones that feed it."""
        self._ahead.close()
        self._readers.shutdown(wait=True, cancel_futures=cancel)

    def _find_parent(self) -> bytes | None:
        paths = [os.fsdecode(p) for p in self.sources]
        same = [
            s
            for s in self.repo.list_snapshots()
            if s.host == self.options.host and s.paths == paths
        ]
        return same[-1].id if same else None


_local = threading.local()


def _thread_chunker(repo: Repository) -> Chunker:
    """FastCDC objects must not be shared between threads; one per thread and repo."""
    cfg = repo.config
    chunker: Chunker | None = getattr(_local, "chunker", None)
    if chunker is None or getattr(_local, "repo_id", None) != cfg.id:
        chunker = Chunker(cfg.chunker_min, cfg.chunker_avg, cfg.chunker_max, cfg.chunker_seed)
        _local.chunker, _local.repo_id = chunker, cfg.id
    return chunker


@contextmanager
def _open_regular(path: bytes) -> Iterator[BinaryIO]:
    fd = open_for_reading(path)
    with os.fdopen(fd, "rb", buffering=0) as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(0, "replaced by a non-regular file during the backup")
        yield f


def _username() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
