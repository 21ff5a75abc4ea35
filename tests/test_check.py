"""``snapfs check`` run as users run it: healthy repositories pass, every kind of damage is
named (snapshot, path, pack) and makes the exit code 1."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from snapfs.repo.format import id_from_name, pack_name
from snapfs.repo.repository import Repository
from snapfs.store.local import LocalStore
from snapfs.store.s3 import S3Store
from snapfs.vfs.paths import resolve, root_node, walk
from tests.conftest import PASSWORD, Cli
from tests.test_cli import one_line_error
from tools.seaweed import S3Server


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """Random (so incompressible and unique) files: with 1 MiB packs, several packs."""
    root = tmp_path / "src"
    (root / "sub").mkdir(parents=True)
    (root / "victim.bin").write_bytes(os.urandom(1_500_000))
    for i in range(6):
        (root / f"other{i}.bin").write_bytes(os.urandom(600_000))
    for i in range(5):
        (root / "sub" / f"small{i}.dat").write_bytes(os.urandom(20_000))
    return root


def backed_up(cli: Cli, src: Path) -> str:
    """A repository with 1 MiB packs and one snapshot of ``src``; its short id."""
    cli.ok("init", "--pack-size", "1")
    return str(json.loads(cli.ok("snapshot", str(src), "--json").stdout)["short_id"])


def check_json(cli: Cli, *args: str) -> tuple[int, dict[str, Any]]:
    res = cli.run("check", "--json", *args)
    assert "Traceback" not in res.stderr
    return res.returncode, json.loads(res.stdout)


def locate(cli: Cli, tmp_path: Path, path: Path) -> tuple[Path, int, int]:
    """The pack file holding the first chunk of ``path``, that chunk's offset and length."""
    repo = Repository.open(LocalStore(cli.repo), PASSWORD, tmp_path / "inspect-cache")
    try:
        node = resolve(repo, repo.find_snapshot("latest"), str(path))
        loc = repo.lookup(node.content[0][0])
        assert loc is not None
        return cli.repo / pack_name(loc.pack), loc.offset, loc.length
    finally:
        repo.close()


def files_in_pack(cli: Cli, tmp_path: Path, pack: Path) -> set[str]:
    """Paths in the latest snapshot with a chunk in this pack."""
    repo = Repository.open(LocalStore(cli.repo), PASSWORD, tmp_path / "inspect-cache")
    try:
        found = set()
        for path, node in walk(repo, root_node(repo.find_snapshot("latest")), b"/"):
            locs = [repo.lookup(blob_id) for blob_id, _ in node.content]
            if any(loc is not None and loc.pack.hex() == pack.name for loc in locs):
                found.add(os.fsdecode(path))
        return found
    finally:
        repo.close()


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def packs_in(repo: Path) -> list[Path]:
    return sorted(p for p in (repo / "data").rglob("*") if p.is_file())


def test_a_healthy_repository_checks_clean(cli: Cli, src: Path) -> None:
    backed_up(cli, src)
    res = cli.ok("check")
    assert res.stdout.startswith("no problems found: 1 snapshot ")
    assert res.stderr == ""
    res = cli.ok("check", "--read-data")
    assert "no problems found" in res.stdout
    assert "read " in res.stdout
    code, doc = check_json(cli, "--read-data")
    assert code == 0
    assert doc["ok"] is True
    assert doc["problems"] == []
    assert doc["notes"] == []
    assert doc["snapshots"] == 1
    n_packs = len(packs_in(cli.repo))
    assert n_packs >= 4, "the test needs several packs"
    assert doc["packs"] == doc["packs_read"] == n_packs
    assert doc["blobs_read"] == doc["blobs"] > n_packs
    assert doc["bytes_read"] == sum(p.stat().st_size for p in packs_in(cli.repo))


def test_a_deleted_pack_is_named_with_a_snapshot_and_path_needing_it(
    cli: Cli, src: Path, tmp_path: Path
) -> None:
    snap = backed_up(cli, src)
    pack, _, _ = locate(cli, tmp_path, src / "victim.bin")
    pack.unlink()
    res = cli.run("check")
    assert res.returncode == 1
    lines = res.stdout.splitlines()
    (line,) = [ln for ln in lines if ln.startswith(f"pack {pack.name[:16]}")]
    assert "missing from the repository" in line
    # Whether other blobs share the victim's pack depends on where its random content is cut.
    named = re.search(rf"needed by snapshot {snap} (\S+)( \(and \d+ other references?\))?$", line)
    assert named, line
    assert named[1] in files_in_pack(cli, tmp_path, pack)
    assert lines[-1].startswith("1 problem found")
    code, doc = check_json(cli)
    assert code == 1
    assert doc["ok"] is False
    (problem,) = doc["problems"]
    assert problem["kind"] == "pack-missing"
    assert problem["pack"] == pack.name
    assert problem["snapshot"] == snap
    assert problem["path"] == named[1]


