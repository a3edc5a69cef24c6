"""Windowed statistics of one volume (SEMANTICS.md section 3): accumulate, roll up, publish.

Pure logic: no faust, no aiokafka. A :class:`WindowAcc` holds only integers
(sums, min/max, histogram counts, in-flight time, busy intervals), so a 1 m
window built from sixty 1 s windows is exactly the one built from raw events;
averages, percentiles, queue depth and util are derived when a record is made.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from streams.core.counters import (
    BYTES,
    ERRORS,
    HISTOGRAM_BOUNDS_NS,
    INVALID,
    IOS,
    OP_COUNTER_NAMES,
    SLOTS_PER_OP,
    TIME,
)
from streams.core.events import OPS
from streams.core.times import NS_PER_S
from streams.core.windows.exphist import ExpHistogram

if TYPE_CHECKING:
    from streams.core.windows.vector import OpPartial

WINDOW_LENGTHS_NS = (NS_PER_S, 60 * NS_PER_S, 3600 * NS_PER_S)
WINDOW_NAMES = dict(zip(WINDOW_LENGTHS_NS, ("1s", "1m", "1h"), strict=True))  # as the CLI, web
# HISTOGRAM_BOUNDS_NS: section 3's bounds, kept in counters.py (the cumulative histogram's too).
N_BINS = len(HISTOGRAM_BOUNDS_NS) + 1
# (name suffix, numerator, denominator): rank = ceil(n * num / den), in integers.
PERCENTILES: tuple[tuple[str, int, int], ...] = (
    ("p50", 50, 100), ("p90", 90, 100), ("p99", 99, 100), ("p99_9", 999, 1000),
)


# Busy intervals: an int64 array of shape (n, 2), one sorted, disjoint, non-touching
# [start, end] per row (ends lie inside the window, so int64 holds them). A window has
# dozens to hundreds (most of its bytes): rows of one array, not a list per interval, so
# making, packing and reading them is a numpy call a window, not a Python object each
# (docs/performance.md, session 20).
NO_BUSY = np.empty((0, 2), dtype=np.int64)
NO_BUSY.flags.writeable = False  # shared by every window without intervals: never changed


def busy_array(intervals: Any) -> np.ndarray:
    """Intervals as :class:`WindowAcc` keeps them, from an array or [[start, end], ...]
    (a value outside int64 raises OverflowError)."""
    if isinstance(intervals, np.ndarray) and intervals.dtype == np.int64:
        return intervals.reshape(-1, 2)
    if len(intervals) == 0:
        return NO_BUSY
    return np.array(intervals, dtype=np.int64).reshape(-1, 2)


def union_intervals(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The union of two arrays of sorted, disjoint, non-touching intervals, as one: an
    interval that overlaps or touches the furthest end before it joins it."""
    both = np.concatenate((a, b))
    both = both[np.argsort(both[:, 0], kind="stable")]
    lo, reach = both[:, 0], np.maximum.accumulate(both[:, 1])
    begins = np.flatnonzero(np.r_[True, lo[1:] > reach[:-1]])
    ends = np.r_[begins[1:], len(lo)] - 1
    return np.stack((lo[begins], reach[ends]), axis=1)


def busy_length(intervals: np.ndarray) -> int:
    """The total length of intervals, as an int (each is within a window: int64 sums)."""
    return int((intervals[:, 1] - intervals[:, 0]).sum())


def window_start_ns(t_ns: int, window_len_ns: int) -> int:
    """Start of the epoch-aligned tumbling window that holds ``t_ns``."""
    return t_ns - t_ns % window_len_ns


