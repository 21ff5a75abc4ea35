"""The FUSE front end: a thin pyfuse3 adapter on trio over snapfs.vfs.

The only package that imports pyfuse3 or trio; nothing imports it but the CLI's mount
command, so ``snapfs init`` never needs libfuse.
"""
