"""Scale check: a synthetic repository of N files in S snapshots (metadata only: every
file holds the same 1-byte chunk), each snapshot one directory of N/S entries; then the
mount's ready time, a listing of one big directory, and the mount's peak RSS — next to
the same figures for a repository of one small snapshot, to show what grows.

Usage (root): .venv/bin/python -m tools.scale [--files 1000000] [--snapshots 10] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from pathlib import Path

from snapfs.crypto import KdfParams
from snapfs.repo.config import RepoConfig
from snapfs.repo.repository import Repository, init_repository
from snapfs.repo.snapshot import Snapshot
from snapfs.repo.tree import DIR, FILE, Node, encode_tree
from snapfs.store.local import LocalStore
from snapfs.writer.saver import BlobSaver

HERE = Path(__file__).resolve().parent.parent
SNAPFS = str(HERE / ".venv" / "bin" / "snapfs")
PASSWORD = "scale"


def build(repo_dir: Path, cache: Path, files: int, snapshots: int) -> None:
    store = LocalStore(repo_dir)
    init_repository(store, PASSWORD.encode(), RepoConfig.new(), KdfParams())
    repo = Repository.open(store, PASSWORD.encode(), cache)
    try:
        saver = BlobSaver(repo)
        data = saver.store_now(b"x")
        per = files // snapshots
        trees = []
        for s in range(snapshots):
            now = time.time_ns() - (snapshots - s) * 10**9
            nodes = [
                Node(
                    name=b"f%07d" % i,
                    type=FILE,
                    mode=0o644,
                    uid=0,
                    gid=0,
                    mtime_ns=now,
                    size=1,
                    content=[(data.id, 1)],
                )
                for i in range(per)
            ]
            big = saver.save_tree(encode_tree(nodes))
            top = Node(
                name=b"big", type=DIR, mode=0o755, uid=0, gid=0, mtime_ns=now, subtree=big.id
            )
            trees.append((now, saver.save_tree(encode_tree([top])).id))
        saver.finish()
        for now, tree in trees:
            repo.save_snapshot(
                Snapshot(time_ns=now, host="scale", username="root", paths=["/big"], tree=tree)
            )
    finally:
        repo.close()


def measure(repo_dir: Path, cache: Path, mnt: Path) -> dict[str, float]:
    env = dict(os.environ) | {
        "SNAPFS_REPO": str(repo_dir),
        "SNAPFS_PASSWORD": PASSWORD,
        "XDG_CACHE_HOME": str(cache),
    }
    mnt.mkdir(parents=True, exist_ok=True)
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    start = time.monotonic()
    out = subprocess.run(
        [SNAPFS, "mount", str(mnt)], env=env, capture_output=True, text=True, check=True
    ).stdout
    ready = time.monotonic() - start
    pid = int(out.split("(PID ")[1].split(")")[0])
    try:
        start = time.monotonic()
        entries = len(os.listdir(mnt / "latest" / "big"))
        listing = time.monotonic() - start
        start = time.monotonic()
        again = len(os.listdir(mnt / "latest" / "big"))
        listing2 = time.monotonic() - start
        assert entries == again
        hwm = next(
            x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmHWM")
        )
    finally:
        subprocess.run([SNAPFS, "umount", str(mnt)], env=env, check=False)
    return {
        "mount_ready_s": round(ready, 3),
        "entries": entries,
        "ls_first_s": round(listing, 2),
        "ls_again_s": round(listing2, 2),
        "mount_peak_rss_MiB": int(hwm.split()[1]) // 1024,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--files", type=int, default=1_000_000)
    p.add_argument("--snapshots", type=int, default=10)
    p.add_argument("--work", type=Path, default=Path("/work/scale"))
    a = p.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    for name, files, snaps in (("small", 1000, 1), ("large", a.files, a.snapshots)):
        start = time.monotonic()
        build(a.work / name / "repo", a.work / name / "cache", files, snaps)
        built = time.monotonic() - start
        print(
            name,
            files,
            "files in",
            snaps,
            "snapshots; built in",
            round(built, 1),
            "s;",
            measure(a.work / name / "repo", a.work / name / "cache", a.work / name / "mnt"),
        )


if __name__ == "__main__":
    main()