def percentile_ns(histogram: list[int], num: int, den: int, max_ns: int | None) -> int | None:
    """Upper bound of the first bin whose cumulative count reaches ceil(n*num/den)."""
    n = sum(histogram)
    if n == 0:
        return None
    rank = -(-n * num // den)
    cumulative = 0
    for i, count in enumerate(histogram):
        cumulative += count
        if cumulative >= rank:
            return HISTOGRAM_BOUNDS_NS[i] if i < len(HISTOGRAM_BOUNDS_NS) else max_ns
    raise AssertionError("unreachable: the cumulative count reaches n")


@dataclass(slots=True)
class OpAcc:
    """One op's integers within one window; ``counts``: the section 2 counters of the op,
    by slot (counters.IOS, BYTES, ERRORS, INVALID, TIME). ``exp``: the exponential
    histogram of the same latencies; None when not known (a window stored or published
    before it existed: then percentiles come from ``histogram``, as they did). It is
    empty exactly when ``min_ns`` is None, and None only when ``min_ns`` is not."""

    counts: list[int] = field(default_factory=lambda: [0] * SLOTS_PER_OP)
    min_ns: int | None = None
    max_ns: int | None = None
    histogram: list[int] = field(default_factory=lambda: [0] * N_BINS)
    inflight_ns: int = 0
    exp: ExpHistogram | None = field(default_factory=ExpHistogram)

    @property
    def ios(self) -> int:
        return self.counts[IOS]

    @property
    def nbytes(self) -> int:
        return self.counts[BYTES]

    @property
    def errors(self) -> int:
        return self.counts[ERRORS]

    @property
    def invalid(self) -> int:
        return self.counts[INVALID]

    @property
    def time_ns(self) -> int:
        return self.counts[TIME]

    def is_quiet(self, bins: int = N_BINS) -> bool:
        """Nothing counted, timed or in flight, and a ``bins``-long histogram: what most
        windows' flush or discard op is (packed and published as a constant)."""
        exp = self.exp
        return (self.min_ns is None and self.max_ns is None and not self.inflight_ns
                and not any(self.counts) and len(self.histogram) == bins
                and not any(self.histogram) and (exp is None or not (exp.counts or exp.zero)))

    def add_partial(self, part: OpPartial) -> None:
        """Add what a vectorised pass computed for this op and window (vector.py)."""
        counts = self.counts
        for slot, count in enumerate(part.counts):
            counts[slot] += count
        if part.min_ns is None or part.max_ns is None:
            return  # no event whose time counts: no latency, nothing in the histogram
        if self.min_ns is None or self.max_ns is None:  # no timed event yet: all zeros
            self.min_ns, self.max_ns, self.histogram = part.min_ns, part.max_ns, part.histogram
            self.exp = part.exp
            return
        self.min_ns, self.max_ns = min(self.min_ns, part.min_ns), max(self.max_ns, part.max_ns)
        self.histogram = [mine + theirs
                          for mine, theirs in zip(self.histogram, part.histogram, strict=True)]
        if self.exp is not None:
            self.exp.merge(part.exp)

    def merge(self, other: OpAcc) -> None:
        counts = self.counts
        for slot, count in enumerate(other.counts):
            counts[slot] += count
        self.inflight_ns += other.inflight_ns
        for i, count in enumerate(other.histogram):
            self.histogram[i] += count
        if other.min_ns is not None:
            self.min_ns = other.min_ns if self.min_ns is None else min(self.min_ns, other.min_ns)
        if other.max_ns is not None:
            self.max_ns = other.max_ns if self.max_ns is None else max(self.max_ns, other.max_ns)
        if self.exp is not None:  # an unknown part makes the sum unknown
            if other.exp is None:
                self.exp = None
            else:
                self.exp.merge(other.exp)

    def to_list(self) -> list[Any]:
        exp = None if self.exp is None else self.exp.to_list()
        return [*self.counts, self.min_ns, self.max_ns, self.histogram, self.inflight_ns, exp]

    @classmethod
    def from_list(cls, values: list[Any]) -> OpAcc:
        min_ns, max_ns, histogram, inflight_ns, *exp = values[SLOTS_PER_OP:]
        if exp:
            known = None if exp[0] is None else ExpHistogram.from_list(exp[0])
        else:  # stored before the exponential histogram
            known = ExpHistogram() if min_ns is None else None
        return cls(values[:SLOTS_PER_OP], min_ns, max_ns, histogram, inflight_ns, known)


@dataclass(slots=True, eq=False)
class WindowAcc:
    """The integers of one volume's window; ``busy`` holds merged in-flight intervals
    (an int64 array of [start, end] rows: :func:`busy_array`; a list is taken too).

    A 1 s window keeps its busy intervals (a late request must be unioned in);
    a rollup keeps only ``busy_ns`` (its parts are disjoint windows).
    """

    window_start_ns: int
    window_len_ns: int
    ops: list[OpAcc] = field(default_factory=lambda: [OpAcc() for _ in OPS])
    busy: np.ndarray = field(default_factory=lambda: NO_BUSY)
    busy_ns: int = 0

    def __post_init__(self) -> None:
        if type(self.busy) is not np.ndarray or self.busy.dtype != np.int64:
            self.busy = busy_array(self.busy)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WindowAcc):
            return NotImplemented
        return (self.window_start_ns == other.window_start_ns
                and self.window_len_ns == other.window_len_ns and self.ops == other.ops
                and self.busy_ns == other.busy_ns
                and np.array_equal(self.busy, other.busy))

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass was

    @classmethod
    def empty(cls, window_start_ns: int, window_len_ns: int) -> WindowAcc:
        """A window with nothing in it: the constructor's defaults, without the
        per-field factories (a batch makes thousands)."""
        return cls(window_start_ns, window_len_ns,
                   [OpAcc([0] * SLOTS_PER_OP, None, None, [0] * N_BINS, 0, ExpHistogram())
                    for _ in OPS])

    def union_busy(self, intervals: np.ndarray, length_ns: int) -> None:
        """Union sorted, disjoint, non-touching [start, end] intervals of this window
        (``length_ns``: their total) into the busy intervals: one sort and sweep."""
        if not len(self.busy):
            self.busy = busy_array(intervals)
            self.busy_ns += length_ns
            return
        old_ns = busy_length(self.busy)
        self.busy = union_intervals(self.busy, busy_array(intervals))
        self.busy_ns += busy_length(self.busy) - old_ns

    def merge(self, part: WindowAcc) -> None:
        """Add a shorter window that lies inside this one (a rollup)."""
        for mine, theirs in zip(self.ops, part.ops, strict=True):
            mine.merge(theirs)
        self.busy_ns += part.busy_ns

    def to_list(self) -> list[Any]:
        return [self.window_start_ns, self.window_len_ns, [o.to_list() for o in self.ops],
                self.busy.tolist(), self.busy_ns]

    @classmethod
    def from_list(cls, values: list[Any]) -> WindowAcc:
        start, length, ops, busy, busy_ns = values
        return cls(start, length, [OpAcc.from_list(o) for o in ops], busy_array(busy), busy_ns)


