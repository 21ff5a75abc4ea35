"""S3 repositories against a real S3 server (SeaweedFS on loopback), run as users run
them: the CLI with the endpoint and credentials in the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from snapfs.repo.repository import Repository
from snapfs.store.counting import CountingStore
from snapfs.store.s3 import S3Store
from tests.conftest import PASSWORD, Cli
from tests.mounts import mounted
from tests.test_cli import one_line_error
from tests.trees import assert_same_tree
from tools.seaweed import READONLY_KEY, READONLY_SECRET, S3Server


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "sub").mkdir(parents=True)
    (root / "big.bin").write_bytes(os.urandom(5 << 20))
    for i in range(40):
        (root / "sub" / f"f{i}.txt").write_text(f"file {i}\n" * (50 * i + 1))
    os.symlink("sub/f1.txt", root / "link")
    return root


def test_snapshot_restore_and_mount_through_s3(s3_cli: Cli, src: Path, tmp_path: Path) -> None:
    s3_cli.ok("init")  # creates the bucket
    s3_cli.ok("snapshot", str(src))
    s3_cli.ok("restore", f"latest:{src}", "--target", str(tmp_path / "out"))
    assert_same_tree(src, tmp_path / "out")
    with mounted(s3_cli.env, tmp_path / "mnt"):
        inside = tmp_path / "mnt" / "latest" / str(src).lstrip("/")
        subprocess.run(["cp", "-a", str(inside), str(tmp_path / "copy")], check=True)
    assert_same_tree(src, tmp_path / "copy")


def test_a_local_repository_copied_into_a_bucket_opens_unchanged(
    cli: Cli, s3: S3Server, src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same bytes in both stores: the format does not depend on where it is stored."""
    cli.ok("init")
    cli.ok("snapshot", str(src))
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    s3_store = S3Store(f"s3://snapfs-copied-{os.getpid()}/r")
    s3_store.ensure_bucket()
    for path in cli.repo.rglob("*"):
        if path.is_file():
            s3_store.put(str(path.relative_to(cli.repo)), path.read_bytes())
    env = cli.env | s3.env() | {"SNAPFS_REPO": s3_store.location}
    env["XDG_CACHE_HOME"] = str(tmp_path / "other-cache")
    Cli(cli.repo, env).ok("restore", f"latest:{src}", "--target", str(tmp_path / "out"))
    assert_same_tree(src, tmp_path / "out")


