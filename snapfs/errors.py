"""The one exception tree of snapfs.

Every class carries the process exit code the CLI uses for it and the errno a FUSE
handler answers with, so both maps live here and nowhere else. Importable from any layer.
"""

from __future__ import annotations

import errno

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_PARTIAL = 3
EXIT_NO_REPO = 10
EXIT_LOCKED = 11
EXIT_WRONG_PASSWORD = 12


class SnapfsError(Exception):
    """Base of every error snapfs reports to a user; the message is one line."""

    exit_code: int = EXIT_FAILURE
    errno: int = errno.EIO


class UsageError(SnapfsError):
    """Bad arguments or environment (a missing source path, an unknown option value)."""

    errno = errno.EINVAL


class RepositoryNotFound(SnapfsError):
    exit_code = EXIT_NO_REPO


class RepositoryExists(SnapfsError):
    pass


class WrongPassword(SnapfsError):
    exit_code = EXIT_WRONG_PASSWORD
    errno = errno.EACCES


class LockedError(SnapfsError):
    exit_code = EXIT_LOCKED
    errno = errno.EBUSY


class SnapshotNotFound(SnapfsError):
    errno = errno.ENOENT


class PathNotFound(SnapfsError):
    errno = errno.ENOENT


class StoreError(SnapfsError):
    """The store could not be reached or refused an operation."""


class ObjectNotFound(StoreError):
    """A named object is absent from the store."""


class IntegrityError(SnapfsError):
    """Data failed authentication, did not match its id, or is missing from the index."""


class FormatError(IntegrityError):
    """An object decrypted but its content does not follow docs/format.md."""
