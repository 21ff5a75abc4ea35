"""Master keys and the password-wrapped key files that hold them.

The master key is random; a key file stores it sealed under a key derived from a
password with Argon2id, so changing a password rewrites one small file and several
passwords can open one repository.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass

import blake3
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from snapfs.crypto.aead import open_sealed, seal
from snapfs.errors import FormatError, IntegrityError, WrongPassword

KEY_SIZE = 32
KEYFILE_AAD = b"snapfs key file v1"


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Argon2id cost; the defaults take ~0.1 s and 64 MiB on the reference machine."""

    iterations: int = 3
    memory_kib: int = 65536
    lanes: int = 4


class MasterKey:
    """The repository's secrets: an AEAD key and a key for blob ids."""

    __slots__ = ("cipher", "encryption", "id_key")

    def __init__(self, encryption: bytes, id_key: bytes) -> None:
        if len(encryption) != KEY_SIZE or len(id_key) != KEY_SIZE:
            raise FormatError("master key has the wrong length")
        self.encryption = encryption
        self.id_key = id_key
        self.cipher = AESGCM(encryption)

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(os.urandom(KEY_SIZE), os.urandom(KEY_SIZE))

    def blob_id(self, data: bytes | memoryview) -> bytes:
        """Keyed BLAKE3: equal content in two repositories gets unrelated ids."""
        return blake3.blake3(data, key=self.id_key).digest()

    def to_json(self) -> bytes:
        return json.dumps(
            {"encrypt": _b64(self.encryption), "id": _b64(self.id_key)}, sort_keys=True
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> MasterKey:
        try:
            obj = json.loads(data)
            return cls(_unb64(obj["encrypt"]), _unb64(obj["id"]))
        except (ValueError, KeyError, TypeError) as e:
            raise FormatError(f"master key record is malformed: {e}") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _derive(password: bytes, salt: bytes, params: KdfParams) -> AESGCM:
    kdf = Argon2id(
        salt=salt,
        length=KEY_SIZE,
        iterations=params.iterations,
        lanes=params.lanes,
        memory_cost=params.memory_kib,
    )
    return AESGCM(kdf.derive(password))


def wrap_key(master: MasterKey, password: bytes, meta: dict[str, str], params: KdfParams) -> bytes:
    """Return the bytes of a key file (JSON) sealing ``master`` under ``password``."""
    salt = os.urandom(16)
    sealed = seal(_derive(password, salt, params), master.to_json(), KEYFILE_AAD)
    doc = {
        "version": 1,
        "kdf": "argon2id",
        "salt": _b64(salt),
        "iterations": params.iterations,
        "memory_kib": params.memory_kib,
        "lanes": params.lanes,
        **meta,
        "data": _b64(sealed),
    }
    return json.dumps(doc, indent=1, sort_keys=True).encode()


def unwrap_key(keyfile: bytes, password: bytes) -> MasterKey:
    """Open a key file; WrongPassword if the password does not fit it."""
    try:
        doc = json.loads(keyfile)
        if not isinstance(doc, dict):
            raise FormatError("key file is not a JSON object")
        if doc.get("version") != 1 or doc.get("kdf") != "argon2id":
            raise FormatError("unsupported key file version")
        params = KdfParams(int(doc["iterations"]), int(doc["memory_kib"]), int(doc["lanes"]))
        salt, sealed = _unb64(doc["salt"]), _unb64(doc["data"])
        kek = _derive(password, salt, params)
    except (ValueError, KeyError, TypeError) as e:
        raise FormatError(f"key file is malformed: {e}") from None
    try:
        plain = open_sealed(kek, sealed, KEYFILE_AAD)
    except IntegrityError:
        raise WrongPassword(
            "wrong password (no key file of the repository opens with it)"
        ) from None
    return MasterKey.from_json(plain)
