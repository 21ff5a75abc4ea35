"""Content-defined chunking with the parameters a new repository gets."""

from __future__ import annotations

import io
import random

import pytest

from snapfs.chunker import Chunker
from snapfs.repo.config import RepoConfig

MiB = 1 << 20


@pytest.fixture(scope="module")
def config() -> RepoConfig:
    return RepoConfig.new()


@pytest.fixture
def chunker(config: RepoConfig) -> Chunker:
    return Chunker(config.chunker_min, config.chunker_avg, config.chunker_max, config.chunker_seed)


@pytest.fixture(scope="module")
def random_data() -> bytes:
    return random.Random(1234).randbytes(24 * MiB)


def test_chunks_concatenate_to_the_input(chunker: Chunker, random_data: bytes) -> None:
    chunks = list(chunker.chunk_buffer(random_data))
    assert len(chunks) > 4
    assert b"".join(chunks) == random_data


@pytest.mark.parametrize("size", [0, 1, 1000, 256 * 1024, 4 * MiB, 4 * MiB + 1])
def test_small_and_edge_sizes_concatenate_to_the_input(chunker: Chunker, size: int) -> None:
    data = random.Random(size).randbytes(size)
    chunks = list(chunker.chunk_buffer(data))
    assert b"".join(chunks) == data
    assert all(chunks), "no empty chunks"


def test_boundaries_are_content_defined(config: RepoConfig, random_data: bytes) -> None:
    # A fixed seed keeps the test deterministic; sizes are those of a new repository.
    chunker = Chunker(config.chunker_min, config.chunker_avg, config.chunker_max, 0x5EED)
    before = list(chunker.chunk_buffer(random_data))
    after = list(chunker.chunk_buffer(b"inserted at the start" * 5 + random_data))
    shared = set(before) & set(after)
    # Only the chunks touching the insertion may change; everything later realigns.
    assert len(shared) >= len(before) - 2
    assert before[-1] == after[-1]


def test_boundaries_depend_on_the_seed(config: RepoConfig, random_data: bytes) -> None:
    one = Chunker(config.chunker_min, config.chunker_avg, config.chunker_max, 1)
    two = Chunker(config.chunker_min, config.chunker_avg, config.chunker_max, 3)
    sizes_one = [len(c) for c in one.chunk_buffer(random_data)]
    sizes_two = [len(c) for c in two.chunk_buffer(random_data)]
    assert sizes_one != sizes_two


def test_chunk_sizes_respect_min_and_max(
    config: RepoConfig, chunker: Chunker, random_data: bytes
) -> None:
    sizes = [len(c) for c in chunker.chunk_buffer(random_data)]
    assert all(config.chunker_min <= s <= config.chunker_max for s in sizes[:-1])
    assert 0 < sizes[-1] <= config.chunker_max
    assert config.chunker_min < sum(sizes) / len(sizes) < config.chunker_max


def test_data_without_boundaries_is_cut_at_max(config: RepoConfig, chunker: Chunker) -> None:
    data = bytes(10 * MiB)
    sizes = [len(c) for c in chunker.chunk_buffer(data)]
    assert sizes == [config.chunker_max, config.chunker_max, 10 * MiB - 2 * config.chunker_max]


def test_stream_chunks_equal_buffer_chunks(chunker: Chunker, random_data: bytes) -> None:
    from_stream = list(chunker.chunks(io.BytesIO(random_data)))
    assert from_stream == list(chunker.chunk_buffer(random_data))
