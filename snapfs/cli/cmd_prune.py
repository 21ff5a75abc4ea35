"""``snapfs prune``: delete unreferenced data and repack mostly-unused packs."""

from __future__ import annotations

import argparse

from snapfs.cli.commands import open_repo
from snapfs.cli.output import print_json
from snapfs.cli.prune_output import print_prune_report, prune_args, run_prune
from snapfs.cli.registry import AddCommand
from snapfs.errors import EXIT_OK
from snapfs.repo.lock import RepoLock


def register(add: AddCommand) -> None:
    p = add("prune", cmd_prune, "free the space of removed snapshots")
    p.add_argument("--dry-run", action="store_true", help="show what would be freed")
    prune_args(p)


def cmd_prune(args: argparse.Namespace) -> int:
    with open_repo(args) as repo, RepoLock(repo.store, repo.key, exclusive=True):
        report = run_prune(repo, args)
    if args.json:
        print_json(report)
    elif not args.quiet:
        print_prune_report(report)
    return EXIT_OK
