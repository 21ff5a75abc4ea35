"""Repository locks: shared for readers and writers, exclusive for prune.

A lock is a small sealed file under ``locks/``; it is refreshed while held so that a
lock whose holder died is recognisable as stale (dead PID on this host, or not
refreshed for STALE_AFTER seconds).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass

from snapfs.crypto import MasterKey, open_sealed, seal
from snapfs.errors import IntegrityError, LockedError, ObjectNotFound, StoreError
from snapfs.repo.format import AAD_LOCK
from snapfs.store import Store

log = logging.getLogger(__name__)

REFRESH_EVERY = 300.0
STALE_AFTER = 1800.0


@dataclass(frozen=True, slots=True)
class LockInfo:
    name: str
    host: str
    pid: int
    time: float
    exclusive: bool

    def is_stale(self, now: float) -> bool:
        if now - self.time > STALE_AFTER:
            return True
        return self.host == socket.gethostname() and not pid_alive(self.pid)

    def describe(self) -> str:
        kind = "exclusive" if self.exclusive else "shared"
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.time))
        return f"{kind} lock held by PID {self.pid} on {self.host} since {when}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_locks(store: Store, key: MasterKey) -> list[LockInfo]:
    out = []
    for name, _ in store.list("locks/"):
        try:
            doc = json.loads(open_sealed(key.cipher, store.get(name), AAD_LOCK))
            out.append(LockInfo(name, doc["host"], doc["pid"], doc["time"], doc["exclusive"]))
        except (ObjectNotFound, IntegrityError, ValueError, KeyError, TypeError):
            continue  # removed meanwhile, or not ours to read: not a lock we honour
    return out


class RepoLock:
    """Context manager holding a lock and refreshing it from a daemon thread."""

    def __init__(self, store: Store, key: MasterKey, exclusive: bool) -> None:
        self.store, self.key, self.exclusive = store, key, exclusive
        self.name = f"locks/{secrets.token_hex(32)}"
        self.pid = os.getpid()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def write(self) -> None:
        doc = {
            "host": socket.gethostname(),
            "pid": self.pid,
            "time": time.time(),
            "exclusive": self.exclusive,
        }
        self.store.put(self.name, seal(self.key.cipher, json.dumps(doc).encode(), AAD_LOCK))

    def _conflicts(self) -> list[LockInfo]:
        now = time.time()
        return [
            lk
            for lk in list_locks(self.store, self.key)
            if lk.name != self.name and (self.exclusive or lk.exclusive) and not lk.is_stale(now)
        ]

    def __enter__(self) -> RepoLock:
        if conflicts := self._conflicts():
            raise LockedError(f"repository is locked: {conflicts[0].describe()}")
        self.write()
        if conflicts := self._conflicts():  # someone raced us between check and write
            self._remove()
            raise LockedError(f"repository is locked: {conflicts[0].describe()}")
        self._thread = threading.Thread(target=self._refresh, name="lock-refresh", daemon=True)
        self._thread.start()
        return self

    def _refresh(self) -> None:
        """Objects are never rewritten in place: a refresh writes a new lock file, then
        removes the old one, so a reader sees at least one of them at any moment."""
        while not self._stop.wait(REFRESH_EVERY):
            old = self.name
            try:
                self.name = f"locks/{secrets.token_hex(32)}"
                self.write()
                self.store.delete(old)
            except Exception as e:  # a missed refresh must not kill the holder
                log.warning("could not refresh the repository lock: %s", e)

    def _remove(self) -> None:
        try:
            self.store.delete(self.name)
        except StoreError as e:  # e.g. S3 gone: the lock goes stale by itself
            log.warning("could not remove lock %s: %s", self.name, e)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self._remove()
