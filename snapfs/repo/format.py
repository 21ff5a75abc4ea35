"""Binary layouts of repository objects, mirroring docs/format.md section by section.

Pure functions: no I/O, no keys beyond what is passed in. Every decoder rejects input
that does not follow the layout with FormatError rather than guessing.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from snapfs.errors import FormatError

FORMAT_VERSION = 1
ID_SIZE = 32

BLOB_DATA = 0
BLOB_TREE = 1
BLOB_TYPES = (BLOB_DATA, BLOB_TREE)

PAYLOAD_RAW = 0
PAYLOAD_ZSTD = 1

AAD_CONFIG = b"snapfs config v1"
AAD_PACK_HEADER = b"snapfs pack header v1"
AAD_INDEX = b"snapfs index v1"
AAD_SNAPSHOT = b"snapfs snapshot v1"
AAD_LOCK = b"snapfs lock v1"

PACK_HEADER_MAGIC = b"SNPH\x01"
INDEX_MAGIC = b"SNPI\x01"
_HEADER_ENTRY = struct.Struct("<B32sII")  # type, id, stored length, raw length
_INDEX_ENTRY = struct.Struct("<B32sIII")  # type, id, offset, stored length, raw length
_U32 = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class PackEntry:
    """One blob as a pack header lists it; offsets follow from the order."""

    type: int
    id: bytes
    length: int
    raw_length: int


@dataclass(frozen=True, slots=True)
class BlobLocation:
    type: int
    pack: bytes
    offset: int
    length: int
    raw_length: int


def object_id(data: bytes) -> bytes:
    """Name of a content-addressed file: SHA-256 of its stored bytes (checkable keyless)."""
    return hashlib.sha256(data).digest()


def pack_name(pack_id: bytes) -> str:
    h = pack_id.hex()
    return f"data/{h[:2]}/{h}"


def index_name(index_id: bytes) -> str:
    return f"index/{index_id.hex()}"


def snapshot_name(snapshot_id: bytes) -> str:
    return f"snapshots/{snapshot_id.hex()}"


def id_from_name(name: str) -> bytes:
    try:
        raw = bytes.fromhex(name.rsplit("/", 1)[-1])
    except ValueError:
        raise FormatError(f"object name {name!r} is not an id") from None
    if len(raw) != ID_SIZE:
        raise FormatError(f"object name {name!r} is not an id")
    return raw


def encode_pack_header(entries: list[PackEntry]) -> bytes:
    parts = [PACK_HEADER_MAGIC, _U32.pack(len(entries))]
    parts += [_HEADER_ENTRY.pack(e.type, e.id, e.length, e.raw_length) for e in entries]
    return b"".join(parts)


def decode_pack_header(data: bytes) -> list[PackEntry]:
    if not data.startswith(PACK_HEADER_MAGIC):
        raise FormatError("pack header has a wrong magic or version")
    pos = len(PACK_HEADER_MAGIC)
    if len(data) < pos + _U32.size:
        raise FormatError("pack header is truncated")
    (count,) = _U32.unpack_from(data, pos)
    pos += _U32.size
    if len(data) != pos + count * _HEADER_ENTRY.size:
        raise FormatError("pack header length does not match its entry count")
    entries = []
    for t, blob_id, length, raw in _HEADER_ENTRY.iter_unpack(data[pos:]):
        _check_type(t)
        entries.append(PackEntry(t, blob_id, length, raw))
    return entries


def pack_locations(pack_id: bytes, entries: list[PackEntry]) -> list[tuple[bytes, BlobLocation]]:
    """Turn a header's entries into index records (offsets are cumulative lengths)."""
    out, offset = [], 0
    for e in entries:
        out.append((e.id, BlobLocation(e.type, pack_id, offset, e.length, e.raw_length)))
        offset += e.length
    return out


def encode_index(
    packs: dict[bytes, list[tuple[bytes, BlobLocation]]], supersedes: list[bytes]
) -> bytes:
    parts = [INDEX_MAGIC, _U32.pack(len(supersedes)), *supersedes, _U32.pack(len(packs))]
    for pack_id, blobs in packs.items():
        parts += [pack_id, _U32.pack(len(blobs))]
        parts += [
            _INDEX_ENTRY.pack(loc.type, bid, loc.offset, loc.length, loc.raw_length)
            for bid, loc in blobs
        ]
    return b"".join(parts)


def decode_index(data: bytes) -> tuple[list[tuple[bytes, BlobLocation]], list[bytes]]:
    """Return (blob id, location) pairs and the ids of index files this one supersedes."""
    try:
        if not data.startswith(INDEX_MAGIC):
            raise FormatError("index file has a wrong magic or version")
        pos = len(INDEX_MAGIC)
        (n_sup,) = _U32.unpack_from(data, pos)
        pos += _U32.size
        if pos + n_sup * ID_SIZE > len(data):
            raise FormatError("index file is truncated")
        supersedes = [data[pos + i * ID_SIZE : pos + (i + 1) * ID_SIZE] for i in range(n_sup)]
        pos += n_sup * ID_SIZE
        (n_packs,) = _U32.unpack_from(data, pos)
        pos += _U32.size
        blobs: list[tuple[bytes, BlobLocation]] = []
        for _ in range(n_packs):
            pack_id = data[pos : pos + ID_SIZE]
            (count,) = _U32.unpack_from(data, pos + ID_SIZE)
            pos += ID_SIZE + _U32.size
            for _ in range(count):
                t, bid, off, length, raw = _INDEX_ENTRY.unpack_from(data, pos)
                pos += _INDEX_ENTRY.size
                _check_type(t)
                blobs.append((bid, BlobLocation(t, pack_id, off, length, raw)))
    except struct.error:
        raise FormatError("index file is truncated") from None
    if pos != len(data) or any(len(s) != ID_SIZE for s in supersedes):
        raise FormatError("index file has trailing or missing bytes")
    return blobs, supersedes


def _check_type(t: int) -> None:
    if t not in BLOB_TYPES:
        raise FormatError(f"unknown blob type {t}")


U32 = _U32
