"""Binary and JSON layouts of repository objects: pack headers, index files, blobs, trees,
snapshot manifests and the repository config."""

from __future__ import annotations

import base64
import json
import os
import random
from collections.abc import Callable
from typing import Any

import pytest

from snapfs.crypto import MasterKey
from snapfs.crypto.aead import OVERHEAD
from snapfs.errors import FormatError, IntegrityError
from snapfs.repo.blob import open_blob, seal_blob
from snapfs.repo.config import RepoConfig
from snapfs.repo.format import (
    BLOB_DATA,
    BLOB_TREE,
    FORMAT_VERSION,
    INDEX_MAGIC,
    PACK_HEADER_MAGIC,
    BlobLocation,
    PackEntry,
    decode_index,
    decode_pack_header,
    encode_index,
    encode_pack_header,
    id_from_name,
    object_id,
    pack_locations,
    pack_name,
)
from snapfs.repo.pack import PackBuilder, read_pack_header
from snapfs.repo.snapshot import Snapshot
from snapfs.repo.tree import (
    BLOCKDEV,
    CHARDEV,
    DIR,
    FIFO,
    FILE,
    SOCKET,
    SYMLINK,
    Node,
    decode_tree,
    encode_tree,
)

RNG = random.Random(20240501)


def _id() -> bytes:
    return RNG.randbytes(32)


@pytest.fixture(scope="module")
def key() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture
def entries() -> list[PackEntry]:
    return [
        PackEntry(BLOB_DATA, _id(), 1000, 990),
        PackEntry(BLOB_TREE, _id(), 77, 300),
        PackEntry(BLOB_DATA, _id(), 2**32 - 1, 2**32 - 1),
    ]


@pytest.fixture
def index_packs() -> dict[bytes, list[tuple[bytes, BlobLocation]]]:
    out: dict[bytes, list[tuple[bytes, BlobLocation]]] = {}
    for n_blobs in (3, 1, 0):
        pack = _id()
        out[pack] = [
            (_id(), BlobLocation(BLOB_DATA if i % 2 else BLOB_TREE, pack, i * 100, 100, 90 + i))
            for i in range(n_blobs)
        ]
    return out


# -- pack headers ------------------------------------------------------------------------


def test_pack_header_round_trip(entries: list[PackEntry]) -> None:
    assert decode_pack_header(encode_pack_header(entries)) == entries


def test_empty_pack_header_round_trip() -> None:
    assert decode_pack_header(encode_pack_header([])) == []


def test_truncated_pack_header_raises_format_error(entries: list[PackEntry]) -> None:
    data = encode_pack_header(entries)
    for cut in range(len(data)):
        with pytest.raises(FormatError):
            decode_pack_header(data[:cut])


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"SNPH\x02" + bytes(4),
        b"XXXX\x01" + bytes(4),
        PACK_HEADER_MAGIC + (1).to_bytes(4, "little"),
        PACK_HEADER_MAGIC + (0).to_bytes(4, "little") + b"\x00",
        PACK_HEADER_MAGIC + (1).to_bytes(4, "little") + bytes([7]) + bytes(40),
    ],
    ids=["empty", "wrong-version", "wrong-magic", "missing-entry", "trailing", "bad-type"],
)
def test_malformed_pack_header_raises_format_error(garbage: bytes) -> None:
    with pytest.raises(FormatError):
        decode_pack_header(garbage)


def test_pack_locations_are_cumulative(entries: list[PackEntry]) -> None:
    pack = _id()
    locs = pack_locations(pack, entries)
    assert [bid for bid, _ in locs] == [e.id for e in entries]
    assert [loc.offset for _, loc in locs] == [0, 1000, 1077]
    assert all(loc.pack == pack for _, loc in locs)
    assert [(loc.type, loc.length, loc.raw_length) for _, loc in locs] == [
        (e.type, e.length, e.raw_length) for e in entries
    ]


# -- packs -------------------------------------------------------------------------------


