"""``snapfs key``: several passwords open one repository; the last key and the key in
use are never removed. Run through the CLI as cron runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from snapfs.errors import UsageError
from snapfs.maintenance.keys import KeyInfo, find_key
from tests.conftest import PASSWORD, Cli
from tests.test_cli import one_line_error

SECOND = "a second, different password"


def keys(cli: Cli, **env: str) -> list[dict[str, object]]:
    result: list[dict[str, object]] = json.loads(cli.ok("key", "list", "--json", **env).stdout)
    return result


def current_id(cli: Cli, **env: str) -> str:
    (mine,) = [k for k in keys(cli, **env) if k["current"]]
    return str(mine["id"])


def key_files(cli: Cli) -> list[str]:
    return sorted(p.name for p in (cli.repo / "keys").iterdir())


@pytest.fixture
def repo(cli: Cli) -> Cli:
    cli.ok("init")
    return cli


def test_added_password_opens_and_the_old_one_still_does(repo: Cli) -> None:
    res = repo.ok("key", "add", SNAPFS_NEW_PASSWORD=SECOND)
    assert res.stdout.startswith("added key ")
    assert len(key_files(repo)) == 2
    repo.ok("snapshots", SNAPFS_PASSWORD=SECOND)
    repo.ok("snapshots")  # the first password
    assert repo.run("snapshots", SNAPFS_PASSWORD="neither of them").returncode == 12


def test_new_password_from_a_file(repo: Cli, tmp_path: Path) -> None:
    (tmp_path / "new-pw").write_text(SECOND + "\n")
    repo.ok("key", "add", "--new-password-file", str(tmp_path / "new-pw"))
    repo.ok("snapshots", SNAPFS_PASSWORD=SECOND)


def test_add_without_a_new_password_fails_cleanly(repo: Cli) -> None:
    res = repo.run("key", "add")  # no TTY, no SNAPFS_NEW_PASSWORD
    assert res.returncode == 1
    assert "SNAPFS_NEW_PASSWORD" in one_line_error(res)
    assert len(key_files(repo)) == 1


def test_list_marks_the_key_the_password_opened(repo: Cli) -> None:
    repo.ok("key", "add", SNAPFS_NEW_PASSWORD=SECOND)
    first, second = current_id(repo), current_id(repo, SNAPFS_PASSWORD=SECOND)
    assert first != second
    assert {str(k["id"]) for k in keys(repo)} == {first, second}
    for k in keys(repo):
        assert str(k["name"]).startswith(str(k["id"]))
        assert all(k[f] for f in ("host", "username", "created"))
    lines = repo.ok("key", "list").stdout.splitlines()
    assert [ln.split()[1] for ln in lines if ln.startswith("* ")] == [first]
    assert any(ln.split()[0] == second for ln in lines if ln.startswith("  "))


def test_the_last_key_cannot_be_removed(repo: Cli) -> None:
    (only,) = key_files(repo)
    res = repo.run("key", "remove", only[:8])
    assert res.returncode == 1
    assert "last key" in one_line_error(res)
    assert key_files(repo) == [only]
    repo.ok("snapshots")


def test_the_key_in_use_cannot_be_removed_but_another_can(repo: Cli) -> None:
    repo.ok("key", "add", SNAPFS_NEW_PASSWORD=SECOND)
    mine = current_id(repo)
    res = repo.run("key", "remove", mine)
    assert res.returncode == 1
    assert "your password opened" in one_line_error(res)
    assert len(key_files(repo)) == 2
    # Removed with the other password, the first one no longer opens.
    assert repo.ok("key", "remove", mine, SNAPFS_PASSWORD=SECOND).stdout == f"removed key {mine}\n"
    assert repo.run("snapshots").returncode == 12
    repo.ok("snapshots", SNAPFS_PASSWORD=SECOND)


def test_passwd_replaces_the_current_key(repo: Cli) -> None:
    before = key_files(repo)
    res = repo.ok("key", "passwd", SNAPFS_NEW_PASSWORD=SECOND)
    assert res.stdout.startswith("password changed: key ")
    after = key_files(repo)
    assert len(after) == 1
    assert after != before
    repo.ok("snapshots", SNAPFS_PASSWORD=SECOND)
    res = repo.run("snapshots")
    assert res.returncode == 12
    assert "wrong password" in one_line_error(res)


def test_passwd_leaves_other_keys_alone(repo: Cli) -> None:
    repo.ok("key", "add", SNAPFS_NEW_PASSWORD=SECOND)
    other = current_id(repo, SNAPFS_PASSWORD=SECOND)
    repo.ok("key", "passwd", SNAPFS_NEW_PASSWORD="third password")
    assert len(key_files(repo)) == 2
    assert current_id(repo, SNAPFS_PASSWORD=SECOND) == other
    repo.ok("snapshots", SNAPFS_PASSWORD="third password")
    assert repo.run("snapshots", SNAPFS_PASSWORD=PASSWORD.decode()).returncode == 12


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("remove", "0000000000"), 1, "no key with id"),
        (("remove", "xyz"), 1, "is not a key id"),
        (("remove",), 2, "required: ID"),
        (("list", "12345678"), 2, "unrecognized arguments"),
        (("rotate",), 2, "invalid choice"),
    ],
)
def test_bad_key_arguments_are_one_line_errors(
    repo: Cli, args: tuple[str, ...], code: int, message: str
) -> None:
    res = repo.run("key", *args)
    assert res.returncode == code
    assert message in one_line_error(res)


def test_common_options_go_before_or_after_the_action(repo: Cli, tmp_path: Path) -> None:
    env = {"SNAPFS_REPO": str(tmp_path / "elsewhere")}
    (mine,) = json.loads(repo.ok("key", "-r", str(repo.repo), "list", "--json", **env).stdout)
    repo.ok("key", "add", "-r", str(repo.repo), SNAPFS_NEW_PASSWORD=SECOND, **env)
    res = repo.run("key", "remove", "-r", str(repo.repo), "--json", str(mine["id"]), **env)
    assert res.returncode == 1  # refused because it is the key in use, not a syntax error
    assert "your password opened" in one_line_error(res)


def test_an_ambiguous_prefix_is_an_error() -> None:
    infos = [KeyInfo(f"keys/ab{c}{'0' * 61}", "", "", "", current=False) for c in "12"]
    with pytest.raises(UsageError, match="ambiguous"):
        find_key(infos, "ab")
    assert find_key(infos, "AB2") is infos[1]
    with pytest.raises(UsageError, match="no key"):
        find_key(infos, "ac")
