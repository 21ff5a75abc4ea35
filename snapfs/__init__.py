"""snapfs: deduplicated, compressed, encrypted backups whose restore is browsing.

The package root imports nothing heavy, so `snapfs init` never needs libfuse.
"""

__version__ = "0.1.0"
