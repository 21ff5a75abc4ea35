"""``snapfs check``: is every snapshot restorable? Structure always, data on request."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from snapfs.cache.diskcache import DiskCache
from snapfs.cli.commands import open_repo
from snapfs.cli.output import human_bytes, print_json
from snapfs.cli.registry import AddCommand
from snapfs.errors import EXIT_FAILURE, EXIT_OK, UsageError
from snapfs.maintenance.check import ALL_PACKS, CheckResult, Subset, check, parse_subset
from snapfs.repo.lock import RepoLock
from snapfs.repo.repository import Repository


def register(add: AddCommand) -> None:
    p = add(
        "check",
        cmd_check,
        "verify the repository: every snapshot's trees and blobs indexed, every pack present "
        "with a matching header; with --read-data every blob decrypted and verified",
    )
    data = p.add_mutually_exclusive_group()
    data.add_argument(
        "--read-data",
        action="store_true",
        help="also download every pack and verify every blob in it",
    )
    data.add_argument(
        "--read-data-subset",
        type=_subset,
        metavar="N/M",
        help="like --read-data, for the packs whose first id byte modulo M is N-1 "
        "(1 <= N <= M <= 256): running 1/M .. M/M reads every pack once",
    )


def _subset(text: str) -> Subset:
    try:
        return parse_subset(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class _Progress:
    """One status line on a TTY, redrawn at most a few times a second."""

    def __init__(self, stream: TextIO = sys.stderr, interval: float = 0.25) -> None:
        self.stream, self.interval = stream, interval
        self._last = 0.0
        self._drawn = False

    def update(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        count = f"{done}/{total}" if total else str(done)
        self.stream.write(f"\r\x1b[Kchecking {stage}: {count}")
        self.stream.flush()
        self._drawn = True

    def done(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def cmd_check(args: argparse.Namespace) -> int:
    subset: Subset | None = ALL_PACKS if args.read_data else args.read_data_subset
    progress = _Progress() if not args.quiet and not args.json and sys.stderr.isatty() else None
    with (
        open_repo(args) as repo,
        RepoLock(repo.store, repo.key, exclusive=False),
        _empty_disk_cache(repo),
    ):
        try:
            result = check(repo, subset, progress.update if progress else None)
        finally:
            if progress:
                progress.done()
    if args.json:
        print_json(check_json(result))
    else:
        for problem in result.problems:
            print(problem.message)
        if not args.quiet:
            for note in result.notes:
                print(f"note: {note.message}")
            print(summary_line(result))
    return EXIT_OK if result.ok else EXIT_FAILURE


@contextmanager
def _empty_disk_cache(repo: Repository) -> Iterator[None]:
    """Check what the store holds, not copies cached earlier: an S3 repository's disk
    cache is swapped for an empty temporary one (which still lets the tree walk fetch
    each tree pack in a few large reads)."""
    disk = repo.fetcher.disk
    if disk is None:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="check-", dir=repo.cache.path) as tmp:
        empty = DiskCache(Path(tmp), disk.max_bytes)
        repo.fetcher.disk = empty
        try:
            yield
        finally:
            empty.close()  # its writes land before the directory goes
            repo.fetcher.disk = disk


def check_json(result: CheckResult) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "problems": [p.to_dict() for p in result.problems],
        "notes": [n.to_dict() for n in result.notes],
        "snapshots": result.snapshots,
        "index_files": result.index_files,
        "packs": result.packs,
        "blobs": result.blobs,
        "trees": result.trees,
        "read_data": None if result.subset is None else str(result.subset),
        "packs_read": result.packs_read,
        "blobs_read": result.blobs_read,
        "bytes_read": result.bytes_read,
    }


def summary_line(r: CheckResult) -> str:
    verdict = "no problems found" if r.ok else f"{_count(len(r.problems), 'problem')} found"
    line = (
        f"{verdict}: {_count(r.snapshots, 'snapshot')} ({_count(r.trees, 'tree')}), "
        f"{_count(r.index_files, 'index file')}, {_count(r.packs, 'pack')} "
        f"({_count(r.blobs, 'blob')})"
    )
    if r.subset is not None:
        which = "" if r.subset == ALL_PACKS else f" (subset {r.subset})"
        line += (
            f"; read {_count(r.packs_read, 'pack')}{which} and verified "
            f"{_count(r.blobs_read, 'blob')} ({human_bytes(r.bytes_read)})"
        )
    return line


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
