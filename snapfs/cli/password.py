"""Where a password comes from: env, a file, or a TTY prompt — never an argument."""

from __future__ import annotations

import getpass
import os
import sys

from snapfs.errors import UsageError


def read_password(password_file: str | None, confirm: bool = False) -> bytes:
    env = os.environ.get("SNAPFS_PASSWORD")
    path = password_file or os.environ.get("SNAPFS_PASSWORD_FILE")
    if env is not None and not password_file:
        password = env
    elif path:
        try:
            with open(path, encoding="utf-8") as f:
                password = f.read().rstrip("\r\n")
        except OSError as e:
            raise UsageError(f"cannot read password file {path}: {e.strerror}") from None
    elif sys.stdin is not None and sys.stdin.isatty():
        password = _prompt(confirm)
    else:
        raise UsageError(
            "no password: set SNAPFS_PASSWORD or SNAPFS_PASSWORD_FILE, or pass --password-file"
        )
    if not password:
        raise UsageError("the password is empty")
    return password.encode("utf-8")


def _prompt(confirm: bool) -> str:
    try:
        first = getpass.getpass("repository password: ")
        if confirm and getpass.getpass("repeat password: ") != first:
            raise UsageError("the passwords do not match")
    except EOFError:
        raise UsageError("no password entered") from None
    return first
