"""Sealing and opening one blob: flag byte + payload (raw or zstd), AES-GCM, id as AAD.

Sync, thread-safe; this is the CPU-heavy step of both the writer and every reader.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from snapfs.compress import compress, decompress
from snapfs.crypto import MasterKey, open_sealed, seal
from snapfs.crypto.aead import NONCE_SIZE, OVERHEAD
from snapfs.errors import FormatError, IntegrityError
from snapfs.repo.format import PAYLOAD_RAW, PAYLOAD_ZSTD

_RAW = bytes([PAYLOAD_RAW])
_ZSTD = bytes([PAYLOAD_ZSTD])


def seal_blob(key: MasterKey, blob_id: bytes, data: bytes, level: int) -> bytes:
    """Compress when it saves space (1/32 at least), else store raw, then seal."""
    flag, body = _payload_body(data, level)
    return seal(key.cipher, flag + body, blob_id)


def _payload_body(data: bytes, level: int) -> tuple[bytes, bytes]:
    if level > 0 and len(data) > 64:
        packed = compress(data, level)
        if len(packed) < len(data) - (len(data) >> 5):
            return _ZSTD, packed
    return _RAW, data


def seal_blob_into(key: MasterKey, blob_id: bytes, data: bytes, level: int, out: bytearray) -> int:
    """``seal_blob`` written into ``out`` (grown when too small); returns the sealed length.

    The same bytes as ``seal_blob`` without its three chunk-sized temporaries (flag +
    data, ciphertext, nonce + ciphertext): a writer reusing one buffer per thread keeps
    the heap from filling with freed chunk-sized holes."""
    flag, body = _payload_body(data, level)
    size = 1 + len(body) + OVERHEAD
    if len(out) < size:
        out.extend(bytes(size - len(out)))
    nonce = os.urandom(NONCE_SIZE)
    enc = Cipher(algorithms.AES(key.encryption), modes.GCM(nonce)).encryptor()
    enc.authenticate_additional_data(blob_id)
    with memoryview(out) as view:
        view[:NONCE_SIZE] = nonce
        enc.update_into(flag, view[NONCE_SIZE:])
        enc.update_into(body, view[NONCE_SIZE + 1 :])
        enc.finalize()
        view[size - len(enc.tag) : size] = enc.tag
    return size


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
