"""Where repository objects live: a small byte-moving interface and its backends.

Backends only move opaque, already-encrypted bytes; they know nothing of the format.
"""

from snapfs.store.base import Store, open_store

__all__ = ["Store", "open_store"]
