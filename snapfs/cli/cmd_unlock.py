"""``snapfs unlock``: clear locks left by processes that died."""

from __future__ import annotations

import argparse
import time

from snapfs.cli.commands import open_repo
from snapfs.cli.output import print_json
from snapfs.cli.registry import AddCommand
from snapfs.errors import EXIT_OK
from snapfs.repo.lock import list_locks


def register(add: AddCommand) -> None:
    p = add("unlock", cmd_unlock, "remove stale locks")
    p.add_argument(
        "--remove-all", action="store_true", help="remove every lock, also live ones (careful)"
    )


def cmd_unlock(args: argparse.Namespace) -> int:
    removed, kept = [], []
    with open_repo(args) as repo:
        now = time.time()
        for lock in list_locks(repo.store, repo.key):
            if args.remove_all or lock.is_stale(now):
                repo.store.delete(lock.name)
                removed.append(lock)
            else:
                kept.append(lock)
    if args.json:
        print_json(
            {"removed": [lk.describe() for lk in removed], "kept": [lk.describe() for lk in kept]}
        )
    elif not args.quiet:
        for lk in removed:
            print(f"removed {'stale ' if not args.remove_all else ''}{lk.describe()}")
        for lk in kept:
            print(f"kept live {lk.describe()}")
        print(f"{len(removed)} locks removed")
    return EXIT_OK
