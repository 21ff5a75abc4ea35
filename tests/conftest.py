"""Shared fixtures: repositories on memory and local stores, and the CLI run as cron runs
it (a subprocess, stdin closed, no TTY, password from the environment)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from snapfs.crypto import KdfParams
from snapfs.repo.config import RepoConfig
from snapfs.repo.repository import Repository, init_repository
from snapfs.store.local import LocalStore
from snapfs.store.memory import MemoryStore

PASSWORD = b"correct horse battery staple"
FAST_KDF = KdfParams(iterations=1, memory_kib=8192, lanes=1)


@pytest.fixture
def memory_repo(tmp_path: Path) -> Iterator[Repository]:
    store = MemoryStore()
    init_repository(store, PASSWORD, RepoConfig.new(pack_size=1 << 20), FAST_KDF)
    repo = Repository.open(store, PASSWORD, tmp_path / "cache")
    yield repo
    repo.close()


@pytest.fixture
def local_repo(tmp_path: Path) -> Iterator[Repository]:
    store = LocalStore(tmp_path / "repo")
    init_repository(store, PASSWORD, RepoConfig.new(pack_size=1 << 20), FAST_KDF)
    repo = Repository.open(store, PASSWORD, tmp_path / "cache")
    yield repo
    repo.close()


@dataclass
class Cli:
    """Runs ``snapfs`` the way cron does; ``repo`` is passed through SNAPFS_REPO."""

    repo: Path
    env: dict[str, str]

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "snapfs", *args],
            env={**self.env, **env},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def ok(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        res = self.run(*args, **env)
        assert res.returncode == 0, f"snapfs {' '.join(args)} failed: {res.stderr}"
        return res


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPFS_")}
    env |= {
        "SNAPFS_REPO": str(tmp_path / "repo"),
        "SNAPFS_PASSWORD": PASSWORD.decode(),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    return Cli(tmp_path / "repo", env)
