"""One function per subcommand; each returns the process exit code."""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from snapfs.cli.output import Progress, human_bytes, node_json, node_line, print_json
from snapfs.cli.password import read_password
from snapfs.crypto import KdfParams
from snapfs.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_PARTIAL,
    RepositoryNotFound,
    SnapfsError,
    UsageError,
)
from snapfs.repo.config import MiB, RepoConfig
from snapfs.repo.lock import RepoLock
from snapfs.repo.repository import Repository, init_repository
from snapfs.repo.snapshot import Snapshot
from snapfs.store import Store, open_store
from snapfs.store.counting import CountingStore
from snapfs.vfs.paths import resolve, walk

log = logging.getLogger("snapfs")


def repo_url(args: argparse.Namespace) -> str:
    url: str | None = args.repo or os.environ.get("SNAPFS_REPO")
    if not url:
        raise UsageError("no repository given: use -r/--repo or set SNAPFS_REPO")
    return url


def store_for(args: argparse.Namespace) -> Store:
    """The repository's store; with SNAPFS_STATS set, counted and reported at the end."""
    store = open_store(repo_url(args), args.s3_endpoint)
    if os.environ.get("SNAPFS_STATS"):
        counting = CountingStore(store)
        atexit.register(lambda: log.warning("%s", counting.summary()))
        return counting
    return store


def disk_cache_bytes(args: argparse.Namespace) -> int:
    if args.disk_cache < 0:
        raise UsageError("--disk-cache must be 0 (off) or more MiB")
    return int(args.disk_cache) * MiB


@contextmanager
def open_repo(args: argparse.Namespace) -> Iterator[Repository]:
    store = store_for(args)
    if not store.exists("config"):  # say so before asking for a password
        check_bucket = getattr(getattr(store, "inner", store), "check_bucket", None)
        if check_bucket is not None:
            check_bucket()  # S3: a missing bucket says so
        raise RepositoryNotFound(f"no snapfs repository at {store.location}")
    password = read_password(args.password_file)
    repo = Repository.open(store, password, disk_cache_bytes=disk_cache_bytes(args))
    try:
        yield repo
    finally:
        repo.close()


def cmd_mount(args: argparse.Namespace) -> int:
    from snapfs.cli import mounting

    return mounting.cmd_mount(args, store_for(args), disk_cache_bytes(args))


def cmd_umount(args: argparse.Namespace) -> int:
    from snapfs.cli import mounting

    return mounting.cmd_umount(args)


def cmd_init(args: argparse.Namespace) -> int:
    if not 0 <= args.compression <= 22:
        raise UsageError("--compression must be between 0 (off) and 22")
    if not 1 <= args.pack_size <= 512:
        raise UsageError("--pack-size must be between 1 and 512 MiB")
    store = store_for(args)
    ensure_bucket = getattr(getattr(store, "inner", store), "ensure_bucket", None)
    if ensure_bucket is not None:  # S3: create the bucket if needed, as restic does
        ensure_bucket()
    if store.exists("config"):
        raise SnapfsError(f"a repository already exists at {store.location}")
    password = read_password(args.password_file, confirm=True)
    config = RepoConfig.new(compression=args.compression, pack_size=args.pack_size * MiB)
    init_repository(store, password, config, KdfParams())
    if args.json:
        print_json({"id": config.id, "repository": store.location})
    elif not args.quiet:
        print(f"created snapfs repository {config.id[:8]} at {store.location}")
        print("Keep the password safe: without it the data cannot be read by anyone.")
    return EXIT_OK


