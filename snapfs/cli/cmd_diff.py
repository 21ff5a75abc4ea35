"""``snapfs diff``: the paths added, removed and changed between two snapshots."""

from __future__ import annotations

import argparse

from snapfs.cli.commands import open_repo
from snapfs.cli.output import display, human_bytes, print_json
from snapfs.cli.registry import AddCommand
from snapfs.errors import EXIT_OK
from snapfs.maintenance.diff import ADDED, CHANGED, METADATA, REMOVED, Diff

JSON_KEYS = {ADDED: "added", REMOVED: "removed", CHANGED: "changed", METADATA: "metadata"}


def register(add: AddCommand) -> None:
    p = add("diff", cmd_diff, "show what changed between two snapshots")
    p.add_argument("snapshot1", metavar="SNAP1", help="the older snapshot: 'latest' or an id")
    p.add_argument("snapshot2", metavar="SNAP2", help="the newer snapshot: 'latest' or an id")


def cmd_diff(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        diff = Diff(repo, repo.find_snapshot(args.snapshot1), repo.find_snapshot(args.snapshot2))
        if args.json:
            lists: dict[str, list[str]] = {key: [] for key in JSON_KEYS.values()}
            for change in diff.changes():
                lists[JSON_KEYS[change.kind]].append(display(change.path))
        else:
            for change in diff.changes():
                print(f"{change.kind} {display(change.path)}")
    s = diff.summary
    if args.json:
        summary = {
            "old": diff.old.id.hex(),
            "new": diff.new.id.hex(),
            "added": s.added,
            "removed": s.removed,
            "changed": s.changed,
            "metadata": s.metadata,
            "bytes_added": s.bytes_added,
            "bytes_removed": s.bytes_removed,
        }
        print_json({**lists, "summary": summary})
    else:
        print(
            f"{diff.old.short_id} -> {diff.new.short_id}: {s.added} added, {s.removed} removed, "
            f"{s.changed} changed, {s.metadata} metadata only; file data "
            f"+{human_bytes(s.bytes_added)} -{human_bytes(s.bytes_removed)}"
        )
    return EXIT_OK
