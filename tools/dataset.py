"""Deterministic benchmark datasets: ``generate`` a mixed tree and ``mutate`` it.

The mix follows what users back up: one large random file (~40%, like model weights),
one log-like text file (~20%), ~20,000 small files of 1-64 KiB in nested directories
(~30%), ~10% duplicated content, and edge cases (empty files, symlinks, a hardlink pair,
unicode names). Same seed, same bytes.

Usage:
    python tools/dataset.py generate DIR [--size-mib 600] [--seed 1]
    python tools/dataset.py mutate DIR [--seed 2]
"""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

MiB = 1 << 20
WORDS = (
    "GET",
    "POST",
    "PUT",
    "200",
    "404",
    "500",
    "user",
    "session",
    "cache",
    "miss",
    "hit",
    "upstream",
    "latency",
    "ms",
    "request",
    "response",
    "worker",
    "queue",
    "retry",
    "timeout",
    "connected",
    "closed",
    "token",
    "model",
    "epoch",
    "loss",
    "step",
)


def log_lines(rnd: random.Random, nbytes: int, start: int = 0) -> bytes:
    """Log-like text: timestamps, levels and a small vocabulary (compresses ~5-10x)."""
    templates = [
        " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(6, 16))) for _ in range(5000)
    ]
    levels = ["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"]
    out: list[str] = []
    size, t = 0, start
    while size < nbytes:
        batch = rnd.choices(templates, k=4096)
        for line in batch:
            t += rnd.randint(1, 900)
            text = f"2026-11-{1 + t // 86_400_000 % 28:02d}T{t // 3_600_000 % 24:02d}:"
            text += f"{t // 60_000 % 60:02d}:{t // 1000 % 60:02d}.{t % 1000:03d} "
            text += f"{rnd.choice(levels)} pid={rnd.randint(100, 9999)} {line}\n"
            out.append(text)
            size += len(text)
    return "".join(out).encode()[:nbytes]


def small_size(rnd: random.Random) -> int:
    """1-64 KiB, skewed small (mean ~9 KiB) as source trees and configs are."""
    return int(1024 * 64 ** (rnd.random() ** 2.2))


def small_content(rnd: random.Random, corpus: bytes) -> bytes:
    size = small_size(rnd)
    if rnd.random() < 0.5:
        start = rnd.randrange(0, len(corpus) - size)
        return corpus[start : start + size]
    return rnd.randbytes(size)


def generate(root: Path, size_mib: int = 600, seed: int = 1) -> None:
    rnd = random.Random(seed)
    total = size_mib * MiB
    root.mkdir(parents=True, exist_ok=False)
    big = root / "models" / "checkpoint.bin"
    big.parent.mkdir()
    with open(big, "wb") as f:
        left = int(total * 0.40)
        while left > 0:
            n = min(left, 16 * MiB)
            f.write(rnd.randbytes(n))
            left -= n
    logs = root / "logs"
    logs.mkdir()
    (logs / "app.log").write_bytes(log_lines(rnd, int(total * 0.20)))
    corpus = log_lines(rnd, 4 * MiB)
    count = max(100, round(20_000 * size_mib / 600))
    small_bytes = 0
    names: list[Path] = []
    for i in range(count):
        d = root / "src" / f"pkg{i % 40:02d}" / f"mod{i % 7}" / f"sub{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"file{i:05d}.dat"
        data = small_content(rnd, corpus)
        p.write_bytes(data)
        small_bytes += len(data)
        names.append(p)
    dup = root / "dups"
    dup.mkdir()
    with open(big, "rb") as f:  # a partial copy of the checkpoint, like a fine-tune base
        (dup / "checkpoint-copy.bin").write_bytes(f.read(int(total * 0.07)))
    for i, p in enumerate(rnd.sample(names, min(len(names), count // 10))):
        (dup / f"copy{i:05d}.dat").write_bytes(p.read_bytes())
    edge = root / "edge"
    edge.mkdir()
    for i in range(5):
        (edge / f"empty{i}").touch()
    (edge / "ünïcødé-名前.txt").write_text("unicode name\n")
    os.symlink("../logs/app.log", edge / "log-link")
    os.symlink("does-not-exist", edge / "dangling-link")
    (edge / "hardlink-a").write_bytes(b"shared inode\n" * 100)
    os.link(edge / "hardlink-a", edge / "hardlink-b")


def mutate(root: Path, seed: int = 2) -> None:
    """~1% of small files rewritten, a few added and deleted, the log appended."""
    rnd = random.Random(seed)
    small = sorted((root / "src").rglob("*.dat"))
    corpus = log_lines(rnd, 1 * MiB)
    for p in rnd.sample(small, max(1, len(small) // 100)):
        p.write_bytes(small_content(rnd, corpus))
    for p in rnd.sample(small, max(1, len(small) // 1000)):
        p.unlink()
    new = root / "src" / f"added-{seed}"
    new.mkdir(exist_ok=True)
    for i in range(max(1, len(small) // 1000)):
        (new / f"new{i:03d}.dat").write_bytes(small_content(rnd, corpus))
    with open(root / "logs" / "app.log", "ab") as f:
        f.write(log_lines(rnd, 2 * MiB, start=10**9))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("dir", type=Path)
    g.add_argument("--size-mib", type=int, default=600)
    g.add_argument("--seed", type=int, default=1)
    m = sub.add_parser("mutate")
    m.add_argument("dir", type=Path)
    m.add_argument("--seed", type=int, default=2)
    args = parser.parse_args()
    if args.cmd == "generate":
        generate(args.dir, args.size_mib, args.seed)
    else:
        mutate(args.dir, args.seed)


if __name__ == "__main__":
    main()