def _build_pack(key: MasterKey, blobs: list[bytes]) -> tuple[PackBuilder, list[bytes]]:
    builder = PackBuilder(BLOB_DATA)
    ids = []
    for data in blobs:
        bid = key.blob_id(data)
        builder.add(bid, seal_blob(key, bid, data, 3), len(data))
        ids.append(bid)
    return builder, ids


def test_pack_builder_finish_and_read_pack_header(key: MasterKey) -> None:
    blobs = [b"a" * 5000, RNG.randbytes(3000), b"", b"tiny"]
    builder, ids = _build_pack(key, blobs)
    pack = builder.finish(key)
    assert pack.id == object_id(pack.data)
    assert [bid for bid, _ in pack.blobs] == ids
    assert read_pack_header(key, pack.id, pack.data) == pack.blobs
    for (bid, loc), data in zip(pack.blobs, blobs, strict=True):
        assert loc.pack == pack.id
        assert loc.raw_length == len(data)
        sealed = pack.data[loc.offset : loc.offset + loc.length]
        assert open_blob(key, bid, sealed, loc.raw_length) == data
    assert (builder.entries, builder.parts, builder.size) == ([], [], 0)


def test_read_pack_header_from_tail_only(key: MasterKey) -> None:
    builder, _ = _build_pack(key, [RNG.randbytes(2000) for _ in range(3)])
    pack = builder.finish(key)
    header_end = pack.blobs[-1][1].offset + pack.blobs[-1][1].length
    tail = pack.data[header_end - 10 :]
    assert read_pack_header(key, pack.id, tail) == pack.blobs


def test_read_pack_header_with_too_short_tail_raises_format_error(key: MasterKey) -> None:
    builder, _ = _build_pack(key, [b"x" * 100])
    pack = builder.finish(key)
    for tail in (pack.data[-3:], pack.data[-40:]):
        with pytest.raises(FormatError):
            read_pack_header(key, pack.id, tail)


def test_read_pack_header_with_other_key_raises_integrity_error(key: MasterKey) -> None:
    builder, _ = _build_pack(key, [b"x" * 100])
    pack = builder.finish(key)
    with pytest.raises(IntegrityError):
        read_pack_header(MasterKey.generate(), pack.id, pack.data)


# -- index files -------------------------------------------------------------------------


def test_index_round_trip(index_packs: dict[bytes, list[tuple[bytes, BlobLocation]]]) -> None:
    supersedes = [_id(), _id()]
    blobs, sup = decode_index(encode_index(index_packs, supersedes))
    assert sup == supersedes
    assert blobs == [b for entries in index_packs.values() for b in entries]


def test_empty_index_round_trip() -> None:
    assert decode_index(encode_index({}, [])) == ([], [])


def test_truncated_index_raises_format_error(
    index_packs: dict[bytes, list[tuple[bytes, BlobLocation]]],
) -> None:
    data = encode_index(index_packs, [_id()])
    for cut in range(len(data)):
        with pytest.raises(FormatError):
            decode_index(data[:cut])


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"garbage garbage garbage",
        b"SNPI\x02" + bytes(8),
        INDEX_MAGIC + bytes(8) + b"\x00",
        INDEX_MAGIC + (1 << 20).to_bytes(4, "little") + bytes(40),
        INDEX_MAGIC
        + bytes(4)
        + (1).to_bytes(4, "little")
        + bytes(32)
        + (1).to_bytes(4, "little")
        # one entry with blob type 9
        + bytes([9])
        + bytes(44),
    ],
    ids=["empty", "text", "wrong-version", "trailing", "huge-supersedes", "bad-type"],
)
def test_malformed_index_raises_format_error(garbage: bytes) -> None:
    with pytest.raises(FormatError):
        decode_index(garbage)


# -- blobs -------------------------------------------------------------------------------

COMPRESSIBLE = b"snapfs " * 20000
RANDOM = random.Random(7).randbytes(100_000)


