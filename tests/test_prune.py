"""Prune reclaims space, never loses what a snapshot needs, survives SIGKILL, and
respects locks; concurrent writers coexist."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from snapfs.repo.lock import RepoLock
from snapfs.repo.repository import Repository
from snapfs.store.local import LocalStore
from tests.conftest import PASSWORD, Cli
from tests.repocheck import check_repository
from tests.trees import assert_same_tree


def repo_bytes(repo: Path) -> int:
    return sum(p.stat().st_size for p in repo.rglob("*") if p.is_file())


def fill(src: Path, seed: int, files: int = 12, size: int = 300_000) -> None:
    rnd = random.Random(seed)
    src.mkdir(exist_ok=True)
    for i in range(files):
        (src / f"f{i:02d}.bin").write_bytes(rnd.randbytes(size))


def test_prune_reclaims_space_and_keeps_snapshots_whole(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    cli.ok("init", "--pack-size", "1")
    fill(src, 1)
    cli.ok("snapshot", str(src), "-q")
    fill(src, 2)
    cli.ok("snapshot", str(src), "-q")
    before = repo_bytes(cli.repo)
    cli.ok("forget", "--keep-last", "1")
    report = json.loads(cli.ok("prune", "--json").stdout)
    after = repo_bytes(cli.repo)
    assert report["bytes_freed"] > 3_000_000
    assert before - after > 3_000_000
    assert check_repository(cli.repo, PASSWORD, tmp_path / "check") == 1
    cli.ok("restore", f"latest:{src}", "--target", str(tmp_path / "out"))
    assert_same_tree(src, tmp_path / "out")


def test_partly_used_packs_are_repacked(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    cli.ok("init", "--pack-size", "1")
    fill(src, 1, files=20, size=200_000)
    cli.ok("snapshot", str(src), "-q")
    for i in range(0, 20, 2):  # half of every pack becomes garbage
        (src / f"f{i:02d}.bin").unlink()
    cli.ok("snapshot", str(src), "-q")
    cli.ok("forget", "--keep-last", "1")
    report = json.loads(cli.ok("prune", "--json").stdout)
    assert report["packs_repacked"] > 0
    assert report["packs_written"] > 0
    assert check_repository(cli.repo, PASSWORD, tmp_path / "check") == 1
    cli.ok("restore", f"latest:{src}", "--target", str(tmp_path / "out"))
    assert_same_tree(src, tmp_path / "out")
    again = json.loads(cli.ok("prune", "--json").stdout)
    assert again["bytes_freed"] <= 0 or again["packs_deleted"] == 0


def test_dry_run_changes_nothing(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    cli.ok("init", "--pack-size", "1")
    fill(src, 1)
    cli.ok("snapshot", str(src), "-q")
    fill(src, 2)
    cli.ok("snapshot", str(src), "-q")
    cli.ok("forget", "--keep-last", "1")
    before = sorted(p for p in cli.repo.rglob("*") if p.is_file())
    report = json.loads(cli.ok("prune", "--dry-run", "--json").stdout)
    assert report["bytes_freed"] > 0
    assert sorted(p for p in cli.repo.rglob("*") if p.is_file()) == before


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.15, 0.3, 0.6])
def test_sigkill_during_prune_leaves_every_snapshot_restorable(
    cli: Cli, tmp_path: Path, delay: float
) -> None:
    src = tmp_path / "src"
    cli.ok("init", "--pack-size", "1")
    fill(src, 1, files=30, size=200_000)
    cli.ok("snapshot", str(src), "-q")
    for i in range(0, 30, 3):
        (src / f"f{i:02d}.bin").unlink()
    fill(src / "more", 3, files=10)
    cli.ok("snapshot", str(src), "-q")
    cli.ok("forget", "--keep-last", "1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "snapfs", "prune"],
        env=cli.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert check_repository(cli.repo, PASSWORD, tmp_path / "check") == 1
    cli.ok("check", "--read-data")  # what a user runs after a crash
    cli.ok("restore", f"latest:{src}", "--target", str(tmp_path / "out"))
    assert_same_tree(src, tmp_path / "out")
    cli.ok("unlock")  # the killed prune's lock is stale (its PID is gone)
    cli.ok("prune")
    assert check_repository(cli.repo, PASSWORD, tmp_path / "check2") == 1


def test_prune_is_refused_while_a_snapshot_runs(cli: Cli, tmp_path: Path) -> None:
    cli.ok("init")
    repo = Repository.open(LocalStore(cli.repo), PASSWORD, tmp_path / "lock-cache")
    try:
        with RepoLock(repo.store, repo.key, exclusive=False):  # as a running snapshot holds
            res = cli.run("prune")
            assert res.returncode == 11
            assert f"shared lock held by PID {os.getpid()}" in res.stderr
            res = cli.run("forget", "--keep-last", "1", "--prune")
            assert res.returncode == 11
    finally:
        repo.close()
    cli.ok("prune")


def test_two_snapshots_at_once(cli: Cli, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    fill(a, 1, files=20)
    fill(b, 2, files=20)
    cli.ok("init", "--pack-size", "1")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "snapfs", "snapshot", str(src), "-q"],
            env=cli.env,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for src in (a, b)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    snaps = json.loads(cli.ok("snapshots", "--json").stdout)
    assert sorted(s["paths"][0] for s in snaps) == [str(a), str(b)]
    for src in (a, b):
        sid = next(s for s in snaps if s["paths"] == [str(src)])["short_id"]
        cli.ok("restore", f"{sid}:{src}", "--target", str(tmp_path / "out" / src.name))
        assert_same_tree(src, tmp_path / "out" / src.name)
    assert check_repository(cli.repo, PASSWORD, tmp_path / "check") == 2