def test_disaster_day_needs_only_the_bucket_and_the_password(
    s3_cli: Cli, s3: S3Server, src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_cli.ok("init")
    s3_cli.ok("snapshot", str(src))
    fresh = s3_cli.env | {"XDG_CACHE_HOME": str(tmp_path / "new-machine-cache")}
    new_machine = Cli(s3_cli.repo, fresh)
    (snap,) = json.loads(new_machine.ok("snapshots", "--json").stdout)
    assert snap["paths"] == [str(src)]
    new_machine.ok("restore", f"latest:{src}/sub", "--target", str(tmp_path / "sub"))
    assert_same_tree(src / "sub", tmp_path / "sub")
    with mounted(fresh, tmp_path / "mnt"):
        inside = tmp_path / "mnt" / "latest" / str(src).lstrip("/")
        assert (inside / "big.bin").read_bytes() == (src / "big.bin").read_bytes()


def test_rebuilding_the_index_downloads_no_pack(
    s3_cli: Cli, s3: S3Server, src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_cli.ok("init")
    s3_cli.ok("snapshot", str(src))
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    store = CountingStore(S3Store(s3_cli.env["SNAPFS_REPO"]))
    repo = Repository.open(store, PASSWORD, tmp_path / "empty-cache")
    try:
        assert len(repo.list_snapshots()) == 1
    finally:
        repo.close()
    assert store.requests["get"] > 0
    fetched = store.requests["get"]
    # config, one key file, the index files and the manifest: no data/ object at all
    names = [n for n, _ in S3Store(s3_cli.env["SNAPFS_REPO"]).list("")]
    small = [n for n in names if not n.startswith(("data/", "locks/"))]
    assert fetched <= len(small)


def test_missing_bucket_is_one_line_and_exit_10(s3: S3Server, tmp_path: Path) -> None:
    cli = _cli(s3, "s3://snapfs-no-such-bucket/r", tmp_path)
    res = cli.run("snapshots")
    assert res.returncode == 10
    assert "bucket snapfs-no-such-bucket does not exist" in one_line_error(res)


def test_bad_credentials_are_one_line(s3_cli: Cli) -> None:
    s3_cli.ok("init")
    res = s3_cli.run("snapshots", AWS_SECRET_ACCESS_KEY="wrong")
    assert res.returncode == 1
    assert "rejected the credentials" in one_line_error(res)


def test_access_denied_is_one_line(s3_cli: Cli, src: Path) -> None:
    s3_cli.ok("init")
    res = s3_cli.run(
        "snapshot", str(src), AWS_ACCESS_KEY_ID=READONLY_KEY, AWS_SECRET_ACCESS_KEY=READONLY_SECRET
    )
    assert res.returncode == 1
    assert "access denied" in one_line_error(res)


def test_unreachable_endpoint_fails_in_bounded_time(s3: S3Server, tmp_path: Path) -> None:
    cli = _cli(s3, "s3://snapfs-unreachable/r", tmp_path)
    start = time.monotonic()
    res = cli.run("snapshots", AWS_ENDPOINT_URL="http://127.0.0.1:9", SNAPFS_S3_RETRIES="2")
    assert res.returncode == 1
    assert "cannot reach S3 at http://127.0.0.1:9" in one_line_error(res)
    assert time.monotonic() - start < 60


def test_s3_endpoint_option_overrides_the_environment(
    s3: S3Server, src: Path, tmp_path: Path
) -> None:
    cli = _cli(s3, f"s3://snapfs-endpoint-opt-{os.getpid()}/r", tmp_path)
    cli.env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"
    cli.ok("init", "--s3-endpoint", s3.endpoint)
    cli.ok("snapshot", str(src), "--s3-endpoint", s3.endpoint)


def _cli(s3: S3Server, url: str, tmp_path: Path) -> Cli:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SNAPFS_", "AWS_"))}
    env |= s3.env() | {"SNAPFS_REPO": url, "SNAPFS_PASSWORD": PASSWORD.decode()}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    return Cli(tmp_path / "unused", env)


@pytest.mark.slow
def test_server_stopped_mid_snapshot_then_back(s3_cli: Cli, s3: S3Server, tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.mkdir()
    for i in range(12):
        (big / f"{i}.bin").write_bytes(os.urandom(8 << 20))
    s3_cli.ok("init", "--pack-size", "1")
    env = s3_cli.env | {"SNAPFS_S3_RETRIES": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "snapfs", "snapshot", str(big)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_objects(s3, s3_cli.env["SNAPFS_REPO"], "index/")
        s3.stop(graceful=False)
        start = time.monotonic()
        _, err = proc.communicate(timeout=120)
        elapsed = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        s3.start()
    assert proc.returncode == 1, err
    assert "cannot reach S3" in err
    assert "Traceback" not in err
    assert elapsed < 90
    assert json.loads(s3_cli.ok("snapshots", "--json").stdout) == []
    summary = json.loads(s3_cli.ok("snapshot", str(big), "--json").stdout)
    assert summary["bytes_added"] < 12 * (8 << 20), "nothing uploaded before the stop was reused"
    s3_cli.ok("restore", f"latest:{big}", "--target", str(tmp_path / "out"))
    assert_same_tree(big, tmp_path / "out")


def _wait_for_objects(s3: S3Server, url: str, prefix: str) -> None:
    client = boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        aws_access_key_id=s3.env()["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=s3.env()["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    bucket, _, repo_prefix = url.removeprefix("s3://").partition("/")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            res = client.list_objects_v2(Bucket=bucket, Prefix=f"{repo_prefix}/{prefix}")
        except Exception:
            res = {}
        if res.get("KeyCount", 0) > 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {prefix} object appeared")


@pytest.mark.slow
def test_server_stopped_while_mounted_gives_eio_then_recovers(
    s3_cli: Cli, s3: S3Server, src: Path, tmp_path: Path
) -> None:
    s3_cli.ok("init")
    s3_cli.ok("snapshot", str(src))
    env = s3_cli.env | {"SNAPFS_S3_RETRIES": "2"}
    with mounted(env, tmp_path / "mnt", "--disk-cache", "0"):
        inside = tmp_path / "mnt" / "latest" / str(src).lstrip("/")
        os.listdir(inside / "sub")
        s3.stop(graceful=False)
        try:
            start = time.monotonic()
            with pytest.raises(OSError, match="Input/output error"):
                (inside / "big.bin").read_bytes()
            assert time.monotonic() - start < 90
        finally:
            s3.start()
        assert (inside / "big.bin").read_bytes() == (src / "big.bin").read_bytes()


def _gets(stderr: str) -> int:
    line = next(x for x in stderr.splitlines() if "store requests:" in x)
    return int(line.split("get ")[1].split()[0]) if "get " in line else 0


def test_the_disk_cache_keeps_rereads_off_s3(s3_cli: Cli, src: Path, tmp_path: Path) -> None:
    s3_cli.ok("init")
    s3_cli.ok("snapshot", str(src))
    first = s3_cli.ok("restore", "latest", "--target", str(tmp_path / "a"), SNAPFS_STATS="1")
    again = s3_cli.ok("restore", "latest", "--target", str(tmp_path / "b"), SNAPFS_STATS="1")
    off = s3_cli.ok(
        "restore", "latest", "--target", str(tmp_path / "c"), "--disk-cache", "0", SNAPFS_STATS="1"
    )
    data_gets = _gets(first.stderr) - _gets(again.stderr)
    assert data_gets >= 2, "the first restore fetched no data?"
    # the first run also fetched the index files, which the later ones had cached
    assert _gets(off.stderr) - _gets(again.stderr) >= data_gets - 2
    assert_same_tree(tmp_path / "a", tmp_path / "b")
