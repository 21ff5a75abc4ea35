"""Side-by-side benchmark: snapfs, restic and BorgBackup on the same data, in one run.

Generates the dataset (tools/dataset.py), runs every tool's writer, mount and restore
on it — local repositories, and S3 (SeaweedFS on loopback) for the tools that support
it — drops the page cache before each cold step, verifies every restore and copy
byte for byte, and prints a table, ratios snapfs/peer and JSON.

Usage (as root, after tools/setup.sh and tools/bench_setup.sh):
    .venv/bin/python -m tools.bench [--size-mib 600] [--work /work/bench] [--json FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tools.dataset import generate, mutate
from tools.seaweed import S3Server

HERE = Path(__file__).resolve().parent.parent
SNAPFS = str(HERE / ".venv" / "bin" / "snapfs")
BORG = str(HERE / ".venv-borg" / "bin" / "borg")
PASSWORD = "bench-password"
MOUNT_TIMEOUT = 120.0
# cp -a out of a mount writes to tmpfs: on this shared VM a plain local cp -a of the same
# tree to disk varied from 2 to 18 s between runs, which would swamp the mount's share
COPY_ROOT = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path("/tmp")


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


@dataclass
class Timed:
    wall: float
    rss_kib: int
    out: str


def timed(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> Timed:
    """Run to completion; wall time and peak RSS (GNU time), failing loudly."""
    stats = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-time-{os.getpid()}"
    full = ["/usr/bin/time", "-f", "%e %M", "-o", str(stats), *cmd]
    res = subprocess.run(full, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr[-2000:]}")
    wall, rss = stats.read_text().split()[-2:]
    return Timed(float(wall), int(rss), res.stdout)


@dataclass
class Tool:
    name: str
    work: Path
    env: dict[str, str]
    init: list[str]
    backup: Callable[[Path], list[str]]
    restore: Callable[[Path], tuple[list[str], Path | None]]  # command, cwd
    mount: Callable[[Path], list[str]]
    tree_in_mount: Callable[[Path, Path], Path]  # mountpoint, source -> source in mount
    restored_tree: Callable[[Path, Path], Path]  # target, source -> source in target
    repo_dir: Path | None
    results: dict[str, float] = field(default_factory=dict)


def base_env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SNAPFS_", "RESTIC_", "BORG_"))}
    env["HOME"] = str(work / "home")
    (work / "home").mkdir(parents=True, exist_ok=True)
    return env


def snapfs_tool(
    work: Path, repo: str, extra: dict[str, str] | None = None, name: str = "snapfs"
) -> Tool:
    env = base_env(work) | {"SNAPFS_REPO": repo, "SNAPFS_PASSWORD": PASSWORD}
    env |= {"XDG_CACHE_HOME": str(work / "cache")} | (extra or {})
    return Tool(
        name=name,
        work=work,
        env=env,
        init=[SNAPFS, "init", "-q"],
        backup=lambda src: [SNAPFS, "snapshot", str(src), "-q"],
        restore=lambda t: ([SNAPFS, "restore", "latest", "--target", str(t), "-q"], None),
        mount=lambda m: [SNAPFS, "mount", str(m), "--foreground"],
        tree_in_mount=lambda m, src: m / "latest" / str(src).lstrip("/"),
        restored_tree=lambda t, src: t / str(src).lstrip("/"),
        repo_dir=None if repo.startswith("s3://") else Path(repo),
    )


def restic_tool(
    work: Path, repo: str, extra: dict[str, str] | None = None, name: str = "restic"
) -> Tool:
    env = base_env(work) | {"RESTIC_REPOSITORY": repo, "RESTIC_PASSWORD": PASSWORD}
    env |= {"RESTIC_CACHE_DIR": str(work / "cache")} | (extra or {})
    return Tool(
        name=name,
        work=work,
        env=env,
        init=["restic", "init", "--repository-version", "2", "-q"],
        backup=lambda src: ["restic", "backup", str(src), "-q"],
        restore=lambda t: (["restic", "restore", "latest", "--target", str(t), "-q"], None),
        mount=lambda m: ["restic", "mount", str(m)],
        tree_in_mount=lambda m, src: m / "snapshots" / "latest" / str(src).lstrip("/"),
        restored_tree=lambda t, src: t / str(src).lstrip("/"),
        repo_dir=None if repo.startswith("s3:") else Path(repo),
    )


def borg_tool(work: Path, repo: Path) -> Tool:
    env = base_env(work) | {"BORG_REPO": str(repo), "BORG_PASSPHRASE": PASSWORD}
    env |= {"BORG_BASE_DIR": str(work / "borgbase"), "BORG_FUSE_IMPL": "pyfuse3"}

    def last(m: Path) -> str:
        return sorted(os.listdir(m))[-1]

    def restore(t: Path) -> tuple[list[str], Path | None]:
        t.mkdir(parents=True, exist_ok=True)
        name = subprocess.run(
            [BORG, "list", "--last", "1", "--short"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return [BORG, "extract", f"::{name}"], t

    return Tool(
        name="borg",
        work=work,
        env=env,
        init=[BORG, "init", "--encryption=repokey-blake2"],
        backup=lambda src: [
            BORG,
            "create",
            "--compression",
            "zstd,3",
            "::snap-{now:%Y%m%dT%H%M%S.%f}",
            str(src),
        ],
        restore=restore,
        mount=lambda m: [BORG, "mount", "-f", str(repo), str(m)],
        tree_in_mount=lambda m, src: m / last(m) / str(src).lstrip("/"),
        restored_tree=lambda t, src: t / str(src).lstrip("/"),
        repo_dir=repo,
    )


def same_tree(a: Path, b: Path) -> None:
    res = subprocess.run(
        ["diff", "-r", "--no-dereference", "-q", str(a), str(b)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        raise RuntimeError(f"{a} and {b} differ: {res.stdout[:2000]}{res.stderr[:500]}")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def mounted(path: Path) -> bool:
    real = os.path.realpath(path)
    with open("/proc/mounts") as f:
        return any(line.split()[1] == real for line in f)


class Mount:
    """A tool's mount in the foreground, timed until the snapshot tree is listable."""

    def __init__(self, tool: Tool, src: Path) -> None:
        self.tool, self.src = tool, src
        self.mnt = tool.work / f"mnt-{tool.name}"
        self.mnt.mkdir(exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_s = 0.0

    def __enter__(self) -> Mount:
        start = time.monotonic()
        self.proc = subprocess.Popen(
            self.tool.mount(self.mnt),
            env=self.tool.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.tool.name} mount exited with {self.proc.returncode}")
            if time.monotonic() - start > MOUNT_TIMEOUT:
                raise RuntimeError(f"{self.tool.name} mount not ready")
            try:
                if mounted(self.mnt) and os.listdir(self.mnt) and self.tree().exists():
                    break
            except OSError:
                pass
            time.sleep(0.005)
        self.ready_s = time.monotonic() - start
        return self

    def tree(self) -> Path:
        return self.tool.tree_in_mount(self.mnt, self.src)

    def peak_rss_kib(self) -> int:
        return self._rss_kib("VmHWM")

    def rss_kib(self) -> int:
        return self._rss_kib("VmRSS")

    def _rss_kib(self, field: str) -> int:
        assert self.proc is not None
        pids = [self.proc.pid] + [
            int(p)
            for p in subprocess.run(
                ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False
            ).stdout.split()
        ]
        peak = 0
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith(field):
                        peak = max(peak, int(line.split()[1]))
            except OSError:
                continue
        return peak

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["fusermount3", "-u", str(self.mnt)], capture_output=True, check=False)
        if mounted(self.mnt):
            subprocess.run(["fusermount3", "-uz", str(self.mnt)], capture_output=True, check=False)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def du(path: Path | None) -> float:
    if path is None:
        return float("nan")
    return float(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()))