@pytest.mark.parametrize(
    "data", [COMPRESSIBLE, RANDOM, b"", b"short"], ids=["compressible", "random", "empty", "short"]
)
def test_seal_open_blob_round_trip(key: MasterKey, data: bytes) -> None:
    bid = key.blob_id(data)
    assert open_blob(key, bid, seal_blob(key, bid, data, 3), len(data)) == data


def test_compressible_blob_is_stored_compressed(key: MasterKey) -> None:
    bid = key.blob_id(COMPRESSIBLE)
    assert len(seal_blob(key, bid, COMPRESSIBLE, 3)) < len(COMPRESSIBLE) // 10


def test_random_blob_is_stored_raw(key: MasterKey) -> None:
    bid = key.blob_id(RANDOM)
    assert len(seal_blob(key, bid, RANDOM, 3)) == len(RANDOM) + 1 + OVERHEAD


def test_level_zero_stores_raw(key: MasterKey) -> None:
    bid = key.blob_id(COMPRESSIBLE)
    sealed = seal_blob(key, bid, COMPRESSIBLE, 0)
    assert len(sealed) == len(COMPRESSIBLE) + 1 + OVERHEAD
    assert open_blob(key, bid, sealed, len(COMPRESSIBLE)) == COMPRESSIBLE


@pytest.mark.parametrize("data", [COMPRESSIBLE, RANDOM], ids=["compressed", "raw"])
def test_open_blob_with_flipped_byte_raises_integrity_error(key: MasterKey, data: bytes) -> None:
    bid = key.blob_id(data)
    sealed = seal_blob(key, bid, data, 3)
    for pos in (0, 12, len(sealed) // 2, len(sealed) - 1):
        bad = bytearray(sealed)
        bad[pos] ^= 0x04
        with pytest.raises(IntegrityError):
            open_blob(key, bid, bytes(bad), len(data))


@pytest.mark.parametrize("data", [COMPRESSIBLE, RANDOM], ids=["compressed", "raw"])
def test_open_blob_with_wrong_id_raises_integrity_error(key: MasterKey, data: bytes) -> None:
    bid = key.blob_id(data)
    sealed = seal_blob(key, bid, data, 3)
    with pytest.raises(IntegrityError):
        open_blob(key, key.blob_id(b"other"), sealed, len(data))


def test_open_blob_sealed_under_wrong_id_raises_integrity_error(key: MasterKey) -> None:
    """A blob sealed with a bogus id (AAD) authenticates but must not pass the id check."""
    wrong = key.blob_id(b"something else")
    sealed = seal_blob(key, wrong, RANDOM, 3)
    with pytest.raises(IntegrityError):
        open_blob(key, wrong, sealed, len(RANDOM))


@pytest.mark.parametrize("data", [COMPRESSIBLE, RANDOM], ids=["compressed", "raw"])
def test_open_blob_with_wrong_raw_length_raises_integrity_error(
    key: MasterKey, data: bytes
) -> None:
    bid = key.blob_id(data)
    sealed = seal_blob(key, bid, data, 3)
    for length in (len(data) - 1, len(data) + 1):
        with pytest.raises(IntegrityError):
            open_blob(key, bid, sealed, length)


# -- trees -------------------------------------------------------------------------------


def _sample_nodes() -> list[Node]:
    return [
        Node(
            name=b"plain.txt",
            type=FILE,
            mode=0o644,
            uid=1000,
            gid=100,
            mtime_ns=1_700_000_000_123_456_789,
            ctime_ns=1_700_000_001_000_000_000,
            size=30,
            inode=1234,
            dev=66,
            nlink=2,
            content=[(_id(), 10), (_id(), 20)],
            xattrs=[(b"user.comment", b"\x00\xffbinary"), (b"user.\xfe\xff", b"v")],
        ),
        Node(name=b"empty", type=FILE, mode=0o600, uid=0, gid=0, mtime_ns=-5_000_000_000),
        Node(
            name="caf\u00e9 \u2603".encode(),
            type=DIR,
            mode=0o755,
            uid=1,
            gid=2,
            mtime_ns=1,
            subtree=_id(),
        ),
        Node(name=b"no-subtree", type=DIR, mode=0o700, uid=1, gid=2, mtime_ns=2),
        Node(
            name=b"bad\xff\xfename",
            type=SYMLINK,
            mode=0o777,
            uid=3,
            gid=4,
            mtime_ns=3,
            target=b"../target/\x80\x81",
        ),
        Node(
            name=b"link",
            type=SYMLINK,
            mode=0o777,
            uid=3,
            gid=4,
            mtime_ns=3,
            target="d\u00e9j\u00e0/vu".encode(),
        ),
        Node(name=b"fifo", type=FIFO, mode=0o640, uid=5, gid=6, mtime_ns=4),
        Node(name=b"sock", type=SOCKET, mode=0o755, uid=5, gid=6, mtime_ns=4),
        Node(name=b"tty", type=CHARDEV, mode=0o620, uid=0, gid=5, mtime_ns=5, rdev=0x8801),
        Node(name=b"sda", type=BLOCKDEV, mode=0o660, uid=0, gid=6, mtime_ns=6, rdev=0x800),
    ]


def test_tree_round_trip() -> None:
    nodes = _sample_nodes()
    decoded = decode_tree(encode_tree(nodes))
    assert decoded == sorted(nodes, key=lambda n: n.name)


def test_tree_is_sorted_and_canonical() -> None:
    nodes = _sample_nodes()
    assert encode_tree(nodes) == encode_tree(list(reversed(nodes)))
    names = [n.name for n in decode_tree(encode_tree(nodes))]
    assert names == sorted(names)


def test_tree_stores_non_utf8_bytes_as_b64() -> None:
    doc = json.loads(encode_tree(_sample_nodes()))
    by_name = {n.get("name", n.get("name_b64")): n for n in doc["nodes"]}
    odd = by_name[base64.b64encode(b"bad\xff\xfename").decode()]
    assert {"name", "target"}.isdisjoint(odd)
    assert {"name_b64", "target_b64"} <= odd.keys()
    assert by_name["link"]["target"] == "d\u00e9j\u00e0/vu"
    assert by_name["caf\u00e9 \u2603"]["type"] == DIR
    xattrs = by_name["plain.txt"]["xattrs"]
    assert {"name": "user.comment", "value_b64": "AP9iaW5hcnk="} in xattrs
    assert any("name_b64" in x and "name" not in x for x in xattrs)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b'{"version": 2, "nodes": []}',
        b'{"nodes": []}',
        b'{"version": 1}',
        b'{"version": 1, "nodes": [{"name": "x", "type": "weird", "mode": 0, "uid": 0, '
        b'"gid": 0, "mtime_ns": 0}]}',
        b'{"version": 1, "nodes": [{"name": "x", "type": "file", "mode": 0, "uid": 0, '
        b'"gid": 0, "mtime_ns": 0}]}',
        b'{"version": 1, "nodes": [{"name_b64": "!!", "type": "fifo", "mode": 0, "uid": 0, '
        b'"gid": 0, "mtime_ns": 0}]}',
        b'{"version": 1, "nodes": [5]}',
    ],
    ids=[
        "empty",
        "not-json",
        "version-2",
        "no-version",
        "no-nodes",
        "unknown-type",
        "file-without-content",
        "bad-b64-name",
        "node-not-object",
    ],
)
def test_malformed_tree_raises_format_error(raw: bytes) -> None:
    with pytest.raises(FormatError):
        decode_tree(raw)


