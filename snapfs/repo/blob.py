"""Sealing and opening one blob: flag byte + payload (raw or zstd), AES-GCM, id as AAD.

Sync, thread-safe; this is the CPU-heavy step of both the writer and every reader.
"""

from __future__ import annotations

from snapfs.compress import compress, decompress
from snapfs.crypto import MasterKey, open_sealed, seal
from snapfs.errors import FormatError, IntegrityError
from snapfs.repo.format import PAYLOAD_RAW, PAYLOAD_ZSTD

_RAW = bytes([PAYLOAD_RAW])
_ZSTD = bytes([PAYLOAD_ZSTD])


def seal_blob(key: MasterKey, blob_id: bytes, data: bytes, level: int) -> bytes:
    """Compress when it saves space (1/32 at least), else store raw, then seal."""
    payload = _RAW + data
    if level > 0 and len(data) > 64:
        packed = compress(data, level)
        if len(packed) < len(data) - (len(data) >> 5):
            payload = _ZSTD + packed
    return seal(key.cipher, payload, blob_id)


def open_blob(key: MasterKey, blob_id: bytes, sealed: bytes | memoryview, raw_length: int) -> bytes:
    """Return the plaintext of a blob, or raise IntegrityError — never wrong bytes."""
    payload = open_sealed(key.cipher, sealed, blob_id)
    flag, body = payload[:1], memoryview(payload)[1:]
    if flag == _RAW:
        data = bytes(body)
    elif flag == _ZSTD:
        data = decompress(body, raw_length)
    else:
        raise FormatError(f"blob {blob_id.hex()[:16]} has an unknown payload flag")
    if len(data) != raw_length or key.blob_id(data) != blob_id:
        raise IntegrityError(f"blob {blob_id.hex()[:16]} does not match its id")
    return data
