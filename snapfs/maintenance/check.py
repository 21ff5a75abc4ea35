"""Check: is every snapshot fully restorable from what the repository holds?

Structure (always): every snapshot manifest and index file opens; every tree of every
snapshot reads (which means it is indexed, its pack exists and it authenticates); every
data blob a snapshot lists is in the index; every pack an index names exists, is large
enough for what the index says is in it, and its header (read from the pack's tail by
ranged reads) lists every blob the index places there, at the same offset and length,
and accounts for the pack's exact size. The index may list only some of a pack's blobs
(prune drops the entries of unused blobs from packs it does not repack).

Data (``read_data``): every indexed pack is downloaded whole, its SHA-256 compared with
its name, and every indexed blob in it decrypted and verified against its id and length.
A subset ``N/M`` reads only the packs whose first id byte modulo M is N - 1, so M runs
with N = 1..M read every pack exactly once.

Packs in ``data/`` that no index lists are left by interrupted (or still running)
snapshots or prunes; they are reported as notes, not problems.

Sync; pack reads run on a small thread pool. Memory: 45 bytes per indexed blob (the
index entries, grouped by pack), the ids of visited trees, and at most READ_WORKERS whole
packs during ``read_data`` — never more pack bytes than the packs being verified.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, TypeVar

from snapfs.crypto import open_sealed
from snapfs.crypto.aead import OVERHEAD
from snapfs.errors import IntegrityError, ObjectNotFound, SnapfsError, UsageError
from snapfs.repo.blob import open_blob
from snapfs.repo.format import (
    AAD_SNAPSHOT,
    BLOB_TREE,
    PACK_HEADER_MAGIC,
    U32,
    BlobLocation,
    id_from_name,
    object_id,
    pack_name,
)
from snapfs.repo.pack import read_pack_header
from snapfs.repo.repository import Repository
from snapfs.repo.snapshot import Snapshot
from snapfs.repo.walk import Reference, referenced

READ_WORKERS = 4  # whole packs held at once while reading data
_RECORD = struct.Struct("<B32sIII")  # type, blob id, offset, stored length, raw length
_HEADER_ENTRY_SIZE = 41  # docs/format.md §8: <B32sII
_HEADER_FIXED = len(PACK_HEADER_MAGIC) + U32.size

# problem kinds, in the order they are listed
SNAPSHOT = "snapshot"  # a manifest cannot be read
INDEX = "index"  # an index file cannot be read
PACK_MISSING = "pack-missing"  # an indexed pack is not in data/
PACK_SIZE = "pack-size"  # a pack is too short for its index entries, or its header
PACK_HEADER = "pack-header"  # the header cannot be read or does not list the indexed blobs
PACK_READ = "pack-read"  # a pack could not be downloaded (read_data)
PACK_HASH = "pack-hash"  # a pack's SHA-256 is not its name (read_data)
BLOB = "blob"  # a blob fails to decrypt or verify (read_data)
TREE = "tree"  # a snapshot's directory tree cannot be read
BLOB_MISSING = "blob-missing"  # a snapshot needs a data blob no index lists
KINDS = (
    SNAPSHOT,
    INDEX,
    PACK_MISSING,
    PACK_SIZE,
    PACK_HEADER,
    PACK_READ,
    PACK_HASH,
    BLOB,
    TREE,
    BLOB_MISSING,
)
# note kinds (not problems)
UNINDEXED_PACK = "unindexed-pack"
STRAY_OBJECT = "stray-object"

Progress = Callable[[str, int, int], None]
"""Called with (stage, done, total); total is 0 when unknown. Stages: "snapshots",
"index", "packs", "read", "trees"."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding. ``message`` is a complete line naming what is known of snapshot
    (short id), path, pack and blob; the fields repeat them for machines."""

    kind: str
    message: str
    snapshot: str | None = None
    path: str | None = None
    pack: str | None = None
    blob: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "snapshot": self.snapshot,
            "path": self.path,
            "pack": self.pack,
            "blob": self.blob,
        }


@dataclass(frozen=True, slots=True)
class Subset:
    """Packs whose first id byte modulo ``m`` is ``n - 1`` (1 <= n <= m <= 256)."""

    n: int
    m: int

    def selects(self, pack_id: bytes) -> bool:
        return pack_id[0] % self.m == self.n - 1

    def __str__(self) -> str:
        return f"{self.n}/{self.m}"


ALL_PACKS = Subset(1, 1)


def parse_subset(text: str) -> Subset:
    """``N/M`` with 1 <= N <= M <= 256; anything else is a UsageError."""
    n_text, slash, m_text = text.partition("/")
    if not (slash and n_text.isdigit() and m_text.isdigit()):
        raise UsageError(f"read-data subset {text!r} is not of the form N/M (e.g. 1/5)")
    n, m = int(n_text), int(m_text)
    if not 1 <= n <= m <= 256:
        raise UsageError(f"read-data subset {text!r} needs 1 <= N <= M <= 256")
    return Subset(n, m)


@dataclass(slots=True)
class CheckResult:
    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)
    snapshots: int = 0
    index_files: int = 0
    packs: int = 0  # packs the index names
    blobs: int = 0  # index entries (pack, blob), duplicates counted once
    trees: int = 0  # distinct trees walked
    packs_read: int = 0
    blobs_read: int = 0
    bytes_read: int = 0
    subset: Subset | None = None  # what read_data covered; None = no data read

    @property
    def ok(self) -> bool:
        return not self.problems


def check(
    repo: Repository,
    read_data: Subset | None = None,
    progress: Progress | None = None,
) -> CheckResult:
    """Check the repository; ``read_data`` = the packs to download and verify (None: none,
    ALL_PACKS: all). Problems with objects are returned, not raised; a store that cannot
    be listed still raises (StoreError)."""
    return _Checker(repo, progress or (lambda _s, _d, _t: None)).run(read_data)


def _short(raw: bytes) -> str:
    return raw.hex()[:16]


def _display(path: bytes) -> str:
    return path.decode("utf-8", errors="backslashreplace")


def _error_text(e: Exception) -> str:
    return str(e) or type(e).__name__


@dataclass(slots=True)
class _Users:
    """Who needs a damaged pack: the first reference seen and how many others."""

    first: Reference
    others: int = 0


@dataclass(slots=True)
class _PackResult:
    pack: bytes
    kind: str | None = None  # a problem kind, or None when all is well
    text: str = ""
    bad_blobs: list[tuple[bytes, str]] = field(default_factory=list)
    blobs_read: int = 0
    bytes_read: int = 0


class _Checker:
    def __init__(self, repo: Repository, progress: Progress) -> None:
        self.repo = repo
        self.progress = progress
        self.result = CheckResult()
        self.index: dict[bytes, bytes] = {}  # pack id -> sorted unique 45-byte records
        self.stored: dict[bytes, int] = {}  # pack id -> size, from one listing of data/
        self.pack_problems: dict[bytes, list[tuple[str, str]]] = {}
        self.bad_blobs: dict[bytes, tuple[bytes, str]] = {}  # blob id -> (pack, error)
        self.users: dict[bytes, _Users] = {}  # damaged pack -> who needs it
        self.reported: set[bytes] = set()  # damaged blobs already named with a path
        self.workers = max(1, int(getattr(repo.store, "parallelism", 2)))
        self.index_damaged = False  # an index file could not be read

    def problem(self, kind: str, message: str, **where: str | None) -> None:
        self.result.problems.append(Problem(kind, message, **where))

    def run(self, read_data: Subset | None) -> CheckResult:
        # Snapshots first, index files next, packs last: each is written after what it
        # refers to, so a snapshot finishing meanwhile cannot look like damage.
        snaps = self.load_snapshots()
        with contextlib.suppress(SnapfsError):  # the file at fault is named by load_index
            self.repo.sync_index()
        self.load_index()
        self.list_packs()
        self.check_headers()
        if read_data is not None:
            self.result.subset = read_data
            self.read_packs(read_data)
        self.walk(snaps)
        self.finish()
        return self.result

    # -- snapshots and index files ---------------------------------------------------------

    def load_snapshots(self) -> list[Snapshot]:
        """Every manifest, read from the store (not the cache) and checked against its name."""
        names = [n for n, _ in self.repo.store.list("snapshots/")]
        snaps = []
        for i, name in enumerate(names):
            self.progress("snapshots", i, len(names))
            short = name.rsplit("/", 1)[-1][:8]
            try:
                sid = id_from_name(name)
                data = self.repo.store.get(name)
                if object_id(data) != sid:
                    raise IntegrityError("the manifest does not match its name")
                plain = open_sealed(self.repo.key.cipher, data, AAD_SNAPSHOT)
                snaps.append(Snapshot.from_json(plain, sid))
            except ObjectNotFound:
                continue  # forgotten meanwhile
            except SnapfsError as e:
                msg = f"snapshot {short}: cannot read its manifest ({name}): {_error_text(e)}"
                self.problem(SNAPSHOT, msg, snapshot=short)
        snaps.sort(key=lambda s: (s.time_ns, s.id))
        self.result.snapshots = len(snaps)
        return snaps

    def load_index(self) -> None:
        names = [n for n, _ in self.repo.store.list("index/")]
        parts: dict[bytes, list[bytes]] = {}
        for i, name in enumerate(names):
            self.progress("index", i, len(names))
            hexname = name.rsplit("/", 1)[-1]
            try:
                entries = self.repo.read_index_file(hexname)
            except SnapfsError as e:
                text = _error_text(e)
                if hexname[:16] not in text:
                    text = f"index file {hexname[:16]}: {text}"
                self.problem(INDEX, text)
                self.index_damaged = True
                continue
            self.result.index_files += 1
            grouped: dict[bytes, list[bytes]] = {}
            for blob_id, loc in entries:
                rec = _RECORD.pack(loc.type, blob_id, loc.offset, loc.length, loc.raw_length)
                grouped.setdefault(loc.pack, []).append(rec)
            for pack, recs in grouped.items():
                parts.setdefault(pack, []).append(b"".join(recs))
        for pack, chunks in parts.items():
            joined = b"".join(chunks)
            unique = {joined[i : i + _RECORD.size] for i in range(0, len(joined), _RECORD.size)}
            self.index[pack] = b"".join(sorted(unique))
            self.result.blobs += len(unique)
        self.result.packs = len(self.index)

    def list_packs(self) -> None:
        """One listing of data/: indexed packs missing, and packs no index lists."""
        for name, size in self.repo.store.list("data/"):
            try:
                pack = id_from_name(name)
            except SnapfsError:
                pack = b""
            if not pack or pack_name(pack) != name:
                note = f"{name} is not a pack name; snapfs ignores it"
                self.result.notes.append(Problem(STRAY_OBJECT, note))
                continue
            self.stored[pack] = size
            if pack not in self.index and self.index_damaged:
                note = (
                    f"pack {_short(pack)} ({size} bytes) is in no readable index file: it may "
                    "hold blobs listed by the damaged index file(s); keep it"
                )
                self.result.notes.append(Problem(UNINDEXED_PACK, note, pack=pack.hex()))
            elif pack not in self.index:
                note = (
                    f"pack {_short(pack)} ({size} bytes) is in no index file: left by an "
                    "interrupted or running snapshot or prune; harmless, prune removes it"
                )
                self.result.notes.append(Problem(UNINDEXED_PACK, note, pack=pack.hex()))
        for pack in self.index:
            if pack not in self.stored:
                self.pack_problem(pack, PACK_MISSING, "missing from the repository")

    def pack_problem(self, pack: bytes, kind: str, text: str) -> None:
        self.pack_problems.setdefault(pack, []).append((kind, text))

    # -- pack headers ----------------------------------------------------------------------

    def check_headers(self) -> None:
        packs = [p for p in self.index if p in self.stored]
        for i, res in enumerate(_bounded(self.check_header, packs, self.workers)):
            self.progress("packs", i + 1, len(packs))
            if res.kind is not None:
                self.pack_problem(res.pack, res.kind, res.text)

    def check_header(self, pack: bytes) -> _PackResult:
        """Ranged reads of the pack's tail: the header's length, then the header."""
        res = _PackResult(pack)
        records = self.index[pack]
        size = self.stored[pack]
        count = len(records) // _RECORD.size
        end = max(off + length for _, _, off, length, _ in _RECORD.iter_unpack(records))
        least_header = OVERHEAD + _HEADER_FIXED + count * _HEADER_ENTRY_SIZE
        if size < end + least_header + U32.size:
            res.kind = PACK_SIZE
            res.text = (
                f"{size} bytes, fewer than the {end + least_header + U32.size} its index "
                "entries need (truncated)"
            )
            return res
        name = pack_name(pack)
        try:
            tail = self.repo.store.get(
                name, size - least_header - U32.size, least_header + U32.size
            )
            (hlen,) = U32.unpack_from(tail, len(tail) - U32.size)
            if hlen + U32.size > size - end:
                res.kind = PACK_HEADER
                res.text = (
                    f"header length field says {hlen} bytes, more than the pack holds "
                    "after its indexed blobs (damaged or truncated)"
                )
                return res
            if hlen + U32.size > len(tail):  # the header lists blobs no index does
                tail = self.repo.store.get(name, size - hlen - U32.size, hlen + U32.size)
            listed = read_pack_header(self.repo.key, pack, tail)
        except ObjectNotFound:
            res.kind, res.text = PACK_MISSING, "disappeared while being checked"
            return res
        except SnapfsError as e:
            res.kind, res.text = PACK_HEADER, f"header cannot be read: {_error_text(e)}"
            return res
        header = {
            _RECORD.pack(loc.type, bid, loc.offset, loc.length, loc.raw_length)
            for bid, loc in listed
        }
        if sum(loc.length for _, loc in listed) + hlen + U32.size != size:
            res.kind = PACK_SIZE
            res.text = f"{size} bytes, not the size its header accounts for"
            return res
        unlisted = sum(
            1
            for i in range(0, len(records), _RECORD.size)
            if records[i : i + _RECORD.size] not in header
        )
        if unlisted:
            res.kind = PACK_HEADER
            res.text = (
                f"header does not list {unlisted} of the {count} blobs the index places "
                "in it at the same offset and length"
            )
        return res

    # -- data ------------------------------------------------------------------------------

    def read_packs(self, subset: Subset) -> None:
        packs = [p for p in self.index if p in self.stored and subset.selects(p)]
        for i, res in enumerate(_bounded(self.read_pack, packs, min(self.workers, READ_WORKERS))):
            self.progress("read", i + 1, len(packs))
            if res.kind is not None:
                self.pack_problem(res.pack, res.kind, res.text)
            if res.kind not in (PACK_MISSING, PACK_READ):
                self.result.packs_read += 1
            self.result.blobs_read += res.blobs_read
            self.result.bytes_read += res.bytes_read
            for blob_id, error in res.bad_blobs:
                self.bad_blobs.setdefault(blob_id, (res.pack, error))

    def read_pack(self, pack: bytes) -> _PackResult:
        """Download one pack whole; its bytes are dropped when this returns."""
        res = _PackResult(pack)
        try:
            data = self.repo.store.get(pack_name(pack))
        except ObjectNotFound:
            res.kind, res.text = PACK_MISSING, "disappeared while being checked"
            return res
        except SnapfsError as e:
            res.kind, res.text = PACK_READ, f"cannot be read: {_error_text(e)}"
            return res
        res.bytes_read = len(data)
        if object_id(data) != pack:
            res.kind = PACK_HASH
            res.text = "content does not match its name (SHA-256): the pack was altered"
        view = memoryview(data)
        for _, blob_id, off, length, raw in _RECORD.iter_unpack(self.index[pack]):
            res.blobs_read += 1
            if off + length > len(data):
                res.bad_blobs.append((blob_id, "lies beyond the end of the pack (truncated)"))
                continue
            try:
                open_blob(self.repo.key, blob_id, view[off : off + length], raw)
            except IntegrityError as e:
                res.bad_blobs.append((blob_id, _error_text(e)))
        return res

    # -- snapshots' trees and blobs --------------------------------------------------------

    def walk(self, snaps: list[Snapshot]) -> None:
        missing: set[bytes] = set()
        for ref in referenced(self.repo, snaps, on_tree_error=self.tree_error):
            if ref.type == BLOB_TREE:
                self.result.trees += 1
                if self.result.trees % 1000 == 0:
                    self.progress("trees", self.result.trees, 0)
            loc = self.repo.lookup(ref.blob_id)
            if loc is None:
                if ref.type != BLOB_TREE and ref.blob_id not in missing:
                    missing.add(ref.blob_id)
                    self.problem(
                        BLOB_MISSING,
                        f"{_where(ref)}: chunk {_short(ref.blob_id)} is in no index file",
                        **_fields(ref),
                    )
                continue  # a tree not in the index is reported by tree_error
            self.note_user(ref, loc)
            bad = self.bad_blobs.get(ref.blob_id)
            if bad is not None and bad[0] == loc.pack:  # the copy snapshots read is bad
                pack, error = self.bad_blobs.pop(ref.blob_id)
                self.reported.add(ref.blob_id)
                what = "directory tree" if ref.type == BLOB_TREE else "chunk"
                self.problem(
                    BLOB,
                    f"{_where(ref)}: {what} {_short(ref.blob_id)} in pack {_short(pack)}: {error}",
                    **_fields(ref),
                    pack=pack.hex(),
                )

    def tree_error(self, ref: Reference, e: Exception) -> None:
        if ref.blob_id in self.reported:
            return  # read_data found it damaged, and said so with this path
        loc = self.repo.lookup(ref.blob_id)
        self.problem(
            TREE,
            f"{_where(ref)}: directory tree {_short(ref.blob_id)} cannot be read: {_error_text(e)}",
            **_fields(ref),
            pack=loc.pack.hex() if loc else None,
        )

    def note_user(self, ref: Reference, loc: BlobLocation) -> None:
        if loc.pack not in self.pack_problems:
            return
        users = self.users.get(loc.pack)
        if users is None:
            self.users[loc.pack] = _Users(ref)
        else:
            users.others += 1

    # -- the report ------------------------------------------------------------------------

    def finish(self) -> None:
        for pack in sorted(self.pack_problems):
            users = self.users.get(pack)
            where: dict[str, str | None] = {"pack": pack.hex()}
            if users is None:
                needed = "no snapshot uses it"
            else:
                needed = f"needed by {_where(users.first)}"
                if users.others:
                    s = "" if users.others == 1 else "s"
                    needed += f" (and {users.others} other reference{s})"
                where |= {"snapshot": users.first.snapshot.short_id}
                where |= {"path": _display(users.first.path)}
            for kind, text in self.pack_problems[pack]:
                self.problem(kind, f"pack {_short(pack)}: {text}; {needed}", **where)
        for blob_id, (pack, error) in sorted(self.bad_blobs.items(), key=lambda x: x[1][0]):
            self.problem(
                BLOB,
                f"pack {_short(pack)}: blob {_short(blob_id)}: {error}; "
                "no snapshot reads it from this pack",
                pack=pack.hex(),
                blob=blob_id.hex(),
            )
        order = {k: i for i, k in enumerate(KINDS)}
        self.result.problems.sort(key=lambda p: order.get(p.kind, len(order)))


def _where(ref: Reference) -> str:
    return f"snapshot {ref.snapshot.short_id} {_display(ref.path)}"


def _fields(ref: Reference) -> dict[str, str | None]:
    return {
        "snapshot": ref.snapshot.short_id,
        "path": _display(ref.path),
        "blob": ref.blob_id.hex(),
    }


_T = TypeVar("_T")
_R = TypeVar("_R")


def _bounded(fn: Callable[[_T], _R], items: Iterable[_T], workers: int) -> Iterator[_R]:
    """``fn`` over ``items`` on ``workers`` threads, results in completion order, at most
    2 * workers submitted at a time (so at most ``workers`` running)."""
    with ThreadPoolExecutor(workers, thread_name_prefix="check") as pool:
        pending: set[Future[_R]] = set()
        try:
            for item in items:
                pending.add(pool.submit(fn, item))
                if len(pending) >= 2 * workers:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        yield f.result()
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    yield f.result()
        finally:
            for f in pending:
                f.cancel()
