"""Kafka's default partition in pure Python, against aiokafka's own and Kafka's vectors."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from streams.core.partitioning import (
    default_partition,
    default_partitions,
    murmur2,
    murmur2_many,
)


@pytest.mark.parametrize(("key", "signed"), [
    # org.apache.kafka.common.utils.UtilsTest#testMurmur2 (the Java client's own values)
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
])
def test_murmur2_matches_the_java_client(key: bytes, signed: int) -> None:
    assert murmur2(key) == signed & 0xFFFFFFFF


def test_murmur2_matches_aiokafka_on_many_random_keys() -> None:
    rng = random.Random(18)
    for _ in range(5000):
        key = rng.randbytes(rng.randrange(0, 200))
        assert murmur2(key) & 0x7FFFFFFF == aiokafka_murmur2(key) & 0x7FFFFFFF, key


@given(st.binary(max_size=300), st.integers(1, 1000))
def test_default_partition_is_aiokafkas(key: bytes, partitions: int) -> None:
    all_partitions = list(range(partitions))
    assert default_partition(key, partitions) == DefaultPartitioner()(
        key, all_partitions, all_partitions)


@given(st.lists(st.binary(max_size=300), max_size=40), st.integers(1, 1000))
def test_many_keys_at_once_are_each_keys_partition(keys: list[bytes], partitions: int) -> None:
    assert murmur2_many(keys).tolist() == [murmur2(key) for key in keys]
    assert default_partitions(keys, partitions).tolist() == [
        default_partition(key, partitions) for key in keys]


def test_many_keys_at_once_match_the_java_client_and_random_keys() -> None:
    java = [b"21", b"foobar", b"a-little-bit-long-string", b"a-little-bit-longer-string",
            b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", b"abc"]
    signed = [-973932308, -790332482, -985981536, -1486304829, -58897971, 479470107]
    assert murmur2_many(java).tolist() == [s & 0xFFFFFFFF for s in signed]
    rng = random.Random(21)
    keys = [rng.randbytes(rng.randrange(0, 200)) for _ in range(3000)]
    assert murmur2_many(keys).tolist() == [aiokafka_murmur2(k) & 0xFFFFFFFF for k in keys]
