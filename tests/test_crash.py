"""SIGKILL of a real writer process at several moments leaves a consistent repository,
never a listed partial snapshot, and the next run reuses what the killed one stored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, Cli
from tests.repocheck import check_repository
from tests.trees import assert_same_tree

FILES = 24
FILE_SIZE = 8 << 20


@pytest.fixture(scope="module")
def big_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("crash") / "src"
    root.mkdir()
    for i in range(FILES):
        (root / f"f{i:02d}.bin").write_bytes(os.urandom(FILE_SIZE))
    return root


def has_files(sub: str) -> Callable[[Path], bool]:
    """True once a complete object exists under ``sub`` (not a temporary file)."""
    return lambda repo: any(
        p.is_file() and not p.name.startswith(".tmp-") for p in (repo / sub).rglob("*")
    )


def kill_when(cli: Cli, src: Path, ready: Callable[[Path], bool]) -> bool:
    """Start a snapshot, SIGKILL it once ``ready(repo)``; False if it finished first."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "snapfs", "snapshot", str(src)],
        env=cli.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if ready(cli.repo):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.002)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("moment", "ready"),
    [
        ("while starting", lambda repo: True),
        ("after the first pack", has_files("data")),
        ("after the first index file", has_files("index")),
    ],
)
def test_sigkill_leaves_a_consistent_repository(
    cli: Cli, big_src: Path, tmp_path: Path, moment: str, ready: Callable[[Path], bool]
) -> None:
    cli.ok("init", "--pack-size", "1")
    killed = kill_when(cli, big_src, ready)
    assert killed, f"the writer finished before the kill point ({moment})"
    assert check_repository(cli.repo, PASSWORD, tmp_path / "check-cache") == 0
    assert json.loads(cli.ok("snapshots", "--json").stdout) == []

    summary = json.loads(cli.ok("snapshot", str(big_src), "--json").stdout)
    assert check_repository(cli.repo, PASSWORD, tmp_path / "check-cache-2") == 1
    cli.ok("restore", f"latest:{big_src}", "--target", str(tmp_path / "out"))
    assert_same_tree(big_src, tmp_path / "out")
    if moment == "after the first index file":
        assert summary["bytes_added"] < FILES * FILE_SIZE, "nothing of the killed run was reused"


@pytest.mark.slow
def test_writer_memory_does_not_grow_with_file_size(cli: Cli, tmp_path: Path) -> None:
    """A 2 GiB (sparse) file streams through a writer whose peak RSS stays far below it."""
    src = tmp_path / "huge"
    src.mkdir()
    with open(src / "sparse.img", "wb") as f:
        f.truncate(2 << 30)
        f.seek(1 << 30)
        f.write(os.urandom(8 << 20))
    cli.ok("init")
    # VmHWM, not ru_maxrss: the latter keeps the forking parent's peak across exec.
    code = (
        "import sys; from snapfs.cli.main import main; rc = main(sys.argv[1:]); "
        "hwm = [x for x in open('/proc/self/status') if x.startswith('VmHWM')][0]; "
        "print(hwm.split()[1], file=sys.stderr); sys.exit(rc)"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, "snapshot", str(src), "--json"],
        env=cli.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    peak_mib = int(res.stderr.strip().splitlines()[-1]) // 1024
    assert json.loads(res.stdout)["total_bytes"] == 2 << 30
    assert peak_mib < 400, f"writer peaked at {peak_mib} MiB for a 2 GiB file"
