"""Retention policies over synthetic snapshot times, and forget through the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from snapfs.errors import UsageError
from snapfs.maintenance.forget import Policy, apply_policy, parse_duration, plan
from snapfs.repo.snapshot import Snapshot
from tests.conftest import Cli


def snap(
    when: str, host: str = "h", tags: tuple[str, ...] = (), paths: tuple[str, ...] = ("/d",)
) -> Snapshot:
    t = datetime.fromisoformat(when).replace(tzinfo=UTC)
    return Snapshot(
        time_ns=int(t.timestamp()) * 10**9,
        host=host,
        username="u",
        paths=list(paths),
        tree=b"\0" * 32,
        tags=list(tags),
        id=when.encode().ljust(32, b"\0"),
    )


def kept(snaps: list[Snapshot], policy: Policy) -> list[str]:
    return sorted(
        d.snapshot.id.rstrip(b"\0").decode() for d in apply_policy(snaps, policy) if d.keep
    )


DAYS = [
    snap(t)
    for t in (
        "2026-01-01T10:00",
        "2026-01-01T11:00",
        "2026-01-02T09:00",
        "2026-01-03T09:00",
        "2026-01-03T18:00",
    )
]
WEEKS = [
    snap(t)
    for t in ("2026-11-02T12:00", "2026-11-08T12:00", "2026-11-09T12:00", "2026-11-23T12:00")
]
MONTHS = [
    snap(t)
    for t in ("2025-12-31T12:00", "2026-01-01T12:00", "2026-01-31T12:00", "2026-03-01T12:00")
]


@pytest.mark.parametrize(
    ("snaps", "policy", "expected"),
    [
        (DAYS, Policy(last=1), ["2026-01-03T18:00"]),
        (DAYS, Policy(last=2), ["2026-01-03T09:00", "2026-01-03T18:00"]),
        (DAYS, Policy(daily=2), ["2026-01-02T09:00", "2026-01-03T18:00"]),
        (DAYS, Policy(hourly=3), ["2026-01-02T09:00", "2026-01-03T09:00", "2026-01-03T18:00"]),
        (DAYS, Policy(daily=10), ["2026-01-01T11:00", "2026-01-02T09:00", "2026-01-03T18:00"]),
        (WEEKS, Policy(weekly=2), ["2026-11-09T12:00", "2026-11-23T12:00"]),
        (WEEKS, Policy(weekly=3), ["2026-11-08T12:00", "2026-11-09T12:00", "2026-11-23T12:00"]),
        (MONTHS, Policy(monthly=2), ["2026-01-31T12:00", "2026-03-01T12:00"]),
        (MONTHS, Policy(yearly=2), ["2025-12-31T12:00", "2026-03-01T12:00"]),
        (
            DAYS,
            Policy(within=parse_duration("2d")),
            ["2026-01-02T09:00", "2026-01-03T09:00", "2026-01-03T18:00"],
        ),
        (DAYS, Policy(last=1, daily=2), ["2026-01-02T09:00", "2026-01-03T18:00"]),
    ],
)
def test_policy_table(snaps: list[Snapshot], policy: Policy, expected: list[str]) -> None:
    assert kept(snaps, policy) == expected


def test_keep_tag_and_reasons() -> None:
    snaps = [snap("2026-01-01T00:00", tags=("release",)), snap("2026-01-02T00:00")]
    decisions = apply_policy(snaps, Policy(last=1, tags=("release",)))
    why = {d.snapshot.id.rstrip(b"\0").decode(): d.reasons for d in decisions}
    assert why == {"2026-01-02T00:00": ["last snapshot"], "2026-01-01T00:00": ["tagged release"]}


def test_groups_by_host_and_paths_and_filters() -> None:
    snaps = [
        snap("2026-01-01T00:00", host="a"),
        snap("2026-01-02T00:00", host="a"),
        snap("2026-01-01T00:00", host="b"),
        snap("2026-01-02T00:00", host="b", paths=("/other",)),
    ]
    groups = plan(snaps, Policy(last=1))
    assert [sum(d.keep for d in g) for g in groups] == [1, 1, 1]
    only_a = plan(snaps, Policy(last=1), host="a")
    assert len(only_a) == 1
    assert [d.keep for d in only_a[0]] == [True, False]


@pytest.mark.parametrize("text", ["", "7", "1w", "d7", "1d2y"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)


def test_durations() -> None:
    assert parse_duration("1y2m3d4h").total_seconds() == ((365 + 60 + 3) * 24 + 4) * 3600


def test_no_policy_is_refused() -> None:
    with pytest.raises(UsageError, match="no policy"):
        apply_policy(DAYS, Policy())


def test_forget_through_the_cli(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    cli.ok("init")
    for i in range(3):
        (src / f"f{i}").write_text(str(i))
        cli.ok("snapshot", str(src), "-q")
    ids = [s["id"] for s in json.loads(cli.ok("snapshots", "--json").stdout)]
    dry = json.loads(cli.ok("forget", "--keep-last", "1", "--dry-run", "--json").stdout)
    assert dry["groups"][0]["remove"] == [ids[1], ids[0]]
    assert len(json.loads(cli.ok("snapshots", "--json").stdout)) == 3
    cli.ok("forget", "--keep-last", "1")
    left = json.loads(cli.ok("snapshots", "--json").stdout)
    assert [s["id"] for s in left] == [ids[2]]
    res = cli.run("forget")
    assert res.returncode == 1
    assert "no policy given" in res.stderr