def phase_first(tool: Tool, src: Path, total: int) -> None:
    subprocess.run(tool.init, env=tool.env, check=True, capture_output=True)
    drop_caches()
    t = timed(tool.backup(src), tool.env)
    tool.results |= {
        "first_s": t.wall,
        "first_MiBps": total / t.wall / 2**20,
        "writer_rss_MiB": t.rss_kib / 1024,
    }
    drop_caches()
    tool.results["unchanged_s"] = timed(tool.backup(src), tool.env).wall


def phase_after(tool: Tool, src: Path, big: Path, big_sha: str, full: bool) -> None:
    drop_caches()
    tool.results["mutated_s"] = timed(tool.backup(src), tool.env).wall
    tool.results["repo_MiB"] = du(tool.repo_dir) / 2**20
    drop_caches()
    with Mount(tool, src) as m:
        tool.results["mount_ready_s"] = m.ready_s
        start = time.monotonic()
        subprocess.run(["find", str(m.tree())], check=True, capture_output=True)
        tool.results["find_s"] = time.monotonic() - start
        drop_caches()
        start = time.monotonic()
        got = sha256(m.tree() / big.relative_to(src))
        tool.results["seq_read_MiBps"] = big.stat().st_size / (time.monotonic() - start) / 2**20
        if got != big_sha:
            raise RuntimeError(f"{tool.name}: the large file read through the mount differs")
        drop_caches()
        copy = COPY_ROOT / f"bench-cp-{tool.name}"
        shutil.rmtree(copy, ignore_errors=True)
        start = time.monotonic()
        subprocess.run(["cp", "-a", str(m.tree() / "src"), str(copy)], check=True)
        tool.results["cp_small_s"] = time.monotonic() - start
        same_tree(src / "src", copy)
        shutil.rmtree(copy)
        tool.results["mount_rss_MiB"] = m.peak_rss_kib() / 1024
        tool.results["mount_rss_end_MiB"] = m.rss_kib() / 1024
    if full:
        target = tool.work / f"restore-{tool.name}"
        shutil.rmtree(target, ignore_errors=True)
        cmd, cwd = tool.restore(target)
        drop_caches()
        t = timed(cmd, tool.env, cwd)
        total = sum(p.stat().st_size for p in src.rglob("*") if p.is_file() and not p.is_symlink())
        tool.results["restore_s"] = t.wall
        tool.results["restore_MiBps"] = total / t.wall / 2**20
        same_tree(src, tool.restored_tree(target, src))
        shutil.rmtree(target)


