"""Keys and authenticated encryption. Sync, thread-safe, no I/O."""

from snapfs.crypto.aead import open_sealed, seal
from snapfs.crypto.keys import KdfParams, MasterKey, unwrap_key, wrap_key

__all__ = ["KdfParams", "MasterKey", "open_sealed", "seal", "unwrap_key", "wrap_key"]