def test_a_truncated_pack_is_found(cli: Cli, src: Path, tmp_path: Path) -> None:
    backed_up(cli, src)
    pack, offset, _ = locate(cli, tmp_path, src / "victim.bin")
    pack.write_bytes(pack.read_bytes()[: offset + 10])
    code, doc = check_json(cli)
    assert code == 1
    (problem,) = doc["problems"]
    assert problem["kind"] == "pack-size"
    assert problem["pack"] == pack.name
    assert "truncated" in problem["message"]
    code, doc = check_json(cli, "--read-data")
    assert code == 1
    blob_problems = [p for p in doc["problems"] if p["kind"] == "blob"]
    assert blob_problems
    assert all(p["pack"] == pack.name for p in blob_problems)
    assert f"{src}/victim.bin" in {p["path"] for p in blob_problems}


def test_a_flipped_byte_in_a_blob_is_found_by_read_data(
    cli: Cli, src: Path, tmp_path: Path
) -> None:
    snap = backed_up(cli, src)
    pack, offset, length = locate(cli, tmp_path, src / "victim.bin")
    flip(pack, offset + length // 2)
    # the header and the size are intact: the structure check cannot see it
    res = cli.ok("check")
    assert "no problems found" in res.stdout
    res = cli.run("check", "--read-data")
    assert res.returncode == 1
    lines = res.stdout.splitlines()
    (blob_line,) = [ln for ln in lines if ln.startswith(f"snapshot {snap} {src}/victim.bin:")]
    assert f"in pack {pack.name[:16]}" in blob_line
    assert "authentication failed" in blob_line
    (hash_line,) = [ln for ln in lines if ln.startswith(f"pack {pack.name[:16]}")]
    assert "does not match its name" in hash_line
    assert lines[-1].startswith("2 problems found")


def test_a_flipped_byte_in_a_pack_header_is_found_by_the_structure_check(
    cli: Cli, src: Path, tmp_path: Path
) -> None:
    backed_up(cli, src)
    pack, _, _ = locate(cli, tmp_path, src / "victim.bin")
    flip(pack, pack.stat().st_size - 20)
    code, doc = check_json(cli)
    assert code == 1
    (problem,) = doc["problems"]
    assert problem["kind"] == "pack-header"
    assert problem["pack"] == pack.name
    assert "authentication failed" in problem["message"]


def test_an_unreadable_tree_names_the_snapshot_and_directory(
    cli: Cli, src: Path, tmp_path: Path
) -> None:
    snap = backed_up(cli, src)
    repo = Repository.open(LocalStore(cli.repo), PASSWORD, tmp_path / "inspect-cache")
    try:
        node = resolve(repo, repo.find_snapshot("latest"), str(src / "sub"))
        assert node.subtree is not None
        loc = repo.lookup(node.subtree)
        assert loc is not None
    finally:
        repo.close()
    flip(cli.repo / pack_name(loc.pack), loc.offset + 5)
    res = cli.run("check")
    assert res.returncode == 1
    (line,) = res.stdout.splitlines()[:-1]
    assert line.startswith(f"snapshot {snap} {src}/sub: directory tree ")
    assert "authentication failed" in line


def test_a_chunk_missing_from_the_index_is_named(cli: Cli, src: Path, tmp_path: Path) -> None:
    """An index rewritten without one data blob: the file needing it is named once."""
    snap = backed_up(cli, src)
    repo = Repository.open(LocalStore(cli.repo), PASSWORD, tmp_path / "inspect-cache")
    try:
        node = resolve(repo, repo.find_snapshot("latest"), str(src / "sub" / "small3.dat"))
        lost = node.content[0][0]
        (old,) = [n for n, _ in repo.store.list("index/")]
        kept: dict[bytes, list[Any]] = {}
        for blob_id, loc in repo.read_index_file(old.rsplit("/", 1)[-1]):
            if blob_id != lost:
                kept.setdefault(loc.pack, []).append((blob_id, loc))
        repo.write_index_file(kept)
        repo.store.delete(old)
    finally:
        repo.close()
    code, doc = check_json(cli)
    assert code == 1
    (problem,) = doc["problems"]
    assert problem["kind"] == "blob-missing"
    assert problem["snapshot"] == snap
    assert problem["path"] == f"{src}/sub/small3.dat"
    assert problem["blob"] == lost.hex()


def test_unindexed_packs_and_stray_files_are_notes_not_problems(cli: Cli, src: Path) -> None:
    backed_up(cli, src)
    garbage = cli.repo / "data" / "ab" / ("ab" + "0" * 62)
    garbage.parent.mkdir(exist_ok=True)
    garbage.write_bytes(b"left by a crashed run")
    (cli.repo / "data" / "ab" / "README").write_text("not a pack")
    res = cli.ok("check", "--read-data")
    notes = [ln for ln in res.stdout.splitlines() if ln.startswith("note: ")]
    assert len(notes) == 2
    assert any("pack ab00000000000000" in n and "in no index file" in n for n in notes)
    assert any("data/ab/README" in n for n in notes)
    assert "no problems found" in res.stdout.splitlines()[-1]
    assert cli.ok("check", "-q", "--read-data").stdout == ""


def test_a_damaged_manifest_or_index_file_is_named_and_the_rest_still_checked(
    cli: Cli, src: Path
) -> None:
    backed_up(cli, src)
    cli.ok("snapshot", str(src))  # a second snapshot, whose manifest stays intact
    manifest = sorted((cli.repo / "snapshots").iterdir())[0]
    flip(manifest, 40)
    index = next((cli.repo / "index").iterdir())
    flip(index, 30)
    code, doc = check_json(cli)  # the local cache already holds the index: it opens
    assert code == 1
    kinds = [p["kind"] for p in doc["problems"]]
    assert kinds == ["snapshot", "index"]
    assert manifest.name[:8] in doc["problems"][0]["message"]
    assert index.name[:16] in doc["problems"][1]["message"]
    assert doc["snapshots"] == 1
    assert doc["trees"] > 0
    assert doc["notes"], "the packs of the damaged index file are named"
    assert all("keep it" in n["message"] for n in doc["notes"])


def test_read_data_subsets_together_read_every_pack_once(cli: Cli, src: Path) -> None:
    backed_up(cli, src)
    packs = [id_from_name(p.name) for p in packs_in(cli.repo)]
    _, full = check_json(cli, "--read-data")
    _, first = check_json(cli, "--read-data-subset", "1/2")
    _, second = check_json(cli, "--read-data-subset", "2/2")
    assert first["read_data"] == "1/2"
    assert first["packs_read"] == sum(1 for p in packs if p[0] % 2 == 0)
    assert second["packs_read"] == sum(1 for p in packs if p[0] % 2 == 1)
    assert first["packs_read"] + second["packs_read"] == full["packs_read"] == len(packs)
    assert first["blobs_read"] + second["blobs_read"] == full["blobs_read"] == full["blobs"]
    assert first["bytes_read"] + second["bytes_read"] == full["bytes_read"]
    res = cli.ok("check", "--read-data-subset", "2/2")
    assert f"read {second['packs_read']} packs (subset 2/2)" in res.stdout


@pytest.mark.parametrize("value", ["0/2", "3/2", "1/0", "2", "a/b", "1/2/3", "-1/2", "1/257"])
def test_malformed_subsets_are_one_usage_error(cli: Cli, value: str) -> None:
    res = cli.run("check", f"--read-data-subset={value}")
    assert res.returncode == 2
    assert "--read-data-subset" in one_line_error(res)
    assert res.stdout == ""


def test_read_data_and_a_subset_together_are_a_usage_error(cli: Cli) -> None:
    res = cli.run("check", "--read-data", "--read-data-subset", "1/2")
    assert res.returncode == 2
    assert "not allowed with" in one_line_error(res)


def test_a_missing_repository_is_exit_10(cli: Cli) -> None:
    res = cli.run("check")
    assert res.returncode == 10
    assert "no snapfs repository" in one_line_error(res)


def test_check_on_s3_reads_the_bucket_not_the_disk_cache(
    s3_cli: Cli, s3: S3Server, s3_url: str, src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snap = backed_up(s3_cli, src)
    code, doc = check_json(s3_cli, "--read-data")
    assert code == 0, doc
    assert doc["packs_read"] == doc["packs"] >= 4
    s3_cli.ok("ls", "latest")  # the disk cache now holds every tree
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    store = S3Store(s3_url)
    packs = sorted(store.list("data/"), key=lambda item: item[1])
    tree_pack, biggest = packs[0][0], packs[-1][0]  # trees are small, chunks big
    damaged = bytearray(store.get(tree_pack))
    damaged[100] ^= 0x01
    store.put(tree_pack, bytes(damaged))
    code, doc = check_json(s3_cli)
    assert code == 1
    assert [p["kind"] for p in doc["problems"]] == ["tree"]
    assert doc["problems"][0]["snapshot"] == snap
    store.delete(biggest)
    res = s3_cli.run("check")
    assert res.returncode == 1, res.stderr
    (line,) = [ln for ln in res.stdout.splitlines() if ln.startswith("pack ")]
    assert line.startswith(f"pack {biggest.rsplit('/', 1)[-1][:16]}: missing")
    assert f"needed by snapshot {snap} {src}/" in line
