"""S3 cost and speed figures, measured against SeaweedFS on loopback:

- snapshot throughput of one dataset to S3 and to a local repository;
- requests per GiB written;
- requests and bytes to go from an empty cache to a ready mount, and to read one file.

Usage: python tools/s3_measure.py DATASET_DIR FILE_IN_DATASET [--workdir DIR]
Prints a JSON object; docs/benchmarks.md records a run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from snapfs.crypto import KdfParams
from snapfs.repo.config import RepoConfig
from snapfs.repo.repository import Repository, init_repository
from snapfs.store.counting import CountingStore
from snapfs.store.local import LocalStore
from snapfs.store.s3 import S3Store
from snapfs.vfs.paths import resolve
from snapfs.writer.backup import Backup, BackupOptions
from tools.seaweed import S3Server

PASSWORD = b"measure"
GiB = 1 << 30


def snapshot(store: CountingStore, dataset: Path, cache: Path) -> dict[str, float]:
    init_repository(store, PASSWORD, RepoConfig.new(), KdfParams())
    repo = Repository.open(store, PASSWORD, cache)
    try:
        start = time.monotonic()
        snap = Backup(repo, [str(dataset)], BackupOptions()).run()
        wall = time.monotonic() - start
    finally:
        repo.close()
    read = snap.summary["bytes_read"]
    put_bytes = store.bytes["put"]
    return {
        "wall_s": round(wall, 2),
        "MiB_per_s": round(read / wall / 2**20, 1),
        "puts": store.requests["put"],
        "bytes_stored": put_bytes,
        "puts_per_GiB_stored": round(store.requests["put"] / (put_bytes / GiB), 1),
    }


def cold_open_and_read(url: str, file: Path, cache: Path) -> dict[str, int]:
    store = CountingStore(S3Store(url))
    repo = Repository.open(store, PASSWORD, cache)
    try:
        snaps = repo.list_snapshots()  # what the mount's first listing needs
        ready = dict(store.requests), store.bytes["get"]
        node = resolve(repo, snaps[-1], str(file))
        for blob_id, _ in node.content:
            repo.read_blob(blob_id)
    finally:
        repo.close()
    return {
        "ready_requests": sum(ready[0].values()),
        "ready_gets": ready[0].get("get", 0),
        "ready_get_bytes": ready[1],
        "file_size": node.size,
        "read_file_requests": sum(store.requests.values()) - sum(ready[0].values()),
        "read_file_get_bytes": store.bytes["get"] - ready[1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("file", type=Path, help="a file inside the dataset to read back")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="snapfs-s3m-", dir=args.workdir))
    server = S3Server(work / "seaweedfs")
    server.start()
    try:
        os.environ.update(server.env())
        s3 = S3Store(f"s3://snapfs-measure-{os.getpid()}/repo")
        s3.ensure_bucket()
        to_s3 = snapshot(CountingStore(s3), args.dataset, work / "cache-s3")
        local = snapshot(CountingStore(LocalStore(work / "local")), args.dataset, work / "cache-l")
        cold = cold_open_and_read(s3.location, args.file.absolute(), work / "cache-empty")
        print(json.dumps({"snapshot_to_s3": to_s3, "snapshot_local": local, "cold": cold}))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
