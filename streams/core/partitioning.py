"""Kafka's default partition of a key: murmur2 as the Java client computes it.

Pure logic: no faust, no aiokafka. A raw record must sit in the partition the
producers' default partitioner gives its volume id (topic key = volume_id), so that
one volume's counters and windows live in one partition only (DESIGN.md decision 2).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK32 = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """MurmurHash2 of ``data`` as Kafka's Utils.murmur2, as an unsigned 32-bit value."""
    length = len(data)
    h = (_SEED ^ length) & _MASK32
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * _M) & _MASK32
        k ^= k >> 24
        k = (k * _M) & _MASK32
        h = ((h * _M) & _MASK32) ^ k
    tail = data[whole:]
    if tail:
        # the Java switch falls through: the last 1..3 bytes, little-endian, then one multiply
        h ^= int.from_bytes(tail, "little")
        h = (h * _M) & _MASK32
    h ^= h >> 13
    h = (h * _M) & _MASK32
    h ^= h >> 15
    return h


_M64, _MASK64 = np.uint64(_M), np.uint64(_MASK32)
_SHIFTS = tuple(np.uint64(n) for n in (13, 15, 24))


def murmur2_many(keys: Sequence[bytes]) -> np.ndarray:
    """:func:`murmur2` of every key at once (uint64 values below 2**32): the keys as rows
    of 4-byte words, zero padded, and the same steps over all rows, a row's words past its
    whole ones left out. A step of the accounting agent checks thousands of volumes' ids
    (~2.3 µs each one at a time, ~0.2 µs here)."""
    n = len(keys)
    lengths = np.fromiter(map(len, keys), np.int64, n)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    columns = max(1, (int(lengths.max()) + 3) // 4)
    flat = np.frombuffer(b"".join(keys), dtype=np.uint8)
    rows = np.repeat(np.arange(n), lengths)
    starts = np.cumsum(lengths) - lengths
    padded = np.zeros((n, columns * 4), dtype=np.uint8)
    padded[rows, np.arange(len(flat)) - starts[rows]] = flat
    words = padded.view("<u4").astype(np.uint64)
    whole = lengths // 4
    h = (np.uint64(_SEED) ^ lengths.astype(np.uint64)) & _MASK64
    s13, s15, s24 = _SHIFTS
    for j in range(int(whole.max())):
        k = (words[:, j] * _M64) & _MASK64
        k ^= k >> s24
        k = (k * _M64) & _MASK64
        h = np.where(j < whole, ((h * _M64) & _MASK64) ^ k, h)
    # the last 1..3 bytes, little-endian (the padding's zeros above them), one multiply
    tail = words[np.arange(n), np.minimum(whole, columns - 1)]
    h = np.where(lengths % 4 != 0, ((h ^ tail) * _M64) & _MASK64, h)
    h ^= h >> s13
    h = (h * _M64) & _MASK64
    h ^= h >> s15
    return h


def default_partitions(keys: Sequence[bytes], partitions: int) -> np.ndarray:
    """:func:`default_partition` of every key at once (int64)."""
    return ((murmur2_many(keys) & np.uint64(0x7FFFFFFF)) % np.uint64(partitions)).astype(
        np.int64)


def default_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key`` among ``partitions``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