def rollup(parts: list[WindowAcc], window_len_ns: int) -> WindowAcc:
    """The window of ``window_len_ns`` that holds ``parts`` (all inside it), exactly."""
    if not parts:
        raise ValueError("a rollup needs at least one part")
    acc = WindowAcc(window_start_ns(parts[0].window_start_ns, window_len_ns), window_len_ns)
    for part in parts:
        if window_start_ns(part.window_start_ns, window_len_ns) != acc.window_start_ns:
            raise ValueError(f"window {part.window_start_ns} is not inside {acc.window_start_ns}")
        acc.merge(part)
    return acc


def acc_from_stats(stats: dict[str, Any]) -> WindowAcc:
    """The integers of a published window (a ``WindowStats`` record, :func:`window_stats`),
    as a rollup part: everything but the busy intervals, which a rollup does not need
    (its parts are disjoint windows, so their busy times add)."""
    ops = []
    for op_code, op in enumerate(OPS):
        counts = _counts_from_stats(stats, op_code)
        exp: ExpHistogram | None = ExpHistogram.from_record(stats[f"{op}_latency_exp"])
        if exp is not None and exp.total != counts[IOS] + counts[ERRORS]:
            exp = None  # a record written before it (its reader's default: empty): unknown
        ops.append(OpAcc(counts, stats[f"min_{op}_latency_ns"], stats[f"max_{op}_latency_ns"],
                         list(stats[f"{op}_latency_histogram"]),
                         stats[f"{op}_inflight_time_ns"], exp))
    return WindowAcc(stats["window_start_ns"], stats["window_length_ns"], ops, NO_BUSY,
                     stats["busy_time_ns"])


def _counts_from_stats(stats: dict[str, Any], op_code: int) -> list[int]:
    counts = [0] * SLOTS_PER_OP  # flush_bytes is not published: 0
    for name, slot in OP_COUNTER_NAMES[op_code]:
        counts[slot] = stats[name]
    return counts


_UNKNOWN_EXP = ExpHistogram()  # published as the empty default its readers take for unknown


def _op_fields(op_code: int, acc: OpAcc, window_len_ns: int) -> Iterator[tuple[str, Any]]:
    op = OPS[op_code]
    for name, slot in OP_COUNTER_NAMES[op_code]:
        yield name, acc.counts[slot]
    timed = acc.ios + acc.errors
    yield f"avg_{op}_latency_ns", acc.time_ns / timed if timed else None
    yield f"min_{op}_latency_ns", acc.min_ns
    yield f"max_{op}_latency_ns", acc.max_ns
    yield f"{op}_latency_histogram", list(acc.histogram)
    exp = acc.exp
    yield f"{op}_latency_exp", (_UNKNOWN_EXP if exp is None else exp).to_record()
    for name, num, den in PERCENTILES:
        yield f"{name}_{op}_latency_ns", (
            percentile_ns(acc.histogram, num, den, acc.max_ns) if exp is None
            else exp.percentile_ns(num, den, acc.min_ns, acc.max_ns))
    yield f"{op}_inflight_time_ns", acc.inflight_ns
    yield f"avg_{op}_queue_depth", acc.inflight_ns / window_len_ns


def window_stats(volume_id: str, tenant_id: str, acc: WindowAcc) -> dict[str, Any]:
    """The published statistics of one window, without its revision."""
    stats: dict[str, Any] = {
        "volume_id": volume_id, "tenant_id": tenant_id,
        "window_start_ns": acc.window_start_ns, "window_length_ns": acc.window_len_ns,
    }
    for op_code, op_acc in enumerate(acc.ops):
        stats.update(_op_fields(op_code, op_acc, acc.window_len_ns))
    stats["busy_time_ns"] = acc.busy_ns
    stats["idle_time_ns"] = acc.window_len_ns - acc.busy_ns
    stats["util"] = acc.busy_ns / acc.window_len_ns
    return stats
