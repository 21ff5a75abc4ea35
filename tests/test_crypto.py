"""Key files, AEAD sealing and keyed blob ids (snapfs.crypto)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from snapfs.crypto import KdfParams, MasterKey, open_sealed, seal, unwrap_key, wrap_key
from snapfs.crypto.aead import NONCE_SIZE, OVERHEAD, TAG_SIZE
from snapfs.errors import FormatError, IntegrityError, WrongPassword

PASSWORD = b"correct horse battery staple"
FAST_KDF = KdfParams(iterations=1, memory_kib=8192, lanes=1)
AAD = b"snapfs test aad"


@pytest.fixture(scope="module")
def master() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture(scope="module")
def keyfile(master: MasterKey) -> bytes:
    return wrap_key(master, PASSWORD, {"host": "testhost"}, FAST_KDF)


def _edit(keyfile: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    doc = json.loads(keyfile)
    change(doc)
    return json.dumps(doc).encode()


def _flip_b64(doc: dict[str, Any], field: str, index: int) -> None:
    raw = bytearray(base64.b64decode(doc[field]))
    raw[index] ^= 0x01
    doc[field] = base64.b64encode(bytes(raw)).decode()


# -- key files ---------------------------------------------------------------------------


def test_wrap_unwrap_round_trip(master: MasterKey, keyfile: bytes) -> None:
    opened = unwrap_key(keyfile, PASSWORD)
    assert opened.encryption == master.encryption
    assert opened.id_key == master.id_key


def test_key_file_keeps_meta_and_kdf_params(keyfile: bytes) -> None:
    doc = json.loads(keyfile)
    assert doc["host"] == "testhost"
    assert (doc["iterations"], doc["memory_kib"], doc["lanes"]) == (1, 8192, 1)


def test_key_file_does_not_contain_the_key_in_clear(master: MasterKey, keyfile: bytes) -> None:
    for secret in (master.encryption, master.id_key):
        assert secret not in keyfile
        assert base64.b64encode(secret) not in keyfile


def test_two_wraps_of_one_key_differ(master: MasterKey, keyfile: bytes) -> None:
    again = wrap_key(master, PASSWORD, {"host": "testhost"}, FAST_KDF)
    assert json.loads(again)["salt"] != json.loads(keyfile)["salt"]
    assert unwrap_key(again, PASSWORD).encryption == master.encryption


def test_wrong_password_raises_wrong_password(keyfile: bytes) -> None:
    with pytest.raises(WrongPassword):
        unwrap_key(keyfile, PASSWORD + b"!")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(lambda d: _flip_b64(d, "data", 0), WrongPassword, id="data-nonce-flip"),
        pytest.param(lambda d: _flip_b64(d, "data", 20), WrongPassword, id="data-body-flip"),
        pytest.param(lambda d: _flip_b64(d, "data", -1), WrongPassword, id="data-tag-flip"),
        pytest.param(lambda d: _flip_b64(d, "salt", 3), WrongPassword, id="salt-flip"),
        pytest.param(lambda d: d.update(iterations=2), WrongPassword, id="other-iterations"),
        pytest.param(lambda d: d.update(data="AAAA"), WrongPassword, id="data-too-short"),
        pytest.param(lambda d: d.update(version=2), FormatError, id="unknown-version"),
        pytest.param(lambda d: d.update(kdf="scrypt"), FormatError, id="unknown-kdf"),
        pytest.param(lambda d: d.pop("salt"), FormatError, id="missing-salt"),
        pytest.param(lambda d: d.pop("lanes"), FormatError, id="missing-lanes"),
        pytest.param(lambda d: d.update(data="not base64!"), FormatError, id="data-not-b64"),
        pytest.param(lambda d: d.update(iterations="many"), FormatError, id="iterations-not-int"),
    ],
)
def test_tampered_key_file_is_rejected(
    keyfile: bytes,
    change: Callable[[dict[str, Any]], None],
    expected: type[Exception],
) -> None:
    with pytest.raises(expected):
        unwrap_key(_edit(keyfile, change), PASSWORD)


@pytest.mark.parametrize(
    "cut", [0, 1, 10, -1], ids=["empty", "one-byte", "head", "missing-last-byte"]
)
def test_truncated_key_file_raises_format_error(keyfile: bytes, cut: int) -> None:
    with pytest.raises(FormatError):
        unwrap_key(keyfile[:cut], PASSWORD)


@pytest.mark.parametrize("raw", [b"[]", b"null", b'"key"', b"42"])
def test_key_file_that_is_not_a_json_object_raises_format_error(raw: bytes) -> None:
    with pytest.raises(FormatError):
        unwrap_key(raw, PASSWORD)


@pytest.mark.parametrize(
    "params",
    [{"lanes": 0}, {"iterations": 0}, {"memory_kib": 1}],
    ids=["lanes-0", "iterations-0", "memory-1"],
)
def test_key_file_with_invalid_kdf_params_raises_format_error(
    keyfile: bytes, params: dict[str, int]
) -> None:
    with pytest.raises(FormatError):
        unwrap_key(_edit(keyfile, lambda d: d.update(params)), PASSWORD)


def test_master_key_json_round_trip(master: MasterKey) -> None:
    again = MasterKey.from_json(master.to_json())
    assert (again.encryption, again.id_key) == (master.encryption, master.id_key)


@pytest.mark.parametrize(
    "raw",
    [b"{}", b"not json", b'{"encrypt": "AAAA", "id": "AAAA"}', b'{"encrypt": 1, "id": 2}'],
    ids=["empty-object", "not-json", "short-keys", "wrong-types"],
)
def test_malformed_master_key_record_raises_format_error(raw: bytes) -> None:
    with pytest.raises(FormatError):
        MasterKey.from_json(raw)


# -- sealing -----------------------------------------------------------------------------


def test_seal_open_round_trip(master: MasterKey) -> None:
    for plain in (b"", b"x", bytes(range(256)) * 100):
        sealed = seal(master.cipher, plain, AAD)
        assert len(sealed) == len(plain) + OVERHEAD
        assert open_sealed(master.cipher, sealed, AAD) == plain
        assert open_sealed(master.cipher, memoryview(sealed), AAD) == plain


def test_seal_uses_a_fresh_nonce(master: MasterKey) -> None:
    one, two = seal(master.cipher, b"same", AAD), seal(master.cipher, b"same", AAD)
    assert one[:NONCE_SIZE] != two[:NONCE_SIZE]
    assert one != two


def test_open_with_wrong_aad_raises_integrity_error(master: MasterKey) -> None:
    sealed = seal(master.cipher, b"payload", AAD)
    with pytest.raises(IntegrityError):
        open_sealed(master.cipher, sealed, AAD + b"x")


def test_open_with_other_key_raises_integrity_error(master: MasterKey) -> None:
    sealed = seal(master.cipher, b"payload", AAD)
    with pytest.raises(IntegrityError):
        open_sealed(AESGCM(AESGCM.generate_key(bit_length=256)), sealed, AAD)


def test_every_flipped_byte_raises_integrity_error(master: MasterKey) -> None:
    sealed = seal(master.cipher, b"0123456789", AAD)
    assert len(sealed) == NONCE_SIZE + 10 + TAG_SIZE
    for i in range(len(sealed)):
        bad = bytearray(sealed)
        bad[i] ^= 0x80
        with pytest.raises(IntegrityError):
            open_sealed(master.cipher, bytes(bad), AAD)


@pytest.mark.parametrize("cut", [0, 1, OVERHEAD - 1, OVERHEAD, OVERHEAD + 3])
def test_truncated_sealed_object_raises_integrity_error(master: MasterKey, cut: int) -> None:
    sealed = seal(master.cipher, b"0123456789", AAD)
    with pytest.raises(IntegrityError):
        open_sealed(master.cipher, sealed[:cut], AAD)


# -- blob ids ----------------------------------------------------------------------------


def test_blob_id_is_deterministic_per_key(master: MasterKey) -> None:
    data = b"some chunk of a file"
    assert master.blob_id(data) == master.blob_id(memoryview(data))
    assert len(master.blob_id(data)) == 32
    assert master.blob_id(data) != master.blob_id(data + b"!")


def test_blob_ids_are_keyed() -> None:
    one, two = MasterKey.generate(), MasterKey.generate()
    for data in (b"", b"equal content", bytes(1 << 16)):
        assert one.blob_id(data) != two.blob_id(data)


@pytest.mark.parametrize(("enc", "idk"), [(31, 32), (32, 31), (33, 32), (32, 0)])
def test_master_key_with_wrong_length_raises_format_error(enc: int, idk: int) -> None:
    with pytest.raises(FormatError):
        MasterKey(bytes(enc), bytes(idk))
