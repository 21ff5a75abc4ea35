"""The FUSE-free view of snapshots: path lookup, listing and file reading over trees.

Serves restore and ls now, and the mount later, so a fix is made once.
"""
