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
MAX_LATENCY_NS = (1 << 64) - 1  # complete - submit of two int64s, as vector.py's uint64
# The lowest bucket of a positive integer (x = 1: base**-1 < 1 <= base**0) and the highest.
MIN_INDEX = -1
MAX_INDEX = 64 * BUCKETS_PER_OCTAVE - 1  # base**2048 = 2**64 > any uint64 latency
N_INDEXES = MAX_INDEX - MIN_INDEX + 1
# Relative error of a percentile (SEMANTICS.md): base**0.5 - 1, under 1.1 %.
RELATIVE_ERROR = math.sqrt(BASE) - 1


def _iroot_floor(k: int, root: int) -> int:
    """The largest integer n >= 0 with n**root <= 2**k (exact, Python ints; k >= -1)."""
    if k < 0:
        return 0
    guess = int(2.0 ** (k / root))  # within 2**-40 of the answer, relatively
    target = 1 << k
    low, high = max(0, guess - (guess >> 40) - 2), guess + (guess >> 40) + 2
    while low ** root > target:  # (never, for the guess's error: a guard)
        low //= 2
    while high ** root <= target:
        high *= 2
    while high - low > 1:  # low**root <= target < high**root
        mid = (low + high) // 2
        if mid ** root <= target:
            low = mid
        else:
            high = mid
    return low


@lru_cache(maxsize=1)
def upper_bounds() -> np.ndarray:
    """floor(base**(i + 1)) for i = MIN_INDEX .. MAX_INDEX - 1, as uint64: bucket i holds
    the integers in (bound[i - 1], bound[i]]; the last bucket, everything above (its bound,
    2**64, is past every uint64)."""
    bounds = [_iroot_floor(i + 1, BUCKETS_PER_OCTAVE) for i in range(MIN_INDEX, MAX_INDEX)]
    return np.array(bounds, dtype=np.uint64)


@lru_cache(maxsize=1)
def _representatives() -> list[int]:
    """base**(i + 0.5) = 2**((2i + 1) / 64) rounded to the nearest integer, exactly: n is its
    floor, and n + 1 is nearer iff (n + 1/2)**64 <= 2**(2i + 1) (never a tie: irrational)."""
    out = []
    for i in range(MIN_INDEX, MAX_INDEX + 1):
        k = 2 * i + 1
        n = _iroot_floor(k, 2 * BUCKETS_PER_OCTAVE)
        out.append(n + 1 if (2 * n + 1) ** 64 <= 1 << (k + 64) else n)
    return out


def bucket_indexes(latency_ns: np.ndarray) -> np.ndarray:
    """The bucket index of each positive latency (int64 or uint64 array, all >= 1).

    A float logarithm guesses (it is off by at most one bucket: its error, ~1e-13 of a
    bucket, only matters next to a bound), then one exact integer comparison each way with
    the bounds on either side settles it; test_exphist checks every bound +-1."""
    x = latency_ns.astype(np.uint64)
    bounds = upper_bounds()
    guess = np.ceil(np.log2(x.astype(np.float64)) * BUCKETS_PER_OCTAVE).astype(np.int64) - 1
    position = np.clip(guess - MIN_INDEX, 0, len(bounds) - 1)
    position += x > bounds[position]  # the guess was a bucket too low
    position -= (position > 0) & (x <= bounds[np.maximum(position - 1, 0)])  # too high
    return position + MIN_INDEX


def bucket_index(latency_ns: int) -> int:
    """The bucket of one positive integer latency."""
    return bisect_left(upper_bounds().tolist(), latency_ns) + MIN_INDEX


def representative_ns(index: int) -> int:
    """The bucket's representative value base**(index + 0.5) (SEMANTICS.md section 3),
    rounded to the nearest integer ns exactly (a float is off by units above 2**53)."""
    return _representatives()[index - MIN_INDEX]


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
        """Count every latency of an int64 or uint64 array (all >= 0)."""
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

    def read_trimmed(self) -> ExpHistogram:
        """:meth:`trimmed`, or this histogram itself when it has nothing to trim (one made
        from latencies runs from its lowest bucket to its highest): to read, not change."""
        counts = self.counts
        if (counts[0] and counts[-1]) if counts else self.offset == 0:
            return self
        return self.trimmed()

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
                value = representative_ns(self.offset + position)
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

    def to_record(self) -> dict[str, Any]:
        """The published form (schemas/window_stats.avsc ``{op}_latency_exp``, the web's
        JSON): trimmed; offset 0 and no counts when no latency is above 0."""
        t = self.trimmed()
        return {"offset": t.offset, "counts": t.counts, "zero": t.zero}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ExpHistogram:
        """The histogram of a decoded record (its Avro ints and longs are Python ints
        already: the counts are copied, not converted one by one, a third of what reading
        a 1 m window record back cost the 1 h rollup)."""
        return cls(record["offset"], list(record["counts"]), record["zero"])

    def copy(self) -> ExpHistogram:
        return ExpHistogram(self.offset, list(self.counts), self.zero)


def group_histograms(group: np.ndarray, latency_ns: np.ndarray, n_groups: int
                     ) -> list[ExpHistogram]:
    """One trimmed histogram per group 0 .. n_groups - 1 of the latencies (uint64 or int64,
    >= 0), ``group`` giving each one's group, in non-decreasing order
    (:func:`group_histogram_columns`, as objects)."""
    offsets, zeros, lens, flat = group_histogram_columns(group, latency_ns, n_groups)
    counts = flat.tolist()
    ends = np.cumsum(lens).tolist()
    return [ExpHistogram(offset, counts[end - size:end], zero) for offset, zero, size, end
            in zip(offsets.tolist(), zeros.tolist(), lens.tolist(), ends, strict=True)]


def group_histogram_columns(group: np.ndarray, latency_ns: np.ndarray, n_groups: int
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The trimmed histogram of each group 0 .. n_groups - 1 of the latencies (as
    :func:`group_histograms`) as int64 arrays: offsets, zero counts, bucket counts, and
    every group's counts in turn. numpy over the whole arrays (no sort: each group's
    buckets are a dense run of one bincount)."""
    zero = latency_ns == 0
    zeros = np.bincount(group[zero], minlength=n_groups).astype(np.int64)
    offsets = np.zeros(n_groups, dtype=np.int64)
    lens = np.zeros(n_groups, dtype=np.int64)
    positive = ~zero
    if not positive.any():
        return offsets, zeros, lens, np.empty(0, dtype=np.int64)
    owner = group[positive]
    index = bucket_indexes(latency_ns[positive])
    firsts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    low = np.minimum.reduceat(index, firsts)
    widths = np.maximum.reduceat(index, firsts) - low + 1
    starts = np.cumsum(widths) - widths  # where each group's dense run begins in ``flat``
    run = np.repeat(np.arange(len(firsts)), np.diff(np.r_[firsts, len(index)]))
    flat = np.bincount(starts[run] + index - low[run], minlength=int(widths.sum()))
    offsets[owner[firsts]] = low
    lens[owner[firsts]] = widths
    return offsets, zeros, lens, flat.astype(np.int64)