FIGURES = [
    ("first_s", "first snapshot (s)", "lower"),
    ("first_MiBps", "first snapshot (MiB/s)", "higher"),
    ("unchanged_s", "unchanged re-snapshot (s)", "lower"),
    ("mutated_s", "snapshot after mutate (s)", "lower"),
    ("repo_MiB", "repository size (MiB)", "lower"),
    ("mount_ready_s", "mount ready (s)", "lower"),
    ("find_s", "find over the snapshot (s)", "lower"),
    ("seq_read_MiBps", "cold sequential read via mount (MiB/s)", "higher"),
    ("cp_small_s", "cp -a small-file tree via mount (s)", "lower"),
    ("restore_s", "full restore via CLI (s)", "lower"),
    ("restore_MiBps", "full restore (MiB/s)", "higher"),
    ("writer_rss_MiB", "writer peak RSS (MiB)", "lower"),
    ("mount_rss_MiB", "mount peak RSS (MiB)", "lower"),
    ("mount_rss_end_MiB", "mount RSS after the copy (MiB)", "lower"),
]


def table(runs: dict[str, dict[str, float]]) -> str:
    names = list(runs)
    head = (
        "| figure | "
        + " | ".join(names)
        + " | "
        + " | ".join(f"snapfs/{n}" for n in names if not n.startswith("snapfs"))
        + " |"
    )
    lines = [head, "|" + "---|" * (1 + len(names) + sum(not n.startswith("snapfs") for n in names))]
    for key, label, _ in FIGURES:
        if not any(key in r for r in runs.values()):
            continue
        vals = [runs[n].get(key) for n in names]
        cells = [f"{v:.2f}" if v is not None else "-" for v in vals]
        ratios = []
        for n in names:
            if n.startswith("snapfs"):
                continue
            base = "snapfs-s3" if n.endswith("-s3") else "snapfs"
            a, b = runs.get(base, {}).get(key), runs[n].get(key)
            ratios.append(f"{a / b:.2f}" if a is not None and b else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mib", type=int, default=600)
    parser.add_argument("--work", type=Path, default=Path("/work/bench"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--no-s3", action="store_true")
    args = parser.parse_args()
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    data = work / "data"
    print(f"generating {args.size_mib} MiB dataset in {data}", file=sys.stderr)
    generate(data, args.size_mib)
    total = sum(p.stat().st_size for p in data.rglob("*") if p.is_file() and not p.is_symlink())
    big = data / "models" / "checkpoint.bin"
    server = None if args.no_s3 else S3Server(work / "seaweedfs")
    try:
        tools = [
            snapfs_tool(work / "snapfs", str(work / "snapfs" / "repo")),
            restic_tool(work / "restic", str(work / "restic" / "repo")),
            borg_tool(work / "borg", work / "borg" / "repo"),
        ]
        if server is not None:
            server.start()
            s3env = server.env()
            bucket = f"{server.endpoint}/bench-{os.getpid()}"
            s3_repo = f"s3://bench-{os.getpid()}/snapfs"
            tools.append(snapfs_tool(work / "snapfs-s3", s3_repo, s3env, "snapfs-s3"))
            tools.append(restic_tool(work / "restic-s3", f"s3:{bucket}/restic", s3env, "restic-s3"))
        for t in tools:
            t.work.mkdir(parents=True, exist_ok=True)
        for t in tools:
            print(f"{t.name}: first and unchanged snapshot", file=sys.stderr)
            phase_first(t, data, total)
        mutate(data)
        big_sha = sha256(big)
        for t in tools:
            print(f"{t.name}: mutated snapshot, mount, restore", file=sys.stderr)
            phase_after(t, data, big, big_sha, full=True)
    finally:
        if server is not None:
            server.stop()
    runs = {t.name: t.results for t in tools}
    print(table(runs))
    doc = {"size_mib": args.size_mib, "bytes": total, "runs": runs}
    print(json.dumps(doc, indent=1))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
