"""The CLI as cron runs it: no TTY, stdin closed, password from the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from snapfs.repo.lock import RepoLock
from snapfs.repo.repository import Repository
from snapfs.store.local import LocalStore
from tests.conftest import PASSWORD, Cli
from tests.trees import assert_same_tree, repo_listing


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "a.txt").write_text("hello\n" * 1000)
    (root / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    (root / "sub" / "deep" / "c.log").write_text("log line\n" * 5000)
    (root / "skip.tmp").write_text("excluded")
    (root / "empty").touch()
    os.symlink("sub/b.bin", root / "link")
    os.link(root / "a.txt", root / "sub" / "a-hardlink")
    return root


def one_line_error(res: subprocess.CompletedProcess[str]) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got: {res.stderr!r}"
    assert "Traceback" not in res.stderr
    assert lines[0].startswith("snapfs: ")
    return lines[0]


def test_snapshot_restore_round_trip(cli: Cli, src: Path, tmp_path: Path) -> None:
    cli.ok("init")
    res = cli.ok("snapshot", str(src), "--json", "--tag", "nightly", "--exclude", "*.tmp")
    summary = json.loads(res.stdout)
    assert summary["files_new"] == 5
    assert summary["errors"] == 0
    cli.ok("restore", f"{summary['short_id']}:{src}", "--target", str(tmp_path / "out"))
    (src / "skip.tmp").unlink()
    assert_same_tree(src, tmp_path / "out")


def test_unchanged_second_snapshot_reads_nothing(cli: Cli, src: Path) -> None:
    cli.ok("init")
    cli.ok("snapshot", str(src))
    second = json.loads(cli.ok("snapshot", str(src), "--json").stdout)
    assert second["bytes_read"] == 0
    assert second["files_unchanged"] == second["total_files"] == 6
    snaps = json.loads(cli.ok("snapshots", "--json").stdout)
    assert len(snaps) == 2
    assert snaps[1]["parent"] == snaps[0]["id"]


def test_changed_file_is_read_again(cli: Cli, src: Path) -> None:
    cli.ok("init")
    cli.ok("snapshot", str(src))
    (src / "sub" / "deep" / "c.log").write_text("changed\n")
    res = json.loads(cli.ok("snapshot", str(src), "--json").stdout)
    assert res["files_changed"] == 1
    assert res["bytes_read"] == len("changed\n")


def test_snapshots_json_records_tags_host_and_paths(cli: Cli, src: Path) -> None:
    cli.ok("init")
    cli.ok("snapshot", str(src), "--tag", "b", "--tag", "a", "--host", "web1", "-q")
    (snap,) = json.loads(cli.ok("snapshots", "--json").stdout)
    assert snap["tags"] == ["a", "b"]
    assert snap["host"] == "web1"
    assert snap["paths"] == [str(src)]


def test_exclude_file_and_patterns(cli: Cli, src: Path, tmp_path: Path) -> None:
    excludes = tmp_path / "excludes"
    excludes.write_text("# comment\n*.tmp\n" + str(src / "sub" / "deep") + "\n")
    cli.ok("init")
    cli.ok("snapshot", str(src), "--exclude-file", str(excludes))
    listing = cli.ok("ls", "latest", "--json").stdout.splitlines()
    paths = {json.loads(line)["path"] for line in listing}
    assert str(src / "a.txt") in paths
    assert str(src / "skip.tmp") not in paths
    assert str(src / "sub" / "deep") not in paths


def test_ls_shows_a_subtree_with_metadata(cli: Cli, src: Path) -> None:
    cli.ok("init")
    cli.ok("snapshot", str(src))
    lines = [json.loads(x) for x in cli.ok("ls", f"latest:{src}/sub", "--json").stdout.splitlines()]
    by_path = {x["path"]: x for x in lines}
    assert by_path[str(src / "sub")]["type"] == "dir"
    assert by_path[str(src / "sub" / "b.bin")]["size"] == 300_000
    human = cli.ok("ls", f"latest:{src}").stdout
    assert f"{src}/link -> sub/b.bin" in human


def test_restore_single_file_into_target(cli: Cli, src: Path, tmp_path: Path) -> None:
    cli.ok("init")
    cli.ok("snapshot", str(src))
    cli.ok("restore", f"latest:{src}/sub/b.bin", "--target", str(tmp_path / "one"))
    assert (tmp_path / "one" / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()


def test_init_twice_is_refused_and_changes_nothing(cli: Cli) -> None:
    cli.ok("init")
    before = repo_listing(cli.repo)
    res = cli.run("init")
    assert res.returncode == 1
    assert "already exists" in one_line_error(res)
    assert repo_listing(cli.repo) == before


def test_missing_repository_exits_10(cli: Cli) -> None:
    res = cli.run("snapshots")
    assert res.returncode == 10
    assert "no snapfs repository" in one_line_error(res)


def test_wrong_password_exits_12(cli: Cli) -> None:
    cli.ok("init")
    res = cli.run("snapshots", SNAPFS_PASSWORD="not it")
    assert res.returncode == 12
    assert "wrong password" in one_line_error(res)


def test_no_password_without_tty_is_an_error(cli: Cli) -> None:
    cli.ok("init")
    env = {k: v for k, v in cli.env.items() if k != "SNAPFS_PASSWORD"}
    res = Cli(cli.repo, env).run("snapshots")
    assert res.returncode == 1
    assert "no password" in one_line_error(res)


def test_password_file(cli: Cli, tmp_path: Path) -> None:
    cli.ok("init")
    pw = tmp_path / "pw"
    pw.write_text(cli.env["SNAPFS_PASSWORD"] + "\n")
    env = {k: v for k, v in cli.env.items() if k != "SNAPFS_PASSWORD"}
    Cli(cli.repo, env).ok("snapshots", "--password-file", str(pw))
    Cli(cli.repo, env).ok("snapshots", SNAPFS_PASSWORD_FILE=str(pw))


def test_unknown_snapshot(cli: Cli) -> None:
    cli.ok("init")
    res = cli.run("ls", "deadbeef")
    assert res.returncode == 1
    assert "no snapshot with id deadbeef" in one_line_error(res)
    res = cli.run("restore", "latest", "--target", "/tmp/x")
    assert "no snapshots yet" in one_line_error(res)


def test_missing_source_path_leaves_repository_unchanged(cli: Cli, tmp_path: Path) -> None:
    cli.ok("init")
    before = repo_listing(cli.repo)
    res = cli.run("snapshot", str(tmp_path / "nope"))
    assert res.returncode == 1
    assert "does not exist" in one_line_error(res)
    assert repo_listing(cli.repo) == before


def test_bad_option_values(cli: Cli) -> None:
    res = cli.run("init", "--compression", "99")
    assert res.returncode == 1
    assert "--compression" in one_line_error(res)
    assert not cli.repo.exists()


NO_DAC = "-dac_override,-dac_read_search"


def without_dac_override(cmd: list[str]) -> list[str]:
    """Root reads any file; drop that power so a mode-000 file is really unreadable."""
    if os.geteuid() != 0:
        return cmd
    return ["setpriv", f"--bounding-set={NO_DAC}", f"--inh-caps={NO_DAC}", *cmd]


def test_unreadable_file_warns_and_exits_3(cli: Cli, src: Path) -> None:
    secret = src / "sub" / "secret"
    secret.write_text("no")
    secret.chmod(0)
    cli.ok("init")
    res = subprocess.run(
        without_dac_override([sys.executable, "-m", "snapfs", "snapshot", str(src), "--json"]),
        env=cli.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 3, res.stderr
    assert f"{secret}: Permission denied" in res.stderr
    assert "Traceback" not in res.stderr
    assert json.loads(res.stdout)["errors"] == 1
    listing = cli.ok("ls", "latest").stdout
    assert "b.bin" in listing
    assert "secret" not in listing


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_one_file_system_stops_at_mount_points(cli: Cli, src: Path) -> None:
    mnt = src / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mnt)], check=True)
    try:
        (mnt / "other-fs.txt").write_text("on tmpfs")
        cli.ok("init")
        cli.ok("snapshot", str(src), "--one-file-system")
        listing = cli.ok("ls", "latest").stdout
        assert f"{mnt}\n" in listing
        assert "other-fs.txt" not in listing
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_exclusive_lock_blocks_snapshot_with_exit_11(cli: Cli, src: Path, tmp_path: Path) -> None:
    cli.ok("init")
    repo = Repository.open(LocalStore(cli.repo), PASSWORD, tmp_path / "lock-cache")
    try:
        with RepoLock(repo.store, repo.key, exclusive=True):
            res = cli.run("snapshot", str(src))
            assert res.returncode == 11
            assert f"exclusive lock held by PID {os.getpid()}" in one_line_error(res)
    finally:
        repo.close()
    assert json.loads(cli.ok("snapshots", "--json").stdout) == []
    cli.ok("snapshot", str(src))


def test_stale_lock_of_a_dead_process_is_ignored(cli: Cli, src: Path, tmp_path: Path) -> None:
    cli.ok("init")
    repo = Repository.open(LocalStore(cli.repo), PASSWORD, tmp_path / "lock-cache")
    try:
        lock = RepoLock(repo.store, repo.key, exclusive=True)
        proc = subprocess.Popen(["true"])
        proc.wait()
        lock.pid = proc.pid  # a PID that has exited: the lock is stale
        lock.write()
    finally:
        repo.close()
    cli.ok("snapshot", str(src))


def test_sigterm_releases_the_lock(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "big"
    src.mkdir()
    for i in range(8):
        (src / f"{i}.bin").write_bytes(os.urandom(8 << 20))
    cli.ok("init", "--pack-size", "1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "snapfs", "snapshot", str(src)],
        env=cli.env,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while not any((cli.repo / "data").rglob("*")) and proc.poll() is None:
            time.sleep(0.005)
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode == 0:
        pytest.skip("the snapshot finished before SIGTERM arrived")
    assert proc.returncode == 143, err
    assert "terminated" in err
    assert not any((cli.repo / "locks").iterdir())


def test_source_behind_a_symlinked_directory(cli: Cli, src: Path, tmp_path: Path) -> None:
    os.symlink(src, tmp_path / "via-link")
    cli.ok("init")
    cli.ok("snapshot", str(tmp_path / "via-link" / "sub"))
    (snap,) = json.loads(cli.ok("snapshots", "--json").stdout)
    assert snap["paths"] == [str(src / "sub")]
    cli.ok("restore", f"latest:{src}/sub", "--target", str(tmp_path / "out"))
    assert (tmp_path / "out" / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()


def test_a_built_in_command_leaves_the_other_commands_unimported() -> None:
    """A mount's start-up pays for no maintenance or writer code; help still lists all."""
    probe = (
        "import sys\n"
        "from snapfs.cli.main import build_parser\n"
        "build_parser('mount')\n"
        "print(sorted(m for m in sys.modules if m.startswith(("
        "'snapfs.maintenance', 'snapfs.writer', 'snapfs.cli.cmd_', 'trio', 'pyfuse3'))))\n"
    )
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"
    from snapfs.cli.main import build_parser

    for command in (None, "check", "--help"):
        assert "unlock" in build_parser(command).format_help()
