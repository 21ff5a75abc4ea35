"""Tampering with stored objects makes commands fail loudly and never yields wrong bytes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from snapfs.repo.format import pack_name
from snapfs.repo.repository import Repository
from snapfs.store.local import LocalStore
from snapfs.vfs.paths import resolve
from tests.conftest import PASSWORD, Cli
from tests.test_cli import one_line_error


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    root.mkdir()
    (root / "victim.bin").write_bytes(os.urandom(2_000_000))
    (root / "bystander.txt").write_text("I am fine\n" * 100)
    return root


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def victim_pack(cli: Cli, src: Path, tmp_path: Path) -> tuple[Path, int]:
    """The pack holding the victim's first chunk, and that chunk's offset in it."""
    repo = Repository.open(LocalStore(cli.repo), PASSWORD, tmp_path / "inspect-cache")
    try:
        snap = repo.find_snapshot("latest")
        node = resolve(repo, snap, str(src / "victim.bin"))
        loc = repo.lookup(node.content[0][0])
        assert loc is not None
        return cli.repo / pack_name(loc.pack), loc.offset
    finally:
        repo.close()


def test_flipped_byte_in_a_data_pack_fails_restore_of_that_file(
    cli: Cli, src: Path, tmp_path: Path
) -> None:
    cli.ok("init")
    cli.ok("snapshot", str(src))
    pack, offset = victim_pack(cli, src, tmp_path)
    flip(pack, offset + 1000)
    out = tmp_path / "out"
    res = cli.run("restore", f"latest:{src}", "--target", str(out))
    assert res.returncode == 1
    assert "victim.bin" in res.stderr
    assert "authentication failed" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (out / "victim.bin").exists(), "a file with wrong bytes was left behind"
    assert (out / "bystander.txt").read_text() == "I am fine\n" * 100


def test_truncated_pack_fails_loudly(cli: Cli, src: Path, tmp_path: Path) -> None:
    cli.ok("init")
    cli.ok("snapshot", str(src))
    pack, offset = victim_pack(cli, src, tmp_path)
    pack.write_bytes(pack.read_bytes()[: offset + 10])
    res = cli.run("restore", f"latest:{src}/victim.bin", "--target", str(tmp_path / "out"))
    assert res.returncode == 1
    assert "victim.bin" in res.stderr
    assert not (tmp_path / "out" / "victim.bin").exists()


def test_tampered_snapshot_manifest_is_refused(cli: Cli, src: Path) -> None:
    cli.ok("init")
    cli.ok("snapshot", str(src))
    (manifest,) = (cli.repo / "snapshots").iterdir()
    flip(manifest, 40)
    res = cli.run("snapshots")
    assert res.returncode == 1
    assert "does not match its name" in one_line_error(res)


def test_tampered_index_file_is_refused(cli: Cli, src: Path, tmp_path: Path) -> None:
    cli.ok("init")
    cli.ok("snapshot", str(src))
    (index,) = (cli.repo / "index").iterdir()
    flip(index, 30)
    fresh = str(tmp_path / "fresh-cache")
    res = cli.run("snapshots", XDG_CACHE_HOME=fresh)
    assert "skipping index file" in res.stderr  # the rest of the repository still opens
    res = cli.run("restore", "latest", "--target", str(tmp_path / "out"), XDG_CACHE_HOME=fresh)
    assert res.returncode == 1
    assert "is not in the repository index" in res.stderr
    res = cli.run("check", XDG_CACHE_HOME=fresh)
    assert res.returncode == 1
    assert "index" in res.stdout


def test_tampered_tree_pack_fails_ls(cli: Cli, src: Path, tmp_path: Path) -> None:
    cli.ok("init")
    cli.ok("snapshot", str(src))
    repo = Repository.open(LocalStore(cli.repo), PASSWORD, tmp_path / "inspect-cache")
    try:
        loc = repo.lookup(repo.find_snapshot("latest").tree)
        assert loc is not None
        tree_pack = cli.repo / pack_name(loc.pack)
    finally:
        repo.close()
    flip(tree_pack, loc.offset + 20)
    res = cli.run("ls", "latest")
    assert res.returncode == 1
    assert "authentication failed" in one_line_error(res)