def cmd_snapshot(args: argparse.Namespace) -> int:
    from snapfs.writer.backup import Backup, BackupOptions  # only this command writes
    from snapfs.writer.walker import Excludes, read_exclude_file

    patterns = list(args.exclude)
    for path in args.exclude_file:
        try:
            patterns += read_exclude_file(path)
        except OSError as e:
            raise UsageError(f"cannot read exclude file {path}: {e.strerror}") from None
    options = BackupOptions(
        tags=tuple(args.tag),
        excludes=Excludes(tuple(patterns)),
        one_file_system=args.one_file_system,
        **({"host": args.host} if args.host else {}),
    )
    show_progress = not args.quiet and not args.json and sys.stderr.isatty()
    with open_repo(args) as repo, RepoLock(repo.store, repo.key, exclusive=False):
        progress = Progress() if show_progress else None
        backup = Backup(repo, args.paths, options, progress.update if progress else None)
        try:
            snap = backup.run()
        finally:
            if progress:
                progress.done()
    for warning in backup.warnings:
        log.warning("%s", warning)
    s = backup.summary
    if args.json:
        print_json({"snapshot": snap.id.hex(), "short_id": snap.short_id, **s.to_dict()})
    elif not args.quiet:
        rate = s.bytes_read / s.duration if s.duration > 0 else 0.0
        print(
            f"files: {s.files_new} new, {s.files_changed} changed, "
            f"{s.files_unchanged} unchanged ({s.total_files} in all, {s.dirs} directories)"
        )
        print(
            f"read {human_bytes(s.bytes_read)} of {human_bytes(s.total_bytes)} in "
            f"{s.duration:.1f} s ({human_bytes(rate)}/s), added {human_bytes(s.bytes_added)}"
        )
        print(f"snapshot {snap.short_id} saved")
    if backup.warnings:
        log.error("%d files or directories could not be read (listed above)", len(backup.warnings))
        return EXIT_PARTIAL
    return EXIT_OK


def snapshot_json(s: Snapshot) -> dict[str, object]:
    return {
        "id": s.id.hex(),
        "short_id": s.short_id,
        "time": s.time.isoformat().replace("+00:00", "Z"),
        "host": s.host,
        "username": s.username,
        "paths": s.paths,
        "tags": s.tags,
        "tree": s.tree.hex(),
        "parent": s.parent.hex() if s.parent else None,
        "original": s.original.hex() if s.original else None,
        "summary": s.summary,
    }


def cmd_snapshots(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        snaps = repo.list_snapshots()
    if args.json:
        print_json([snapshot_json(s) for s in snaps])
        return EXIT_OK
    print(f"{'ID':<9} {'Time':<20} {'Host':<16} {'Tags':<16} Paths")
    for s in snaps:
        when = s.time.strftime("%Y-%m-%d %H:%M:%S")
        print(f"{s.short_id:<9} {when:<20} {s.host:<16} {','.join(s.tags):<16} {' '.join(s.paths)}")
    print(f"{len(snaps)} snapshots")
    return EXIT_OK


def split_ref(ref: str) -> tuple[str, str]:
    snap, _, path = ref.partition(":")
    return snap, path or "/"


def cmd_ls(args: argparse.Namespace) -> int:
    ref, path = split_ref(args.snapshot)
    with open_repo(args) as repo:
        snap = repo.find_snapshot(ref)
        node = resolve(repo, snap, path)
        base = os.fsencode("/" + path.strip("/")) if path.strip("/") else b""
        entries = [(base or b"/", node)] if base else []
        entries_iter = walk(repo, node, base) if node.type == "dir" else iter(())
        for p, n in [*entries, *entries_iter]:
            if args.json:
                print_json(node_json(p, n))
            else:
                print(node_line(p, n))
    return EXIT_OK


def cmd_restore(args: argparse.Namespace) -> int:
    from snapfs.restore.restorer import Restorer

    ref, path = split_ref(args.snapshot)
    if not args.target:
        raise UsageError("restore needs --target DIR")
    target = os.path.abspath(os.fsencode(args.target))
    with open_repo(args) as repo, RepoLock(repo.store, repo.key, exclusive=False):
        snap = repo.find_snapshot(ref)
        node = resolve(repo, snap, path)
        dest = target if node.type == "dir" else os.path.join(target, node.name)
        stats = Restorer(repo).restore(node, dest)
    for err in stats.errors:
        log.error("%s", err)
    if not args.quiet:
        print(
            f"restored {stats.files} files, {stats.dirs} directories, {stats.others} other "
            f"entries ({human_bytes(stats.bytes)}) from snapshot {snap.short_id} "
            f"to {os.fsdecode(target)}"
        )
    if stats.errors:
        log.error("%d entries could not be restored (listed above)", len(stats.errors))
        return EXIT_FAILURE
    return EXIT_OK
