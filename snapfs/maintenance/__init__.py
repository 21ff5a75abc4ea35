"""Living with a repository: retention, prune, check, copy, diff, stats, keys.

Sync; every module here works through the Repository facade and the vfs tree walker.
"""
