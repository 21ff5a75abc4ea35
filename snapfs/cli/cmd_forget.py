"""``snapfs forget``: apply a retention policy; ``--prune`` reclaims the space too."""

from __future__ import annotations

import argparse

from snapfs.cli.commands import open_repo
from snapfs.cli.output import print_json
from snapfs.cli.prune_output import print_prune_report, prune_args, run_prune
from snapfs.cli.registry import AddCommand
from snapfs.errors import EXIT_OK
from snapfs.maintenance.forget import Decision, Policy, parse_duration, plan
from snapfs.repo.format import snapshot_name
from snapfs.repo.lock import RepoLock


def register(add: AddCommand) -> None:
    p = add("forget", cmd_forget, "remove snapshots by a retention policy")
    for name, unit in (("last", "newest"), ("hourly", "hourly"), ("daily", "daily")):
        p.add_argument(f"--keep-{name}", type=int, default=0, metavar="N", help=f"keep N {unit}")
    for name in ("weekly", "monthly", "yearly"):
        p.add_argument(f"--keep-{name}", type=int, default=0, metavar="N", help=f"keep N {name}")
    p.add_argument("--keep-within", metavar="DURATION", help="keep all within e.g. 7d, 1y6m")
    p.add_argument("--keep-tag", action="append", default=[], metavar="TAG")
    p.add_argument("--host", help="only consider snapshots of this host")
    p.add_argument("--tag", help="only consider snapshots with this tag")
    p.add_argument("--dry-run", action="store_true", help="show what would be removed")
    p.add_argument("--prune", action="store_true", help="run prune afterwards")
    prune_args(p)


def _policy(args: argparse.Namespace) -> Policy:
    from snapfs.errors import UsageError

    counts = [args.keep_last, args.keep_hourly, args.keep_daily]
    counts += [args.keep_weekly, args.keep_monthly, args.keep_yearly]
    if any(c < 0 for c in counts):
        raise UsageError("--keep-* counts must not be negative")
    return Policy(
        last=args.keep_last,
        hourly=args.keep_hourly,
        daily=args.keep_daily,
        weekly=args.keep_weekly,
        monthly=args.keep_monthly,
        yearly=args.keep_yearly,
        within=parse_duration(args.keep_within) if args.keep_within else None,
        tags=tuple(args.keep_tag),
    )


def _line(d: Decision) -> str:
    s = d.snapshot
    verdict = "keep  " if d.keep else "remove"
    why = ", ".join(d.reasons)
    return f"  {verdict} {s.short_id}  {s.time.strftime('%Y-%m-%d %H:%M:%S')}  {why}".rstrip()


def cmd_forget(args: argparse.Namespace) -> int:
    policy = _policy(args)
    with open_repo(args) as repo, RepoLock(repo.store, repo.key, exclusive=args.prune):
        groups = plan(repo.list_snapshots(), policy, args.host, args.tag)
        doomed = [d.snapshot for g in groups for d in g if not d.keep]
        if not args.dry_run:
            for snap in doomed:
                repo.store.delete(snapshot_name(snap.id))
        report = run_prune(repo, args) if args.prune else None
    if args.json:
        out: dict[str, object] = {
            "dry_run": args.dry_run,
            "groups": [
                {
                    "host": g[0].snapshot.host,
                    "paths": g[0].snapshot.paths,
                    "keep": [
                        {"id": d.snapshot.id.hex(), "reasons": d.reasons} for d in g if d.keep
                    ],
                    "remove": [d.snapshot.id.hex() for d in g if not d.keep],
                }
                for g in groups
            ],
        }
        if report is not None:
            out["prune"] = report
        print_json(out)
        return EXIT_OK
    if not args.quiet:
        for g in groups:
            first = g[0].snapshot
            print(f"{first.host}: {' '.join(first.paths)}")
            for d in g:
                print(_line(d))
        kept = sum(d.keep for g in groups for d in g)
        verb = "would remove" if args.dry_run else "removed"
        print(f"{verb} {len(doomed)} snapshots, kept {kept}")
        if report is not None:
            print_prune_report(report)
    return EXIT_OK
