"""The base-2 exponential latency histogram of SEMANTICS.md section 3 (OpenTelemetry's
and Prometheus native histograms' scheme) at the fixed scale 5: precise percentiles.

Pure: no faust, no aiokafka. Bucket ``i`` counts latencies ``x`` (integer ns) with
``base**i < x <= base**(i + 1)``, base = 2**(1/32); a zero bucket counts ``x == 0``. The
bucket of an integer is found exactly, never through a floating-point logarithm: ``x``
is in bucket ``i`` iff ``x <= floor(base**(i + 1))``, and those floors are computed once
with integer arithmetic (the largest ``n`` with ``n**32 <= 2**(i + 1)``). A fixed scale
makes merging exact: buckets add.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

SCALE = 5
BUCKETS_PER_OCTAVE = 1 << SCALE  # 32
BASE = 2.0 ** (1.0 / BUCKETS_PER_OCTAVE)
MAX_LATENCY_NS = (1 << 63) - 1
# The lowest bucket of a positive integer (x = 1: base**-1 < 1 <= base**0) and the highest.
MIN_INDEX = -1
MAX_INDEX = 63 * BUCKETS_PER_OCTAVE - 1  # base**2016 = 2**63 > any int64 latency
# Relative error of a percentile (SEMANTICS.md): base**0.5 - 1, under 1.1 %.
RELATIVE_ERROR = math.sqrt(BASE) - 1


def _iroot32_floor(k: int) -> int:
    """The largest integer n with n**32 <= 2**k (exact, Python ints)."""
    n = int(2.0 ** (k / BUCKETS_PER_OCTAVE))  # within a few units of the answer
    target = 1 << k
    while n ** BUCKETS_PER_OCTAVE > target:
        n -= 1
    while (n + 1) ** BUCKETS_PER_OCTAVE <= target:
        n += 1
    return n


@lru_cache(maxsize=1)
def upper_bounds() -> np.ndarray:
    """floor(base**(i + 1)) for i = MIN_INDEX .. MAX_INDEX, as uint64: bucket i holds the
    integers in (bound[i - 1], bound[i]]."""
    return np.array([_iroot32_floor(i + 1) for i in range(MIN_INDEX, MAX_INDEX + 1)],
                    dtype=np.uint64)


def bucket_indexes(latency_ns: np.ndarray) -> np.ndarray:
    """The bucket index of each positive latency (int64 array, all >= 1)."""
    positions = np.searchsorted(upper_bounds(), latency_ns.astype(np.uint64), side="left")
    return positions.astype(np.int64) + MIN_INDEX


def bucket_index(latency_ns: int) -> int:
    """The bucket of one positive integer latency."""
    return bisect_left(upper_bounds().tolist(), latency_ns) + MIN_INDEX


def representative_ns(index: int) -> float:
    """The bucket's representative value base**(index + 0.5) (SEMANTICS.md section 3)."""
    return 2.0 ** ((index + 0.5) / BUCKETS_PER_OCTAVE)


@dataclass(slots=True)
class ExpHistogram:
    """Counts by bucket, dense from ``offset``; ``zero`` counts latencies of 0 ns."""

    offset: int = 0
    counts: list[int] = field(default_factory=list)
    zero: int = 0

    @property
    def total(self) -> int:
        return self.zero + sum(self.counts)

    def add_indexes(self, indexes: Iterable[int], zeros: int = 0) -> None:
        """Count one latency in each bucket of ``indexes`` (and ``zeros`` of 0 ns)."""
        self.zero += zeros
        for index in indexes:
            self._add(index, 1)

    def add_latencies(self, latency_ns: np.ndarray) -> None:
        """Count every latency of an int64 array (all >= 0)."""
        if not len(latency_ns):
            return
        positive = latency_ns[latency_ns > 0]
        self.zero += len(latency_ns) - len(positive)
        if not len(positive):
            return
        indexes = bucket_indexes(positive)
        low = int(indexes.min())
        counts = np.bincount(indexes - low)  # counts only: exact in int64
        self.merge(ExpHistogram(low, counts.tolist(), 0))

    def _add(self, index: int, count: int) -> None:
        if not self.counts:
            self.offset, self.counts = index, [count]
            return
        if index < self.offset:
            self.counts[:0] = [0] * (self.offset - index)
            self.offset = index
        position = index - self.offset
        if position >= len(self.counts):
            self.counts.extend([0] * (position + 1 - len(self.counts)))
        self.counts[position] += count

    def merge(self, other: ExpHistogram) -> None:
        """Add ``other``'s counts (the same scale: exact)."""
        self.zero += other.zero
        if not other.counts:
            return
        if not self.counts:
            self.offset, self.counts = other.offset, list(other.counts)
            return
        self._add(other.offset, 0)
        self._add(other.offset + len(other.counts) - 1, 0)
        start = other.offset - self.offset
        for i, count in enumerate(other.counts):
            self.counts[start + i] += count

    def trimmed(self) -> ExpHistogram:
        """The same counts without zero buckets at either end (the stored, sparse form)."""
        counts = self.counts
        first = next((i for i, c in enumerate(counts) if c), len(counts))
        last = len(counts) - next((i for i, c in enumerate(reversed(counts)) if c), 0)
        return ExpHistogram(self.offset + first if first < last else 0, counts[first:last],
                            self.zero)

    def percentile_ns(self, num: int, den: int, min_ns: int | None, max_ns: int | None
                      ) -> int | None:
        """The representative of the bucket holding the order statistic of rank
        ceil(n * num / den), clamped to [min_ns, max_ns] and rounded to an integer ns;
        None when empty."""
        n = self.total
        if n == 0:
            return None
        rank = -(-n * num // den)
        if rank <= self.zero:
            return 0
        cumulative = self.zero
        for position, count in enumerate(self.counts):
            cumulative += count
            if cumulative >= rank:
                value = round(representative_ns(self.offset + position))
                low = 0 if min_ns is None else min_ns
                high = value if max_ns is None else max_ns
                return min(max(value, low), high)
        raise AssertionError("unreachable: the cumulative count reaches n")

    def to_list(self) -> list[int | list[int]]:
        t = self.trimmed()
        return [t.offset, t.counts, t.zero]

    @classmethod
    def from_list(cls, values: Sequence[Any]) -> ExpHistogram:
        offset, counts, zero = values
        return cls(int(offset), [int(c) for c in counts], int(zero))
