"""``snapfs diff``: through the CLI as cron runs it, and the tree comparison in process."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from snapfs.cli.output import human_bytes
from snapfs.maintenance.diff import ADDED, CHANGED, METADATA, REMOVED, Change, Diff
from snapfs.repo.repository import Repository
from snapfs.repo.snapshot import Snapshot
from snapfs.repo.tree import Node
from snapfs.writer.backup import Backup, BackupOptions
from tests.conftest import Cli
from tests.test_cli import one_line_error


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "gone" / "x").mkdir(parents=True)
    (root / "keep" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_text("hello\n" * 1000)
    (root / "old.txt").write_text("old\n" * 10)
    (root / "gone" / "x" / "y").write_text("y" * 123)
    (root / "gone" / "z").write_text("z" * 45)
    (root / "keep" / "deeper" / "k.bin").write_bytes(os.urandom(5000))
    (root / "mode.txt").write_text("mode\n")
    (root / "time.txt").write_text("time\n")
    (root / "tf").write_text("file then dir\n")
    (root / "target1").write_text("1")
    (root / "target2").write_text("2")
    os.symlink("target1", root / "link")
    return root


def snap(cli: Cli, src: Path) -> str:
    return str(json.loads(cli.ok("snapshot", str(src), "--json").stdout)["short_id"])


def outside(src: Path, kind: str, path: str) -> bool:
    """A metadata change of a directory above ``src``: the ancestors (/tmp, pytest's
    directories) are shared with other processes, whose files change their mtimes."""
    if path in {str(p) for p in src.parents}:
        assert kind == METADATA, f"{kind} {path}"
        return True
    return False


def own_lines(src: Path, lines: list[str]) -> tuple[list[str], int]:
    """Human diff lines about ``src`` and below, and how many were left out."""
    kept = [ln for ln in lines if not outside(src, *ln.split(" ", 1))]
    return kept, len(lines) - len(kept)


def change_everything(src: Path) -> tuple[int, int]:
    """Apply one change of each kind; return (bytes added, bytes removed) of file data."""
    removed = len("hello\n" * 1000) + len("old\n" * 10) + 123 + 45 + len("file then dir\n")
    (src / "new.txt").write_text("new file\n")
    (src / "old.txt").unlink()
    for p in (src / "gone" / "x" / "y", src / "gone" / "z"):
        p.unlink()
    (src / "gone" / "x").rmdir()
    (src / "gone").rmdir()
    (src / "a.txt").write_text("changed\n")
    os.chmod(src / "mode.txt", 0o600)
    st = os.stat(src / "time.txt")
    os.utime(src / "time.txt", ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))
    (src / "link").unlink()
    os.symlink("target2", src / "link")
    (src / "tf").unlink()
    (src / "tf").mkdir()
    (src / "tf" / "in").write_text("inside\n")
    added = len("new file\n") + len("changed\n") + len("inside\n")
    return added, removed


def test_diff_reports_every_kind_of_change_in_tree_order(cli: Cli, src: Path) -> None:
    cli.ok("init")
    first = snap(cli, src)
    added, removed = change_everything(src)
    second = snap(cli, src)
    out = cli.ok("diff", first, second).stdout.splitlines()
    lines, others = own_lines(src, out[:-1])
    s = str(src)
    assert lines == [
        f"U {s}",
        f"M {s}/a.txt",
        f"- {s}/gone",
        f"- {s}/gone/x",
        f"- {s}/gone/x/y",
        f"- {s}/gone/z",
        f"M {s}/link",
        f"U {s}/mode.txt",
        f"+ {s}/new.txt",
        f"- {s}/old.txt",
        f"M {s}/tf",
        f"+ {s}/tf/in",
        f"U {s}/time.txt",
    ]
    assert out[-1] == (
        f"{first} -> {second}: 2 added, 5 removed, 3 changed, {3 + others} metadata only; "
        f"file data +{human_bytes(added)} -{human_bytes(removed)}"
    )


def test_diff_json_lists_paths_by_kind_with_a_summary(cli: Cli, src: Path) -> None:
    cli.ok("init")
    first = snap(cli, src)
    added, removed = change_everything(src)
    fd = os.open(os.fsencode(src) + b"/bad\xffname", os.O_WRONLY | os.O_CREAT, 0o644)
    os.close(fd)
    second = snap(cli, src)
    doc = json.loads(cli.ok("diff", first, "latest", "--json").stdout)
    others = [p for p in doc["metadata"] if outside(src, METADATA, p)]
    doc["metadata"] = doc["metadata"][len(others) :]
    s = str(src)
    assert doc == {
        "added": [f"{s}/bad\\xffname", f"{s}/new.txt", f"{s}/tf/in"],
        "removed": [f"{s}/gone", f"{s}/gone/x", f"{s}/gone/x/y", f"{s}/gone/z", f"{s}/old.txt"],
        "changed": [f"{s}/a.txt", f"{s}/link", f"{s}/tf"],
        "metadata": [s, f"{s}/mode.txt", f"{s}/time.txt"],
        "summary": {
            "old": doc["summary"]["old"],
            "new": doc["summary"]["new"],
            "added": 3,
            "removed": 5,
            "changed": 3,
            "metadata": 3 + len(others),
            "bytes_added": added,
            "bytes_removed": removed,
        },
    }
    assert doc["summary"]["old"].startswith(first)
    assert doc["summary"]["new"].startswith(second)
    # the other way round, everything is mirrored
    back = json.loads(cli.ok("diff", second, first, "--json").stdout)
    assert back["added"] == doc["removed"]
    assert back["removed"] == doc["added"]
    assert back["summary"]["bytes_added"] == removed


def test_two_snapshots_of_an_unchanged_tree_have_no_differences(cli: Cli, src: Path) -> None:
    cli.ok("init")
    first = snap(cli, src)
    second = snap(cli, src)
    assert first != second
    out = cli.ok("diff", first, second).stdout.splitlines()
    lines, others = own_lines(src, out[:-1])
    assert lines == []
    assert out[-1] == (
        f"{first} -> {second}: 0 added, 0 removed, 0 changed, {others} metadata only; "
        "file data +0 B -0 B"
    )
    doc = json.loads(cli.ok("diff", first, second, "--json").stdout)
    assert [doc[k] for k in ("added", "removed", "changed")] == [[], [], []]
    assert not [p for p in doc["metadata"] if not outside(src, METADATA, p)]


def test_unknown_snapshot_is_one_line_exit_1(cli: Cli, src: Path) -> None:
    cli.ok("init")
    snap(cli, src)
    res = cli.run("diff", "latest", "0123abcd")
    assert res.returncode == 1
    assert "no snapshot with id 0123abcd" in one_line_error(res)
    assert res.stdout == ""
    res = cli.run("diff", "latest", "nope")
    assert res.returncode == 1
    assert "'nope' is not 'latest' or a snapshot id" in one_line_error(res)


# -- in process ----------------------------------------------------------------------------


def backup(repo: Repository, src: Path) -> Snapshot:
    job = Backup(repo, [str(src)], BackupOptions())
    result = job.run()
    assert job.warnings == []
    return result


def diff(repo: Repository, old: Snapshot, new: Snapshot, src: Path) -> list[tuple[str, str]]:
    """The changes at and below ``src``."""
    found = [(c.kind, os.fsdecode(c.path)) for c in Diff(repo, old, new).changes()]
    return [(k, p) for k, p in found if not outside(src, k, p)]


def test_directory_replaced_by_a_file_removes_its_contents(
    local_repo: Repository, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    (src / "d" / "e").mkdir(parents=True)
    (src / "d" / "e" / "f").write_text("f")
    (src / "d" / "g").write_text("g")
    first = backup(local_repo, src)
    (src / "d" / "e" / "f").unlink()
    (src / "d" / "e").rmdir()
    (src / "d" / "g").unlink()
    (src / "d").rmdir()
    (src / "d").write_text("now a file")
    second = backup(local_repo, src)
    s = str(src)
    assert diff(local_repo, first, second, src) == [
        (METADATA, s),
        (CHANGED, f"{s}/d"),
        (REMOVED, f"{s}/d/e"),
        (REMOVED, f"{s}/d/e/f"),
        (REMOVED, f"{s}/d/g"),
    ]


def test_only_trees_whose_ids_differ_are_read(
    local_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    for i in range(30):
        (src / f"d{i:02}" / "deep").mkdir(parents=True)
        (src / f"d{i:02}" / "deep" / "f").write_text(f"file {i}\n")
    first = backup(local_repo, src)
    (src / "d07" / "deep" / "f").write_text("changed in place, directories untouched\n")
    second = backup(local_repo, src)
    reads: list[bytes] = []
    real = local_repo.read_tree

    def counting(tree_id: bytes) -> list[Node]:
        reads.append(tree_id)
        return real(tree_id)

    monkeypatch.setattr(local_repo, "read_tree", counting)
    changes = diff(local_repo, first, second, src)
    assert changes == [(CHANGED, f"{src}/d07/deep/f")]
    # two trees for each directory from / down to d07/deep, none of the 29 other dirs
    levels = len(Path(src, "d07", "deep").parts)
    assert len(reads) == 2 * levels
    assert len(set(reads)) == 2 * levels


def test_appending_counts_only_the_new_chunks(local_repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    big = src / "big.bin"
    big.write_bytes(os.urandom(6 << 20))
    first = backup(local_repo, src)
    with open(big, "ab") as f:
        f.write(os.urandom(100_000))
    second = backup(local_repo, src)
    (change,) = [
        c for c in Diff(local_repo, first, second).changes() if c.path.startswith(bytes(src))
    ]
    assert (change.kind, change.path) == (CHANGED, os.fsencode(big))
    assert change.bytes_added - change.bytes_removed == 100_000
    assert change.bytes_added < 6 << 20  # the unchanged leading chunks are not counted


def test_xattr_change_is_metadata_only(local_repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    f = src / "f"
    f.write_text("same bytes")
    try:
        os.setxattr(f, "user.snapfs", b"1")
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EPERM):
            pytest.skip("user xattrs are not supported here")
        raise
    first = backup(local_repo, src)
    os.setxattr(f, "user.snapfs", b"2")
    second = backup(local_repo, src)
    assert diff(local_repo, first, second, src) == [(METADATA, str(f))]


def test_added_directory_reports_itself_and_everything_below(
    local_repo: Repository, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    first = backup(local_repo, src)
    (src / "n" / "m").mkdir(parents=True)
    (src / "n" / "m" / "leaf").write_text("leaf!")
    (src / "n" / "zz").write_text("zz")
    second = backup(local_repo, src)
    d = Diff(local_repo, first, second)
    changes: list[Change] = list(d.changes())
    mine = [(c.kind, os.fsdecode(c.path)) for c in changes]
    mine = [(k, p) for k, p in mine if not outside(src, k, p)]
    s = str(src)
    assert mine == [
        (METADATA, s),
        (ADDED, f"{s}/n"),
        (ADDED, f"{s}/n/m"),
        (ADDED, f"{s}/n/m/leaf"),
        (ADDED, f"{s}/n/zz"),
    ]
    others = len(changes) - len(mine)
    assert (d.summary.added, d.summary.metadata, d.summary.bytes_added) == (4, 1 + others, 7)
