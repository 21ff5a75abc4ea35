"""The Repository facade: opening with a password, the blob index, reading blobs and
trees, listing and saving snapshots.

Sync and thread-safe after ``open``; callers on an event loop offload every method.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import struct
from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from threading import Lock

from snapfs import __version__
from snapfs.cache import Cache, default_cache_root
from snapfs.cache.diskcache import DiskCache
from snapfs.compress import compress, decompress
from snapfs.crypto import KdfParams, MasterKey, open_sealed, seal, unwrap_key, wrap_key
from snapfs.errors import (
    FormatError,
    IntegrityError,
    ObjectNotFound,
    RepositoryExists,
    RepositoryNotFound,
    SnapshotNotFound,
    WrongPassword,
)
from snapfs.repo.config import RepoConfig
from snapfs.repo.fetch import BlobFetcher
from snapfs.repo.format import (
    AAD_CONFIG,
    AAD_INDEX,
    AAD_SNAPSHOT,
    BLOB_TREE,
    BlobLocation,
    decode_index,
    encode_index,
    id_from_name,
    index_name,
    object_id,
    snapshot_name,
)
from snapfs.repo.snapshot import Snapshot
from snapfs.repo.tree import Node, decode_tree
from snapfs.store import Store

log = logging.getLogger(__name__)

CONFIG = "config"
_LOC = struct.Struct("<B32sIII")
TREE_CACHE_ENTRIES = 256


def _encode_loc(loc: BlobLocation) -> bytes:
    return _LOC.pack(loc.type, loc.pack, loc.offset, loc.length, loc.raw_length)


def _decode_loc(raw: bytes) -> BlobLocation:
    return BlobLocation(*_LOC.unpack(raw))


def key_file_meta() -> dict[str, str]:
    return {
        "created": datetime.now(UTC).isoformat(),
        "host": socket.gethostname(),
        "username": _username(),
    }


def _username() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def init_repository(
    store: Store, password: bytes, config: RepoConfig, kdf: KdfParams | None = None
) -> RepoConfig:
    """Write a key file, then the config (its presence is what makes a repository)."""
    if store.exists(CONFIG):
        raise RepositoryExists(f"a repository already exists at {store.location}")
    key = MasterKey.generate()
    keyfile = wrap_key(key, password, key_file_meta(), kdf or KdfParams())
    store.put(f"keys/{object_id(keyfile).hex()}", keyfile)
    store.put(CONFIG, seal(key.cipher, config.to_json(), AAD_CONFIG))
    return config


DEFAULT_DISK_CACHE = 1 << 30


class Repository:
    key_name: str = ""  # the key file the password opened (``keys/<hex>``), set by open

    def __init__(
        self,
        store: Store,
        key: MasterKey,
        config: RepoConfig,
        cache: Cache,
        disk_cache_bytes: int = DEFAULT_DISK_CACHE,
    ) -> None:
        self.key, self.config, self.cache = key, config, cache
        remote = getattr(store, "remote", False)
        disk = (
            DiskCache(cache.path / "blobs", disk_cache_bytes)
            if remote and disk_cache_bytes
            else None
        )
        self.fetcher = BlobFetcher(store, key, disk)
        self.store = store
        self._trees: OrderedDict[bytes, list[Node]] = OrderedDict()
        self._trees_lock = Lock()

    @classmethod
    def open(
        cls,
        store: Store,
        password: bytes,
        cache_root: Path | None = None,
        disk_cache_bytes: int = DEFAULT_DISK_CACHE,
    ) -> Repository:
        try:
            sealed_config = store.get(CONFIG)
        except ObjectNotFound:
            raise RepositoryNotFound(f"no snapfs repository at {store.location}") from None
        key, key_name = _open_key(store, password)
        config = RepoConfig.from_json(open_sealed(key.cipher, sealed_config, AAD_CONFIG))
        cache = Cache((cache_root or default_cache_root()) / config.id)
        repo = cls(store, key, config, cache, disk_cache_bytes)
        repo.key_name = key_name
        try:
            repo.sync_index()
        except BaseException:
            repo.close()
            raise
        return repo

    @property
    def store(self) -> Store:
        return self._store

    @store.setter
    def store(self, store: Store) -> None:
        """Swapping the store (a counting or test wrapper) swaps it for fetches too."""
        self._store = store
        self.fetcher.store = store

    def close(self) -> None:
        if self.fetcher.disk is not None:
            self.fetcher.disk.close()
        self.cache.close()

    # -- index ---------------------------------------------------------------------------

    def sync_index(self) -> int:
        """Bring the cached blob index up to the repository's index files; return how many
        files were read. Packs are never downloaded for this."""
        present = {name.rsplit("/", 1)[-1].encode() for name, _ in self.store.list("index/")}
        loaded = set(self.cache.keys("index_files"))
        if loaded - present:  # an index file was removed (prune): rebuild from scratch
            for table in ("blobs", "index_files", "treepacks"):
                self.cache.clear(table)
            loaded = set()
        new = sorted(present - loaded)
        for name in new:
            try:
                blobs = self.read_index_file(name.decode())
            except (IntegrityError, FormatError) as e:
                # one damaged file must not lock out the rest (and `check`, which names it)
                log.warning("skipping index file %s: %s", name.decode()[:16], e)
                continue
            self._cache_blobs(blobs)
            self.cache.put_many("index_files", [(name, b"")])
        if new:
            log.debug("loaded %d index files", len(new))
        return len(new)

    def read_index_file(self, hexname: str) -> list[tuple[bytes, BlobLocation]]:
        data = self.store.get(f"index/{hexname}")
        if object_id(data).hex() != hexname:
            raise IntegrityError(f"index file {hexname[:16]} does not match its name")
        blobs, _ = decode_index(decompress(open_sealed(self.key.cipher, data, AAD_INDEX)))
        return blobs

    def write_index_file(self, packs: dict[bytes, list[tuple[bytes, BlobLocation]]]) -> None:
        """Store an index file for these packs, then add it to the cache."""
        data = seal(self.key.cipher, compress(encode_index(packs, []), 3), AAD_INDEX)
        iid = object_id(data)
        self.store.put(index_name(iid), data)
        self._cache_blobs([b for entries in packs.values() for b in entries])
        self.cache.put_many("index_files", [(iid.hex().encode(), b"")])

    def _cache_blobs(self, blobs: list[tuple[bytes, BlobLocation]]) -> None:
        """Blob locations, and per pack its tree blobs (for fetching a tree pack whole)."""
        self.cache.put_tables(
            [("blobs", bid, _encode_loc(loc)) for bid, loc in blobs]
            + [("treepacks", loc.pack + bid, b"") for bid, loc in blobs if loc.type == BLOB_TREE]
        )

    def lookup(self, blob_id: bytes) -> BlobLocation | None:
        raw = self.cache.get("blobs", blob_id)
        return None if raw is None else _decode_loc(raw)

    def has_blobs(self, blob_ids: Iterable[bytes]) -> bool:
        return self.cache.contains_all("blobs", blob_ids)

    # -- blobs and trees -------------------------------------------------------------------

    def read_blob(self, blob_id: bytes) -> bytes:
        loc = self.lookup(blob_id)
        if loc is None:
            raise IntegrityError(f"blob {blob_id.hex()[:16]} is not in the repository index")
        if loc.type == BLOB_TREE and self.fetcher.disk is not None:
            self._fetch_tree_pack(blob_id, loc)
        return self.open_blob_at(blob_id, loc)

    def _fetch_tree_pack(self, blob_id: bytes, loc: BlobLocation) -> None:
        """Remote store: one tree missing from the disk cache brings all trees of its
        pack, in a few large ranged reads — a directory walk then costs no request per
        directory. Sync; runs in the worker thread that asked for the tree."""
        assert self.fetcher.disk is not None
        if self.fetcher.disk.get(blob_id) is not None:
            return
        ids = [k[32:] for k, _ in self.cache.scan("treepacks", loc.pack, b"", 1 << 20)]
        located = [(i, found) for i in ids if (found := self.lookup(i)) is not None]
        if located:
            self.fetcher.sealed_many(located)

    def open_blob_at(self, blob_id: bytes, loc: BlobLocation) -> bytes:
        try:
            return self.fetcher.read(blob_id, loc)
        except IntegrityError as e:
            raise IntegrityError(f"pack {loc.pack.hex()[:16]}: {e}") from None

    def read_tree(self, tree_id: bytes) -> list[Node]:
        with self._trees_lock:
            nodes = self._trees.get(tree_id)
            if nodes is not None:
                self._trees.move_to_end(tree_id)
                return nodes
        nodes = decode_tree(self.read_blob(tree_id))
        with self._trees_lock:
            self._trees[tree_id] = nodes
            if len(self._trees) > TREE_CACHE_ENTRIES:
                self._trees.popitem(last=False)
        return nodes

    # -- snapshots -------------------------------------------------------------------------

    def list_snapshots(self) -> list[Snapshot]:
        """All snapshots, oldest first. Decrypted manifests are cached by name."""
        names = [n for n, _ in self.store.list("snapshots/")]
        keys = [n.rsplit("/", 1)[-1].encode() for n in names]
        cached = self.cache.get_many("snapshots", keys)
        out, fresh = [], []
        for name, key, cached_plain in zip(names, keys, cached, strict=True):
            plain = cached_plain
            if plain is None:
                try:
                    data = self.store.get(name)
                except ObjectNotFound:
                    continue  # forgotten meanwhile
                if object_id(data).hex() != key.decode():
                    raise IntegrityError(f"snapshot {key.decode()[:8]} does not match its name")
                plain = open_sealed(self.key.cipher, data, AAD_SNAPSHOT)
                fresh.append((key, plain))
            out.append(Snapshot.from_json(plain, id_from_name(name)))
        if fresh:
            self.cache.put_many("snapshots", fresh)
        out.sort(key=lambda s: (s.time_ns, s.id))
        return out

    def find_snapshot(self, ref: str) -> Snapshot:
        """Resolve ``latest`` or an id prefix of at least 8 hex digits."""
        snaps = self.list_snapshots()
        if ref == "latest":
            if not snaps:
                raise SnapshotNotFound("the repository has no snapshots yet")
            return snaps[-1]
        ref_l = ref.lower()
        if len(ref_l) < 8 or any(c not in "0123456789abcdef" for c in ref_l):
            raise SnapshotNotFound(f"{ref!r} is not 'latest' or a snapshot id (8+ hex digits)")
        found = [s for s in snaps if s.id.hex().startswith(ref_l)]
        if not found:
            raise SnapshotNotFound(f"no snapshot with id {ref}")
        if len(found) > 1:
            raise SnapshotNotFound(f"snapshot id {ref} is ambiguous; give more digits")
        return found[0]

    def save_snapshot(self, snap: Snapshot) -> bytes:
        snap.program_version = f"snapfs {__version__}"
        data = seal(self.key.cipher, snap.to_json(), AAD_SNAPSHOT)
        sid = object_id(data)
        self.store.put(snapshot_name(sid), data)
        snap.id = sid
        return sid


def _open_key(store: Store, password: bytes) -> tuple[MasterKey, str]:
    names = [n for n, _ in store.list("keys/")]
    if not names:
        raise FormatError(f"repository at {store.location} has no key files")
    damaged = []
    for name in names:
        try:
            return unwrap_key(store.get(name), password), name
        except WrongPassword:
            continue
        except (FormatError, ObjectNotFound) as e:  # one bad key file must not lock all out
            damaged.append(f"{name}: {e}")
    if damaged and len(damaged) == len(names):
        raise FormatError(f"no usable key file: {damaged[0]}")
    raise WrongPassword("wrong password (no key file of the repository opens with it)")
