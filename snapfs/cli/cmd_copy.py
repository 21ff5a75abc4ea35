"""``snapfs copy --to REPO2 [SNAP...]``: copy snapshots into another repository."""

from __future__ import annotations

import argparse

from snapfs.cli.cmd_key import read_secret
from snapfs.cli.commands import open_repo
from snapfs.cli.output import human_bytes, print_json
from snapfs.cli.registry import AddCommand
from snapfs.errors import EXIT_OK, RepositoryNotFound, UsageError
from snapfs.maintenance.copy import Copied, Copier, open_destination, select
from snapfs.repo.lock import RepoLock
from snapfs.store import open_store


def register(add: AddCommand) -> None:
    p = add("copy", cmd_copy, "copy snapshots into another repository")
    p.add_argument("snapshots", nargs="*", metavar="SNAP", help="latest or an id (default: all)")
    p.add_argument("--to", required=True, metavar="REPO", help="destination path or URL")
    p.add_argument(
        "--to-password-file",
        metavar="FILE",
        help="read the destination's password from this file "
        "(default: $SNAPFS_TO_PASSWORD, $SNAPFS_TO_PASSWORD_FILE)",
    )
    p.add_argument(
        "--to-s3-endpoint", metavar="URL", help="S3 endpoint of the destination (default: as -r)"
    )


def _copied_json(c: Copied) -> dict[str, object]:
    return {
        "source": c.source.id.hex(),
        "snapshot": c.copy.id.hex(),
        "skipped": c.skipped,
        "blobs_read": c.stats.blobs_read,
        "data_added": c.stats.data_added,
        "trees_added": c.stats.trees_added,
        "blobs_existing": c.stats.blobs_existing,
        "bytes_added": c.stats.bytes_added,
    }


def _line(c: Copied) -> str:
    if c.skipped:
        return f"snapshot {c.source.short_id} is already there as {c.copy.short_id}: skipped"
    s = c.stats
    return (
        f"snapshot {c.source.short_id} copied as {c.copy.short_id}: "
        f"{s.data_added} data and {s.trees_added} tree blobs added "
        f"({human_bytes(s.bytes_added)}), {s.blobs_existing} already there"
    )


def cmd_copy(args: argparse.Namespace) -> int:
    human = not args.json and not args.quiet
    with open_repo(args) as source:
        store = open_store(args.to, args.to_s3_endpoint or args.s3_endpoint)
        if not store.exists("config"):  # say so before asking for a password
            raise RepositoryNotFound(
                f"no snapfs repository at {store.location} (create it with 'snapfs init')"
            )
        if store.location == source.store.location:
            raise UsageError("the destination is the source repository")
        password = read_secret(
            path=args.to_password_file,
            env="SNAPFS_TO_PASSWORD",
            env_file="SNAPFS_TO_PASSWORD_FILE",
            prompt="destination repository password",
            confirm=False,
        )
        dest = open_destination(source, store, password)
        try:
            with (
                RepoLock(source.store, source.key, exclusive=False),
                RepoLock(dest.store, dest.key, exclusive=False),
            ):
                snaps = select(source, args.snapshots)
                copier = Copier(source, dest)
                done = copier.run(snaps, (lambda c: print(_line(c), flush=True)) if human else None)
        finally:
            dest.close()
    copied = sum(not c.skipped for c in done)
    if args.json:
        print_json(
            {
                "destination": store.location,
                "copied": copied,
                "skipped": len(done) - copied,
                "bytes_added": copier.stats.bytes_added,
                "snapshots": [_copied_json(c) for c in done],
            }
        )
    elif human:
        print(
            f"{copied} snapshot{'s' * (copied != 1)} copied, {len(done) - copied} already there; "
            f"added {human_bytes(copier.stats.bytes_added)} to {store.location}"
        )
    return EXIT_OK