@pytest.mark.parametrize("raw", [b"[]", b"null", b'"tree"'])
def test_tree_that_is_not_a_json_object_raises_format_error(raw: bytes) -> None:
    with pytest.raises(FormatError):
        decode_tree(raw)


# -- snapshots ---------------------------------------------------------------------------


def _snapshot(parent: bytes | None) -> Snapshot:
    return Snapshot(
        time_ns=1_700_000_000_123_456_789,
        host="host.example",
        username="alice",
        paths=["/home/alice", "/etc"],
        tree=_id(),
        tags=["daily", "nas"],
        parent=parent,
        excludes=["*.tmp", "/home/alice/.cache"],
        summary={"files_new": 3, "bytes_added": 12345, "duration": 1.5},
        program_version="snapfs 0.1.0",
    )


@pytest.mark.parametrize("parent", [None, b"\x01" * 32], ids=["no-parent", "parent"])
def test_snapshot_json_round_trip(parent: bytes | None) -> None:
    snap = _snapshot(parent)
    sid = _id()
    again = Snapshot.from_json(snap.to_json(), sid)
    assert again.id == sid
    snap.id = sid
    assert again == snap


def test_snapshot_json_has_readable_time() -> None:
    doc = json.loads(_snapshot(None).to_json())
    assert doc["version"] == 1
    assert doc["time"] == "2023-11-14T22:13:20.123456Z"  # truncated, never rounded
    assert "id" not in doc


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(version=2),
        lambda d: d.pop("version"),
        lambda d: d.pop("tree"),
        lambda d: d.update(tree="zz"),
    ],
    ids=["version-2", "no-version", "no-tree", "tree-not-hex"],
)
def test_malformed_snapshot_raises_format_error(change: Callable[[dict[str, Any]], None]) -> None:
    doc = json.loads(_snapshot(None).to_json())
    change(doc)
    with pytest.raises(FormatError):
        Snapshot.from_json(json.dumps(doc).encode(), _id())


