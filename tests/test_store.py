"""One conformance suite for every Store backend, plus LocalStore's on-disk promises."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from snapfs.errors import ObjectNotFound, StoreError
from snapfs.store import Store
from snapfs.store.local import TMP_PREFIX, LocalStore
from snapfs.store.memory import MemoryStore
from snapfs.store.s3 import S3Store
from tools.seaweed import S3Server

H1 = "ab" + "0" * 62
H2 = "ab" + "1" * 62
H3 = "cd" + "2" * 62


@pytest.fixture(params=["memory", "local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    if request.param == "memory":
        return MemoryStore()
    if request.param == "s3":
        server: S3Server = request.getfixturevalue("s3")
        for k, v in server.env().items():
            monkeypatch.setenv(k, v)
        s3 = S3Store(request.getfixturevalue("s3_url"))
        s3.ensure_bucket()
        return s3
    return LocalStore(tmp_path / "store")


@pytest.fixture
def local(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def _fill(store: Store) -> dict[str, bytes]:
    objects = {
        "config": b"config bytes",
        f"data/{H3[:2]}/{H3}": b"c" * 300,
        f"data/{H1[:2]}/{H1}": b"a" * 100,
        f"data/{H2[:2]}/{H2}": b"",
        f"index/{H2}": b"index two",
        f"index/{H1}": b"index one",
        f"keys/{H1}": b"{}",
    }
    for name, data in objects.items():
        store.put(name, data)
    return objects


def test_put_get(store: Store) -> None:
    store.put("config", b"hello")
    store.put(f"data/ab/{H1}", b"\x00\xff" * 1000)
    assert store.get("config") == b"hello"
    assert store.get(f"data/ab/{H1}") == b"\x00\xff" * 1000


def test_put_replaces(store: Store) -> None:
    store.put("config", b"first")
    store.put("config", b"second, longer")
    assert store.get("config") == b"second, longer"


def test_empty_object(store: Store) -> None:
    store.put(f"index/{H1}", b"")
    assert store.get(f"index/{H1}") == b""
    assert list(store.list("index/")) == [(f"index/{H1}", 0)]


def test_ranged_get(store: Store) -> None:
    data = bytes(range(256)) * 4
    store.put("blob", data)
    assert store.get("blob", 10, 20) == data[10:30]
    assert store.get("blob", 0, 1) == data[:1]
    assert store.get("blob", len(data) - 5, 5) == data[-5:]
    assert store.get("blob", 0, len(data)) == data
    assert store.get("blob", 7) == data[7:]
    assert store.get("blob", 3, 0) == b""


def test_get_missing_raises_object_not_found(store: Store) -> None:
    with pytest.raises(ObjectNotFound):
        store.get("config")
    with pytest.raises(ObjectNotFound):
        store.get(f"data/ab/{H1}", 0, 10)


@pytest.mark.parametrize(("offset", "length"), [(0, 11), (5, 6), (10, 2), (20, 1)])
def test_ranged_get_past_the_end_raises_store_error(store: Store, offset: int, length: int) -> None:
    store.put("blob", b"0123456789")
    with pytest.raises(StoreError) as info:
        store.get("blob", offset, length)
    assert not isinstance(info.value, ObjectNotFound)


def test_list_prefix_returns_sorted_names_and_sizes(store: Store) -> None:
    objects = _fill(store)
    for prefix in ("data/", "index/", "keys/"):
        expected = sorted((n, len(d)) for n, d in objects.items() if n.startswith(prefix))
        assert list(store.list(prefix)) == expected


def test_list_missing_prefix_is_empty(store: Store) -> None:
    _fill(store)
    assert list(store.list("snapshots/")) == []
    assert list(store.list("locks/")) == []


def test_delete(store: Store) -> None:
    _fill(store)
    store.delete(f"index/{H1}")
    assert not store.exists(f"index/{H1}")
    with pytest.raises(ObjectNotFound):
        store.get(f"index/{H1}")
    assert [n for n, _ in store.list("index/")] == [f"index/{H2}"]


def test_delete_missing_is_a_no_op(store: Store) -> None:
    """S3 semantics, which every store follows: deleting what is gone succeeds."""
    store.delete("index/" + H1)
    assert not store.exists("index/" + H1)


def test_exists(store: Store) -> None:
    assert not store.exists("config")
    store.put("config", b"x")
    assert store.exists("config")
    assert not store.exists("index/" + H1)


def test_list_follows_the_prefix_contract(store: Store) -> None:
    """Store.list yields every object whose *name starts with* the prefix, sorted."""
    objects = _fill(store)
    store.put("data/zz", b"beside the subdirectories")
    objects["data/zz"] = b"beside the subdirectories"
    for prefix in ("", "data/a", "data/", "ind"):
        expected = sorted((n, len(d)) for n, d in objects.items() if n.startswith(prefix))
        assert list(store.list(prefix)) == expected, prefix


# -- LocalStore on disk ------------------------------------------------------------------


def test_local_list_skips_temp_files(local: LocalStore) -> None:
    objects = _fill(local)
    (local.root / "index" / f"{TMP_PREFIX}0123456789abcdef").write_bytes(b"half written")
    (local.root / "data" / "ab" / f"{TMP_PREFIX}feedfacefeedface").write_bytes(b"partial")
    assert [n for n, _ in local.list("index/")] == sorted(n for n in objects if "index/" in n)
    assert [n for n, _ in local.list("data/")] == sorted(n for n in objects if "data/" in n)


def test_local_put_leaves_no_temp_file(local: LocalStore) -> None:
    _fill(local)
    local.put("config", b"replaced")
    leftovers = [
        os.path.join(d, f)
        for d, _, files in os.walk(local.root)
        for f in files
        if f.startswith(TMP_PREFIX)
    ]
    assert leftovers == []


def test_local_objects_live_at_their_names(local: LocalStore) -> None:
    objects = _fill(local)
    for name, data in objects.items():
        assert (local.root / name).read_bytes() == data


def test_local_get_unreadable_path_raises_store_error(local: LocalStore) -> None:
    (local.root / "config").mkdir(parents=True)
    with pytest.raises(StoreError):
        local.get("config")
