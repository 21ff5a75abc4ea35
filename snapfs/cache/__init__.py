"""The local, derived cache. Deleting it loses nothing; see snapfs.cache.lmdbstore."""

from snapfs.cache.lmdbstore import Cache, default_cache_root

__all__ = ["Cache", "default_cache_root"]
