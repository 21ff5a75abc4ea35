"""The repository config: identity and the parameters every writer must share."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass

from snapfs.errors import FormatError
from snapfs.repo.format import FORMAT_VERSION

MiB = 1 << 20


@dataclass(frozen=True, slots=True)
class RepoConfig:
    id: str
    chunker_min: int
    chunker_avg: int
    chunker_max: int
    chunker_seed: int
    compression: int
    pack_size: int
    version: int = FORMAT_VERSION

    @classmethod
    def new(cls, compression: int = 3, pack_size: int = 16 * MiB) -> RepoConfig:
        # pyfastcdc's average is avg + min; these give ~1 MiB chunks on random data.
        return cls(
            id=secrets.token_hex(32),
            chunker_min=256 * 1024,
            chunker_avg=768 * 1024,
            chunker_max=4 * MiB,
            chunker_seed=int.from_bytes(os.urandom(7), "little") | 1,
            compression=compression,
            pack_size=pack_size,
        )

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RepoConfig:
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict):
                raise FormatError("repository config is not a JSON object")
            cfg = cls(**{k: v for k, v in doc.items() if k in cls.__dataclass_fields__})
        except (ValueError, TypeError) as e:
            raise FormatError(f"repository config is malformed: {e}") from None
        if cfg.version != FORMAT_VERSION:
            raise FormatError(f"repository format version {cfg.version} is not supported")
        return cfg
