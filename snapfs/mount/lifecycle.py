"""A mount from start to end in one place: checks, FUSE session, trio nursery, signals,
and an unmount only when the end is an orderly one.

After an unexpected crash the kernel mount is left in place on purpose: it then answers
ENOTCONN instead of looking like an empty directory, which an rsync mirror would take as
"everything deleted". ``snapfs umount`` clears it.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from snapfs.cache import Cache
from snapfs.cache.lmdbstore import VFS_TABLES
from snapfs.errors import UsageError

if TYPE_CHECKING:
    from snapfs.mount.operations import SnapfsOperations
    from snapfs.repo.repository import Repository

log = logging.getLogger(__name__)

MiB = 1 << 20
FUSE_DEVICE = "/dev/fuse"


@dataclass(frozen=True, slots=True)
class MountOptions:
    cache_bytes: int = 64 * MiB
    allow_other: bool = False
    max_tasks: int = 64
    disk_cache_bytes: int = 1 << 30


def mounted_fuse(path: str) -> str | None:
    """The file system type if ``path`` is a FUSE mount point, else None."""
    real = os.path.realpath(path)
    with open("/proc/mounts", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            mnt = fields[1].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
            if mnt == real and fields[2].startswith("fuse"):
                return fields[2]
    return None


def check_mountpoint(path: str, repo_root: str | None) -> str:
    """The absolute mount point, or UsageError saying exactly what is wrong with it."""
    mnt = os.path.abspath(path)
    if not os.path.exists(FUSE_DEVICE):
        raise UsageError(f"{FUSE_DEVICE} is missing: FUSE is not available on this machine")
    if os.path.ismount(mnt) or mounted_fuse(mnt):
        raise UsageError(f"{mnt} is busy: something is already mounted there")
    if not os.path.isdir(mnt):
        what = "does not exist" if not os.path.lexists(mnt) else "is not a directory"
        raise UsageError(f"mount point {mnt} {what}")
    try:
        if os.listdir(mnt):
            raise UsageError(f"mount point {mnt} is not empty")
    except PermissionError:
        raise UsageError(f"mount point {mnt} cannot be read") from None
    if repo_root is not None:
        real_mnt, real_repo = os.path.realpath(mnt), os.path.realpath(repo_root)
        if real_mnt == real_repo or real_mnt.startswith(real_repo.rstrip("/") + "/"):
            raise UsageError(f"mount point {mnt} is inside the repository")
    return mnt


def serve(
    opened: Callable[[], Repository],
    mountpoint: str,
    options: MountOptions,
    ready: Callable[[], None],
) -> None:
    """Mount, call ``ready`` once the kernel has the mount, serve until unmounted or
    signalled (SIGINT, SIGTERM, SIGHUP), then unmount.

    The FUSE modules are imported here, not at the top (where the mount point checks
    must stay cheap), and ``opened`` is asked for the repository only after them: the
    imports take about as long as the password's key derivation, so a caller can open
    the repository in a thread meanwhile."""
    import pyfuse3
    import trio

    from snapfs.mount.chunkcache import ChunkCache
    from snapfs.mount.offload import Limiters
    from snapfs.mount.operations import SnapfsOperations
    from snapfs.vfs.filesystem import SnapshotFS

    repo = opened()
    vfs_cache = Cache(Path(repo.cache.path) / "vfs", tables=VFS_TABLES, durable=False)
    try:
        limiters = Limiters.create()
        fs = SnapshotFS(repo, vfs_cache)
        chunks = ChunkCache(repo, limiters, options.cache_bytes)
        ops = SnapfsOperations(fs, chunks, limiters, pyfuse3.notify_store)
        ops.xattrs_enabled = fs.may_hold_xattrs()
        if not ops.xattrs_enabled:
            log.info("no snapshot holds extended attributes: xattr requests are switched off")
        trio.run(_serve, ops, mountpoint, options, ready)
    finally:
        vfs_cache.close()


async def _serve(
    ops: SnapfsOperations, mountpoint: str, options: MountOptions, ready: Callable[[], None]
) -> None:
    import pyfuse3
    import trio

    fuse_options = set(pyfuse3.default_options) | {"fsname=snapfs", "subtype=snapfs", "ro"}
    if options.allow_other:
        fuse_options.add("allow_other")
    pyfuse3.init(ops, mountpoint, fuse_options)
    orderly = False
    try:
        async with trio.open_nursery() as nursery:
            ops.nursery = nursery
            nursery.start_soon(_stop_on_signals)
            ready()
            await pyfuse3.main(max_tasks=options.max_tasks)
            orderly = True
            nursery.cancel_scope.cancel()
    finally:
        pyfuse3.close(unmount=orderly)
        log.info("unmounted %s", mountpoint) if orderly else None


async def _stop_on_signals() -> None:
    import pyfuse3
    import trio

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("received %s, unmounting", signal.Signals(signum).name)
            pyfuse3.terminate()
            return
