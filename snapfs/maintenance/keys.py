"""Key files: several passwords opening one repository (docs/format.md §5).

Every key file wraps the same master key under its own password, so adding or removing
a password touches one small file and nothing else. The last key file is never removed,
nor the one the caller's password opened (``Repository.key_name``): removing it would
lock the caller out. Sync; no output.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from snapfs.crypto import KdfParams, unwrap_key, wrap_key
from snapfs.errors import FormatError, ObjectNotFound, SnapfsError, UsageError, WrongPassword
from snapfs.repo.format import object_id
from snapfs.repo.repository import Repository, key_file_meta

log = logging.getLogger(__name__)

KEYS = "keys/"
SHORT = 8


@dataclass(frozen=True, slots=True)
class KeyInfo:
    name: str  # object name, ``keys/<hex>``
    created: str
    host: str
    username: str
    current: bool

    @property
    def hex(self) -> str:
        return self.name.removeprefix(KEYS)

    @property
    def short_id(self) -> str:
        return self.hex[:SHORT]


def list_keys(repo: Repository) -> list[KeyInfo]:
    """Every key file, in name order; an unreadable one is listed with ``?`` fields."""
    out = []
    for name, _ in repo.store.list(KEYS):
        try:
            doc = json.loads(repo.store.get(name))
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            created, host, user = (str(doc.get(k, "?")) for k in ("created", "host", "username"))
        except ObjectNotFound:
            continue  # removed meanwhile
        except ValueError as e:
            log.warning("key file %s is unreadable: %s", name, e)
            created = host = user = "?"
        out.append(KeyInfo(name, created, host, user, current=name == repo.key_name))
    return out


def find_key(keys: list[KeyInfo], ref: str) -> KeyInfo:
    """The one key whose id starts with ``ref`` (hex digits, any length)."""
    prefix = ref.lower()
    if not prefix or any(c not in "0123456789abcdef" for c in prefix):
        raise UsageError(f"{ref!r} is not a key id (hex digits, see 'snapfs key list')")
    found = [k for k in keys if k.hex.startswith(prefix)]
    if not found:
        raise UsageError(f"no key with id {ref}")
    if len(found) > 1:
        raise UsageError(f"key id {ref} is ambiguous; give more digits")
    return found[0]


def add_key(repo: Repository, password: bytes, kdf: KdfParams | None = None) -> KeyInfo:
    """Write a new key file for ``password`` wrapping the repository's master key, and
    read it back: it must open with the password before anyone relies on it."""
    meta = key_file_meta()
    data = wrap_key(repo.key, password, meta, kdf or KdfParams())
    name = f"{KEYS}{object_id(data).hex()}"
    repo.store.put(name, data)
    try:
        back = unwrap_key(repo.store.get(name), password)
    except (WrongPassword, FormatError, ObjectNotFound) as e:
        raise SnapfsError(f"the new key file {name} does not read back: {e}") from None
    if back.to_json() != repo.key.to_json():
        raise SnapfsError(f"the new key file {name} does not read back the master key")
    return KeyInfo(name, meta["created"], meta["host"], meta["username"], current=False)


def remove_key(repo: Repository, ref: str) -> KeyInfo:
    """Remove the key whose id starts with ``ref``; never the last one or the current one."""
    keys = list_keys(repo)
    key = find_key(keys, ref)
    if len(keys) == 1:
        raise UsageError(
            f"key {key.short_id} is the last key of the repository; "
            "without it nobody could open the repository"
        )
    if key.current:
        raise UsageError(
            f"key {key.short_id} is the one your password opened; remove it with another "
            "password, or use 'snapfs key passwd' to replace it"
        )
    _delete(repo, key.name)
    return key


def change_password(repo: Repository, password: bytes, kdf: KdfParams | None = None) -> KeyInfo:
    """Replace the current key: the new key file is written (and read back) first, then
    the old one removed, so a crash in between leaves both, never neither."""
    old = repo.key_name
    if not old:
        raise SnapfsError("the repository was not opened with a password")
    new = add_key(repo, password, kdf)
    if new.name != old:  # same bytes are impossible (fresh salt), but never delete ours
        _delete(repo, old)
    repo.key_name = new.name
    return new


def _delete(repo: Repository, name: str) -> None:
    """Delete a key file; if that left the repository without any (two users removing
    each other's keys at once), put it back."""
    data = repo.store.get(name)
    repo.store.delete(name)
    if not any(True for _ in repo.store.list(KEYS)):
        repo.store.put(name, data)
        raise SnapfsError(
            f"removing {name} would have left the repository without keys; it was put back"
        )
