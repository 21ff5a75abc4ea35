"""Snapshot manifests: the small record that makes a snapshot exist.

A manifest is written last, after every pack and index file it depends on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from snapfs.errors import FormatError


@dataclass(slots=True)
class Snapshot:
    time_ns: int
    host: str
    username: str
    paths: list[str]
    tree: bytes
    tags: list[str] = field(default_factory=list)
    parent: bytes | None = None
    excludes: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    program_version: str = ""
    original: bytes | None = None  # set by copy: the snapshot this one was copied from
    id: bytes = b""

    @property
    def short_id(self) -> str:
        return self.id.hex()[:8]

    @property
    def time(self) -> datetime:
        """Exact to the microsecond, truncated (never rounded into the next second)."""
        seconds, ns = divmod(self.time_ns, 1_000_000_000)
        return datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=ns // 1000)

    def to_json(self) -> bytes:
        d = asdict(self)
        del d["id"]
        d["version"] = 1
        d["time"] = self.time.isoformat().replace("+00:00", "Z")
        d["tree"] = self.tree.hex()
        d["parent"] = self.parent.hex() if self.parent else None
        if self.original is None:
            del d["original"]  # only copies carry it
        else:
            d["original"] = self.original.hex()
        return json.dumps(d, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, snapshot_id: bytes) -> Snapshot:
        try:
            d = json.loads(data)
            if not isinstance(d, dict) or d.pop("version", None) != 1:
                raise FormatError("unsupported snapshot version")
            d.pop("time", None)
            d["tree"] = bytes.fromhex(d["tree"])
            d["parent"] = bytes.fromhex(d["parent"]) if d.get("parent") else None
            d["original"] = _optional_id(d.get("original"))
            known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
            return cls(**known, id=snapshot_id)
        except (ValueError, TypeError, KeyError) as e:
            raise FormatError(f"snapshot manifest is malformed: {e}") from None


def _optional_id(value: object) -> bytes | None:
    """An informational id: anything but 64 hex digits reads as absent, never as an error."""
    if not isinstance(value, str) or len(value) != 64:
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None
