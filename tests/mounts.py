"""Real mounts for tests: a ``snapfs mount --foreground`` subprocess, waited for until
the kernel shows the mount (failing fast if the process died), and always torn down by
mountpoint and PID — also when the test fails."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from snapfs.mount.lifecycle import mounted_fuse

FUSERMOUNT = shutil.which("fusermount3")


def skip_without_fuse() -> None:
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse is missing: FUSE is not available here")
    if FUSERMOUNT is None:
        pytest.skip("fusermount3 is missing: install the fuse3 package (tools/setup.sh)")


def unmount(mnt: Path) -> None:
    if mounted_fuse(str(mnt)) is None or FUSERMOUNT is None:
        return
    res = subprocess.run([FUSERMOUNT, "-u", str(mnt)], capture_output=True, check=False)
    if res.returncode != 0:
        subprocess.run([FUSERMOUNT, "-u", "-z", str(mnt)], capture_output=True, check=False)


def wait_mounted(mnt: Path, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while mounted_fuse(str(mnt)) is None:
        if proc.poll() is not None:
            raise AssertionError(f"snapfs mount exited with {proc.returncode}: {log.read_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no mount at {mnt} after {timeout} s: {log.read_text()}")
        time.sleep(0.01)


@contextmanager
def mounted(env: dict[str, str], mnt: Path, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    skip_without_fuse()
    mnt.mkdir(exist_ok=True)
    log = mnt.parent / f"{mnt.name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "snapfs", "mount", str(mnt), "--foreground", *extra],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_mounted(mnt, proc, log)
        yield proc
    finally:
        unmount(mnt)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
