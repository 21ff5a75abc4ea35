"""Retention policies as restic users know them: which snapshots to keep, and why.

Pure: ``apply_policy`` decides from snapshot times and tags only; the CLI deletes the
manifests of what it does not keep. Snapshots are grouped by (host, paths) and each
group is judged on its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from snapfs.errors import UsageError
from snapfs.repo.snapshot import Snapshot


@dataclass(frozen=True, slots=True)
class Policy:
    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: timedelta | None = None
    tags: tuple[str, ...] = ()

    def empty(self) -> bool:
        counts = (self.last, self.hourly, self.daily, self.weekly, self.monthly, self.yearly)
        return not any(counts) and self.within is None and not self.tags


@dataclass(slots=True)
class Decision:
    snapshot: Snapshot
    keep: bool = False
    reasons: list[str] = field(default_factory=list)


_BUCKETS: list[tuple[str, Callable[[datetime], tuple[int, ...]]]] = [
    ("hourly", lambda t: (t.year, t.month, t.day, t.hour)),
    ("daily", lambda t: (t.year, t.month, t.day)),
    ("weekly", lambda t: t.isocalendar()[:2]),
    ("monthly", lambda t: (t.year, t.month)),
    ("yearly", lambda t: (t.year,)),
]

_DURATION = re.compile(r"^(?:(\d+)y)?(?:(\d+)m)?(?:(\d+)d)?(?:(\d+)h)?$")


def parse_duration(text: str) -> timedelta:
    """restic's form: ``1y2m3d4h`` (a month is 30 days, a year 365)."""
    m = _DURATION.match(text)
    if not text or m is None:
        raise UsageError(f"{text!r} is not a duration like 7d, 2m or 1y6m (y, m, d, h)")
    y, mo, d, h = (int(g) if g else 0 for g in m.groups())
    return timedelta(days=365 * y + 30 * mo + d, hours=h)


def group_key(s: Snapshot) -> tuple[str, tuple[str, ...]]:
    return s.host, tuple(sorted(s.paths))


def apply_policy(snaps: list[Snapshot], policy: Policy) -> list[Decision]:
    """Decisions for one group, newest first."""
    if policy.empty():
        raise UsageError(
            "no policy given: use --keep-last, --keep-daily, ... (see snapfs forget -h)"
        )
    ordered = sorted(snaps, key=lambda s: (s.time_ns, s.id), reverse=True)
    decisions = [Decision(s) for s in ordered]
    for i, d in enumerate(decisions):
        if i < policy.last:
            d.reasons.append("last snapshot" if policy.last == 1 else f"last {policy.last}")
        if policy.within is not None and ordered:
            newest = ordered[0].time
            if newest - d.snapshot.time <= policy.within:
                d.reasons.append(f"within {policy.within} of the newest")
        matched = sorted(set(policy.tags) & set(d.snapshot.tags))
        if matched:
            d.reasons.append("tagged " + ",".join(matched))
    for name, bucket in _BUCKETS:
        limit = getattr(policy, name)
        seen: set[tuple[int, ...]] = set()
        for d in decisions:
            if len(seen) >= limit:
                break
            key = bucket(d.snapshot.time)
            if key not in seen:
                seen.add(key)
                d.reasons.append(f"{name} snapshot")
    for d in decisions:
        d.keep = bool(d.reasons)
    return decisions


def plan(
    snaps: list[Snapshot], policy: Policy, host: str | None = None, tag: str | None = None
) -> list[list[Decision]]:
    """Groups of decisions for the snapshots that pass the filters; others are untouched."""
    groups: dict[tuple[str, tuple[str, ...]], list[Snapshot]] = {}
    for s in snaps:
        if host is not None and s.host != host:
            continue
        if tag is not None and tag not in s.tags:
            continue
        groups.setdefault(group_key(s), []).append(s)
    return [apply_policy(group, policy) for _, group in sorted(groups.items())]
