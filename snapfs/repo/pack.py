"""Building packs (many sealed blobs, then the sealed header, then its length) and
reading their headers back. Sync; a PackBuilder belongs to one thread at a time.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from snapfs.crypto import MasterKey, open_sealed, seal
from snapfs.errors import FormatError
from snapfs.repo.format import (
    AAD_PACK_HEADER,
    U32,
    BlobLocation,
    PackEntry,
    decode_pack_header,
    encode_pack_header,
    object_id,
    pack_locations,
)


@dataclass(slots=True)
class FinishedPack:
    id: bytes
    data: bytes
    blobs: list[tuple[bytes, BlobLocation]]


@dataclass(slots=True)
class PackBuilder:
    """Blobs are copied into one growing buffer as they come, and ``getvalue`` hands that
    buffer over without a copy: a list of parts joined at the end held the pack twice."""

    blob_type: int
    buffer: io.BytesIO = field(default_factory=io.BytesIO)
    entries: list[PackEntry] = field(default_factory=list)
    size: int = 0

    @property
    def parts(self) -> list[bytes]:
        """The blobs added since the last ``finish``, as one part (none when empty)."""
        return [self.buffer.getvalue()] if self.entries else []

    def add(self, blob_id: bytes, sealed: bytes | memoryview, raw_length: int) -> None:
        self.buffer.write(sealed)
        self.entries.append(PackEntry(self.blob_type, blob_id, len(sealed), raw_length))
        self.size += len(sealed)

    def finish(self, key: MasterKey) -> FinishedPack:
        header = seal(key.cipher, encode_pack_header(self.entries), AAD_PACK_HEADER)
        self.buffer.write(header)
        self.buffer.write(U32.pack(len(header)))
        data = self.buffer.getvalue()
        pack_id = object_id(data)
        blobs = pack_locations(pack_id, self.entries)
        self.buffer, self.entries, self.size = io.BytesIO(), [], 0
        return FinishedPack(pack_id, data, blobs)


def read_pack_header(
    key: MasterKey, pack_id: bytes, tail: bytes
) -> list[tuple[bytes, BlobLocation]]:
    """Decode a header from the pack's last bytes (``tail`` must hold all of it)."""
    if len(tail) < U32.size:
        raise FormatError("pack is too short to hold a header")
    (hlen,) = U32.unpack_from(tail, len(tail) - U32.size)
    if hlen + U32.size > len(tail):
        raise FormatError("pack header is longer than the bytes read")
    sealed = tail[len(tail) - U32.size - hlen : len(tail) - U32.size]
    return pack_locations(
        pack_id, decode_pack_header(open_sealed(key.cipher, sealed, AAD_PACK_HEADER))
    )
