"""A repository in a local directory (or a mounted NAS).

Sync, thread-safe. Writes go to a temporary file in the target directory, are fsynced,
renamed into place and the directory fsynced, so a crash leaves either the whole object
or a ``.tmp-`` file that no reader looks at.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from snapfs.errors import ObjectNotFound, StoreError

TMP_PREFIX = ".tmp-"


class LocalStore:
    parallelism = 2

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self.location = str(self.root)

    def _path(self, name: str) -> Path:
        return self.root / name

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            with open(self._path(name), "rb") as f:
                if offset:
                    f.seek(offset)
                data = f.read() if length is None else f.read(length)
        except FileNotFoundError:
            raise ObjectNotFound(f"{name} is missing from the repository") from None
        except OSError as e:
            raise StoreError(f"cannot read {self._path(name)}: {e.strerror}") from None
        if length is not None and len(data) != length:
            raise StoreError(f"{name} is shorter than expected (truncated?)")
        return data

    def put(self, name: str, data: bytes) -> None:
        path = self._path(name)
        tmp = path.parent / f"{TMP_PREFIX}{secrets.token_hex(8)}"
        try:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileNotFoundError:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, path)
            _fsync_dir(path.parent)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            if e.errno == errno.ENOSPC:
                raise StoreError(f"no space left on the repository disk ({self.root})") from None
            raise StoreError(f"cannot write {path}: {e.strerror}") from None

    def delete(self, name: str) -> None:
        try:
            self._path(name).unlink(missing_ok=True)
        except OSError as e:
            raise StoreError(f"cannot delete {self._path(name)}: {e.strerror}") from None

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        """Every object whose name starts with ``prefix``, sorted by name."""
        top = self.root / prefix.rpartition("/")[0]
        found = []
        for dirpath, _, filenames in os.walk(top):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for fn in filenames:
                name = fn if rel == "." else f"{rel}/{fn}"
                if fn.startswith(TMP_PREFIX) or not name.startswith(prefix):
                    continue
                try:
                    found.append((name, os.stat(os.path.join(dirpath, fn)).st_size))
                except FileNotFoundError:
                    continue
        found.sort()
        yield from found

    def exists(self, name: str) -> bool:
        return self._path(name).exists()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