def test_snapshot_ignores_unknown_fields() -> None:
    """Forward compatibility: a newer writer may add fields to the manifest."""
    snap = _snapshot(None)
    doc = json.loads(snap.to_json())
    doc["added_by_a_newer_version"] = {"x": 1}
    sid = _id()
    snap.id = sid
    assert Snapshot.from_json(json.dumps(doc).encode(), sid) == snap


@pytest.mark.parametrize("raw", [b"null", b'"snapshot"'])
def test_snapshot_that_is_not_a_json_object_raises_format_error(raw: bytes) -> None:
    with pytest.raises(FormatError):
        Snapshot.from_json(raw, _id())


# -- config and names --------------------------------------------------------------------


def test_repo_config_round_trip() -> None:
    cfg = RepoConfig.new(compression=7, pack_size=1 << 22)
    assert RepoConfig.from_json(cfg.to_json()) == cfg
    assert cfg.version == FORMAT_VERSION


def test_repo_config_new_is_unique() -> None:
    one, two = RepoConfig.new(), RepoConfig.new()
    assert one.id != two.id
    assert one.chunker_seed != two.chunker_seed


def test_repo_config_with_unknown_version_is_rejected() -> None:
    doc = json.loads(RepoConfig.new().to_json())
    doc["version"] = FORMAT_VERSION + 1
    with pytest.raises(FormatError, match="version"):
        RepoConfig.from_json(json.dumps(doc).encode())


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b'{"id": "x"}'],
    ids=["empty", "not-json", "missing-fields"],
)
def test_malformed_repo_config_raises_format_error(raw: bytes) -> None:
    with pytest.raises(FormatError):
        RepoConfig.from_json(raw)


@pytest.mark.parametrize("raw", [b"[]", b"null", b'"config"'])
def test_repo_config_that_is_not_a_json_object_raises_format_error(raw: bytes) -> None:
    with pytest.raises(FormatError):
        RepoConfig.from_json(raw)


def test_repo_config_ignores_unknown_fields() -> None:
    cfg = RepoConfig.new()
    doc = json.loads(cfg.to_json())
    doc["future_option"] = True
    assert RepoConfig.from_json(json.dumps(doc).encode()) == cfg


def test_object_names_round_trip() -> None:
    pid = os.urandom(32)
    name = pack_name(pid)
    assert name == f"data/{pid.hex()[:2]}/{pid.hex()}"
    assert id_from_name(name) == pid


@pytest.mark.parametrize("name", ["data/ab/xyz", "index/abcd", "snapshots/" + "0" * 62])
def test_id_from_bad_name_raises_format_error(name: str) -> None:
    with pytest.raises(FormatError):
        id_from_name(name)
