"""``snapfs stats``: sizes, ratios and cost, checked against the repository on disk."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import boto3
import pytest

from snapfs.maintenance.stats import repository_stats
from snapfs.repo.format import BLOB_DATA
from snapfs.repo.repository import Repository
from snapfs.repo.snapshot import Snapshot
from snapfs.repo.walk import referenced
from snapfs.writer.backup import Backup, BackupOptions
from tests.conftest import Cli
from tests.test_cli import one_line_error
from tools.seaweed import S3Server


def random_tree(root: Path) -> int:
    """Incompressible files, no chunk twice; returns their total size."""
    (root / "sub").mkdir(parents=True)
    sizes = {"a.bin": 300_000, "b.bin": 5 << 20, "sub/c.bin": 70_000, "sub/empty": 0}
    for name, size in sizes.items():
        (root / name).write_bytes(os.urandom(size))
    return sum(sizes.values())


def text_tree(root: Path) -> int:
    root.mkdir(parents=True)
    total = 0
    for i in range(5):
        data = "".join(f"line {j} of file {i}: the quick brown fox\n" for j in range(20_000))
        (root / f"t{i}.txt").write_text(data)
        total += len(data)
    return total


def stats(cli: Cli, *args: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(cli.ok("stats", "--json", *args).stdout)
    return doc


def on_disk(repo: Path) -> int:
    files = [p for p in repo.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.startswith(".tmp-") or "locks" in p.parts]
    return sum(p.stat().st_size for p in files)


def test_two_snapshots_of_the_same_tree_deduplicate_2x(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    size = random_tree(src)
    cli.ok("init")
    cli.ok("snapshot", str(src))
    cli.ok("snapshot", str(src))
    doc = stats(cli)
    assert doc["snapshots"] == 2
    assert doc["files"] == 2 * 4
    assert doc["logical_bytes"] == 2 * size
    assert doc["unique_bytes"] == size
    assert doc["dedup_ratio"] == pytest.approx(2.0)
    assert 0.99 < doc["compression_ratio"] <= 1.0  # random data: sealing adds a little
    assert doc["stored_bytes"] == on_disk(cli.repo)
    assert doc["stored_bytes"] == sum(doc["stored"].values())
    assert set(doc["stored"]) == {"config", "data", "index", "keys", "snapshots"}
    assert doc["objects"] == len([p for p in cli.repo.rglob("*") if p.is_file()])
    assert doc["missing_blobs"] == 0
    assert "monthly_cost" not in doc
    manifests = json.loads(cli.ok("snapshots", "--json").stdout)
    assert [(s["id"], s["bytes_added"], s["bytes"], s["files"]) for s in doc["per_snapshot"]] == [
        (m["id"], m["summary"]["bytes_added"], m["summary"]["total_bytes"], 4) for m in manifests
    ]
    assert doc["per_snapshot"][0]["bytes_added"] > size
    assert doc["per_snapshot"][1]["bytes_added"] < 10_000  # only its tree blobs were new


def test_compressible_text_has_a_compression_ratio_above_1(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    size = text_tree(src)
    cli.ok("init")
    cli.ok("snapshot", str(src))
    doc = stats(cli)
    assert doc["unique_bytes"] == doc["logical_bytes"] == size
    assert doc["dedup_ratio"] == pytest.approx(1.0)
    assert doc["compression_ratio"] > 3
    assert doc["unique_stored_bytes"] < size / 3
    assert doc["stored_bytes"] == on_disk(cli.repo)


def test_price_gives_the_monthly_cost_of_stored_bytes(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    random_tree(src)
    cli.ok("init")
    cli.ok("snapshot", str(src))
    doc = stats(cli, "--price-per-gb-month", "0.023")
    assert doc["price_per_gb_month"] == 0.023
    assert doc["monthly_cost"] == pytest.approx(doc["stored_bytes"] / 1e9 * 0.023)
    human = cli.ok("stats", "--price-per-gb-month", "150").stdout
    expected = on_disk(cli.repo) / 1e9 * 150
    assert expected > 0.5
    (line,) = [ln for ln in human.splitlines() if ln.startswith("monthly cost:")]
    assert line.split()[2] == f"{expected:.2f}"
    assert "GB = 10^9 bytes" in line


@pytest.mark.parametrize(
    ("value", "code"), [("-1", 1), ("-0.5", 1), ("nan", 1), ("inf", 1), ("abc", 2), ("", 2)]
)
def test_bad_price_is_a_one_line_usage_error(cli: Cli, value: str, code: int) -> None:
    res = cli.run("stats", f"--price-per-gb-month={value}")  # before the repo is even opened
    assert res.returncode == code
    assert "--price-per-gb-month" in one_line_error(res)
    assert res.stdout == ""


def test_human_output_of_an_empty_and_a_used_repository(cli: Cli, tmp_path: Path) -> None:
    cli.ok("init")
    doc = stats(cli)
    assert (doc["snapshots"], doc["files"], doc["logical_bytes"], doc["unique_bytes"]) == (0,) * 4
    assert doc["dedup_ratio"] is None
    assert doc["compression_ratio"] is None
    assert doc["per_snapshot"] == []
    assert doc["stored_bytes"] == on_disk(cli.repo)
    assert "dedup:        - (logical / unique)" in cli.ok("stats").stdout
    src = tmp_path / "src"
    random_tree(src)
    short = json.loads(cli.ok("snapshot", str(src), "--json").stdout)["short_id"]
    lines = cli.ok("stats").stdout.splitlines()
    assert lines[1] == "snapshots:    1"
    assert lines[-2].split() == ["ID", "Time", "Host", "Files", "Size", "Added"]
    assert lines[-1].startswith(short)
    assert lines[-1].split()[4:6] == ["4", "5.4"]  # files, size in MiB


# -- in process ----------------------------------------------------------------------------


def test_a_manifest_without_totals_is_counted_by_walking(
    local_repo: Repository, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    size = random_tree(src)
    os.symlink("a.bin", src / "link")
    job = Backup(local_repo, [str(src)], BackupOptions())
    snap = job.run()
    bare = Snapshot(snap.time_ns + 1, snap.host, snap.username, snap.paths, snap.tree)
    local_repo.save_snapshot(bare)
    result = repository_stats(local_repo)
    assert [(s.files, s.bytes) for s in result.snapshots] == [(4, size), (4, size)]
    assert [s.bytes_added for s in result.snapshots] == [job.summary.bytes_added, None]
    assert result.dedup_ratio == pytest.approx(2.0)


def test_blobs_missing_from_the_index_are_counted_not_fatal(
    local_repo: Repository, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    random_tree(src)
    snap = Backup(local_repo, [str(src)], BackupOptions()).run()
    before = repository_stats(local_repo)
    data = [r.blob_id for r in referenced(local_repo, [snap]) if r.type == BLOB_DATA]
    lost = local_repo.lookup(data[0])
    assert lost is not None
    local_repo.cache.delete_many("blobs", [data[0]])
    after = repository_stats(local_repo)
    assert (before.missing_blobs, after.missing_blobs) == (0, 1)
    assert after.unique_blobs == before.unique_blobs - 1
    assert after.unique_bytes == before.unique_bytes - lost.raw_length
    assert after.logical_bytes == before.logical_bytes


# -- S3 ------------------------------------------------------------------------------------


def test_stats_and_diff_on_an_s3_repository(
    s3_cli: Cli, s3: S3Server, s3_url: str, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    size = random_tree(src)
    s3_cli.ok("init")
    s3_cli.ok("snapshot", str(src))
    (src / "new.txt").write_text("new\n")
    s3_cli.ok("snapshot", str(src))
    doc = stats(s3_cli, "--price-per-gb-month", "0.02")
    assert doc["snapshots"] == 2
    assert doc["logical_bytes"] == 2 * size + 4
    assert doc["unique_bytes"] == size + 4
    client = boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        aws_access_key_id=s3.env()["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=s3.env()["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    bucket, _, prefix = s3_url.removeprefix("s3://").partition("/")
    listing = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/")
    assert doc["stored_bytes"] == sum(o["Size"] for o in listing["Contents"])
    assert doc["objects"] == listing["KeyCount"]
    assert doc["monthly_cost"] == pytest.approx(doc["stored_bytes"] / 1e9 * 0.02)
    diff = json.loads(
        s3_cli.ok("diff", doc["per_snapshot"][0]["short_id"], "latest", "--json").stdout
    )
    assert diff["added"] == [f"{src}/new.txt"]
    assert diff["metadata"][-1] == str(src)  # before it, maybe /tmp (other processes)
    assert diff["removed"] == diff["changed"] == []
