"""Writes a small deterministic sample folder for the demo: text, binary, links.

Usage: python tools/sample.py DIR
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path


def make_sample(root: Path, seed: int = 1) -> None:
    rnd = random.Random(seed)
    (root / "docs").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "docs" / "readme.txt").write_text(
        "snapfs demo: this file is restored by tools/demo.sh\n" * 20
    )
    for i in range(50):
        words = " ".join(rnd.choice(["alpha", "beta", "gamma", "delta"]) for _ in range(400))
        (root / "docs" / f"note-{i:02d}.txt").write_text(words + "\n")
    (root / "data" / "random.bin").write_bytes(rnd.randbytes(8 << 20))
    (root / "data" / "copy.bin").write_bytes((root / "data" / "random.bin").read_bytes())
    (root / "data" / "empty").touch()
    os.symlink("../docs/readme.txt", root / "data" / "readme-link")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: sample.py DIR")
    make_sample(Path(sys.argv[1]))
