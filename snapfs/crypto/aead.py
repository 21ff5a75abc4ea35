"""AES-256-GCM sealing with random 96-bit nonces.

Sealed layout: nonce (12) || ciphertext || tag (16). The associated data binds a sealed
object to its role (a blob to its id, a snapshot to the word "snapshot"), so a valid
ciphertext moved to another place fails to open.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from snapfs.errors import IntegrityError

NONCE_SIZE = 12
TAG_SIZE = 16
OVERHEAD = NONCE_SIZE + TAG_SIZE


def seal(cipher: AESGCM, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_SIZE)
    return nonce + cipher.encrypt(nonce, plaintext, aad)


def open_sealed(cipher: AESGCM, sealed: bytes | memoryview, aad: bytes) -> bytes:
    """Decrypt or raise IntegrityError; never returns unauthenticated bytes."""
    if len(sealed) < OVERHEAD:
        raise IntegrityError("sealed object too short")
    view = memoryview(sealed)
    try:
        return cipher.decrypt(bytes(view[:NONCE_SIZE]), view[NONCE_SIZE:], aad)
    except InvalidTag:
        raise IntegrityError("authentication failed (corrupted or tampered data)") from None
