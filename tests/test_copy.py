"""``snapfs copy``: snapshots into another repository (other keys, maybe another store),
deduplicated against what is there; run through the CLI as cron runs it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from snapfs.repo.repository import Repository
from snapfs.store import open_store
from snapfs.store.local import LocalStore
from tests.conftest import Cli
from tests.repocheck import check_repository
from tests.test_cli import one_line_error
from tests.trees import assert_same_tree, repo_listing
from tools.seaweed import S3Server

OTHER = "the destination's own password"


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """Small files only (each below the chunker's minimum, so one chunk whatever the
    chunker seed) plus one multi-chunk file, a symlink, a hard link, an empty dir."""
    root = tmp_path / "src"
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    for i in range(12):
        (root / "sub" / f"r{i}.bin").write_bytes(os.urandom(100_000 + i))
    (root / "a.txt").write_text("hello\n" * 1000)
    (root / "sub" / "deep" / "c.log").write_text("log line\n" * 5000)
    os.symlink("sub/r1.bin", root / "link")
    os.link(root / "a.txt", root / "sub" / "a-hardlink")
    os.setxattr(root / "a.txt", "user.note", b"kept")
    return root


@pytest.fixture
def big(tmp_path: Path) -> Path:
    path = tmp_path / "big"
    path.mkdir()
    (path / "big.bin").write_bytes(os.urandom(5 << 20))
    return path


def other_repo(cli: Cli, where: Path | str) -> Cli:
    """A second repository seen by the same user (same cache root), other password."""
    return Cli(Path(str(where)), cli.env | {"SNAPFS_REPO": str(where), "SNAPFS_PASSWORD": OTHER})


def copy(cli: Cli, to: Path | str, *args: str, **env: str) -> dict[str, Any]:
    res = cli.ok("copy", "--to", str(to), "--json", *args, SNAPFS_TO_PASSWORD=OTHER, **env)
    result: dict[str, Any] = json.loads(res.stdout)
    return result


def snapshots(cli: Cli) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = json.loads(cli.ok("snapshots", "--json").stdout)
    return result


def same_snapshot(a: dict[str, Any], b: dict[str, Any]) -> None:
    for field in ("time", "host", "username", "paths", "tags", "summary"):
        assert a[field] == b[field], field


def repo_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_copy_round_trip_local_to_local(cli: Cli, src: Path, big: Path, tmp_path: Path) -> None:
    cli.ok("init")
    cli.ok("snapshot", str(src), "--tag", "first")
    (src / "a.txt").write_text("changed\n")
    (src / "sub" / "new.txt").write_text("new file\n")
    cli.ok("snapshot", str(src), str(big))
    dest = other_repo(cli, tmp_path / "dest")
    dest.ok("init")
    out = copy(cli, dest.repo)
    assert (out["copied"], out["skipped"]) == (2, 0)

    theirs, ours = snapshots(cli), snapshots(dest)
    assert len(ours) == 2
    for a, b in zip(theirs, ours, strict=True):
        same_snapshot(a, b)
        assert a["id"] != b["id"]  # other keys: other ids
        assert a["tree"] != b["tree"]
    assert ours[1]["parent"] is None  # other paths than the first
    dest.ok("restore", f"latest:{src}", "--target", str(tmp_path / "out2"))
    assert_same_tree(src, tmp_path / "out2")
    dest.ok("restore", f"latest:{big}", "--target", str(tmp_path / "big2"))
    assert_same_tree(big, tmp_path / "big2")
    (src / "a.txt").write_text("hello\n" * 1000)
    (src / "sub" / "new.txt").unlink()
    dest.ok("restore", f"{ours[0]['short_id']}:{src}", "--target", str(tmp_path / "out1"))
    assert (tmp_path / "out1" / "a.txt").read_text() == "hello\n" * 1000
    assert not (tmp_path / "out1" / "sub" / "new.txt").exists()

    assert check_repository(dest.repo, OTHER.encode(), tmp_path / "check-cache") == 2
    repo = Repository.open(LocalStore(dest.repo), OTHER.encode(), tmp_path / "check-cache")
    try:
        originals = [s.original.hex() if s.original else None for s in repo.list_snapshots()]
    finally:
        repo.close()
    assert originals == [s["id"] for s in theirs]
    assert not list((tmp_path / "cache").rglob("copy-*")), "the id map is temporary"


def test_copying_twice_adds_nothing_and_copying_back_too(
    cli: Cli, src: Path, tmp_path: Path
) -> None:
    cli.ok("init")
    cli.ok("snapshot", str(src))
    cli.ok("snapshot", str(src), "--tag", "again")
    dest = other_repo(cli, tmp_path / "dest")
    dest.ok("init")
    copy(cli, dest.repo)
    before = repo_listing(dest.repo)
    again = copy(cli, dest.repo)
    assert (again["copied"], again["skipped"], again["bytes_added"]) == (0, 2, 0)
    assert repo_listing(dest.repo) == before
    # Back into the source: each copy stands for a snapshot that is already there.
    source_before = repo_listing(cli.repo)
    back = dest.ok(
        "copy", "--to", str(cli.repo), "--json", SNAPFS_TO_PASSWORD=cli.env["SNAPFS_PASSWORD"]
    )
    assert json.loads(back.stdout)["copied"] == 0
    assert repo_listing(cli.repo) == source_before


def test_copy_deduplicates_against_what_the_destination_has(
    cli: Cli, src: Path, tmp_path: Path
) -> None:
    cli.ok("init")
    cli.ok("snapshot", str(src))
    dest = other_repo(cli, tmp_path / "dest")
    dest.ok("init")
    dest.ok("snapshot", str(src))  # the same files, backed up directly
    size = repo_bytes(dest.repo)
    out = copy(cli, dest.repo)
    (copied,) = out["snapshots"]
    assert copied["data_added"] == 0
    assert copied["blobs_read"] == 14  # every chunk read once, none stored again
    added = repo_bytes(dest.repo) - size
    assert added == pytest.approx(out["bytes_added"], abs=16_000)  # + manifest, index
    assert added < 20_000, "only trees whose metadata differ, an index file, a manifest"
    assert len(snapshots(dest)) == 2
    dest.ok("restore", f"latest:{src}", "--target", str(tmp_path / "out"))
    assert_same_tree(src, tmp_path / "out")


def test_copy_of_selected_snapshots_only(cli: Cli, src: Path, tmp_path: Path) -> None:
    cli.ok("init")
    for tag in ("one", "two", "three"):
        (src / f"{tag}.txt").write_text(tag)
        cli.ok("snapshot", str(src), "--tag", tag)
    one, two, three = snapshots(cli)
    dest = other_repo(cli, tmp_path / "dest")
    dest.ok("init")
    out = copy(cli, dest.repo, one["short_id"], "latest", three["id"])
    assert out["copied"] == 2
    assert [s["tags"] for s in snapshots(dest)] == [["one"], ["three"]]
    assert snapshots(dest)[1]["parent"] == snapshots(dest)[0]["id"]
    out = copy(cli, dest.repo)  # the rest: only the one missing
    assert (out["copied"], out["skipped"]) == (1, 2)
    copied = [s for s in out["snapshots"] if not s["skipped"]]
    assert [c["source"] for c in copied] == [two["id"]]
    assert [s["tags"] for s in snapshots(dest)] == [["one"], ["two"], ["three"]]
    res = cli.run("copy", "--to", str(dest.repo), "deadbeef", SNAPFS_TO_PASSWORD=OTHER)
    assert res.returncode == 1
    assert "no snapshot with id deadbeef" in one_line_error(res)


def test_wrong_destination_password_exits_12_and_writes_nothing(
    cli: Cli, src: Path, tmp_path: Path
) -> None:
    cli.ok("init")
    cli.ok("snapshot", str(src))
    dest = other_repo(cli, tmp_path / "dest")
    dest.ok("init")
    before = repo_listing(dest.repo)
    res = cli.run("copy", "--to", str(dest.repo), SNAPFS_TO_PASSWORD="wrong")
    assert res.returncode == 12
    assert "wrong password for the destination" in one_line_error(res)
    assert repo_listing(dest.repo) == before
    (tmp_path / "pw").write_text(OTHER + "\n")  # a password file, the env var ignored
    cli.ok("copy", "--to", str(dest.repo), "--to-password-file", str(tmp_path / "pw"))
    assert len(snapshots(dest)) == 1


def test_destination_problems_are_one_line_errors(cli: Cli, src: Path, tmp_path: Path) -> None:
    cli.ok("init")
    cli.ok("snapshot", str(src))
    res = cli.run("copy", "--to", str(tmp_path / "nothing"), SNAPFS_TO_PASSWORD=OTHER)
    assert res.returncode == 10
    assert "no snapfs repository" in one_line_error(res)
    dest = other_repo(cli, tmp_path / "dest")
    dest.ok("init")
    res = cli.run("copy", "--to", str(dest.repo))  # no destination password anywhere
    assert res.returncode == 1
    assert "SNAPFS_TO_PASSWORD" in one_line_error(res)
    res = cli.run("copy", "--to", str(cli.repo), SNAPFS_TO_PASSWORD=OTHER)
    assert res.returncode == 1
    assert "is the source repository" in one_line_error(res)


def test_copy_local_to_s3_and_back_to_local(  # noqa: PLR0917 - fixtures
    cli: Cli,
    s3: S3Server,
    s3_url: str,
    src: Path,
    big: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    cli.env |= s3.env()
    cli.ok("init")
    cli.ok("snapshot", str(src), str(big))
    bucket = other_repo(cli, s3_url)
    bucket.ok("init")
    assert copy(cli, s3_url)["copied"] == 1
    bucket.ok("restore", f"latest:{src}", "--target", str(tmp_path / "from-s3"))
    assert_same_tree(src, tmp_path / "from-s3")

    # S3 -> a third, local repository (the bucket's password is OTHER, the third's too).
    third = other_repo(cli, tmp_path / "third")
    third.ok("init")
    assert copy(bucket, third.repo)["copied"] == 1
    third.ok("restore", f"latest:{big}", "--target", str(tmp_path / "from-third"))
    assert_same_tree(big, tmp_path / "from-third")
    # The same chain again adds nothing anywhere.
    store = open_store(s3_url)
    listing = sorted(store.list(""))
    assert copy(cli, s3_url)["copied"] == 0
    assert copy(bucket, third.repo)["copied"] == 0
    assert sorted(store.list("")) == listing
