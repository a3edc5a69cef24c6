"""Many windows' integers as numpy columns, and runs of integers laid out from them at once.

Pure logic: no faust, no aiokafka. A unit of the 1 s stage ends by packing every window it
touched (packed.py) and encoding every window it closed as a ``WindowStats`` record
(stats_codec.py). Both forms are, per window, a run of integers (zigzag varints) with a few
doubles in place; a window has hundreds of them, most of them histogram counts. Laid out
one window at a time in Python that cost ~18 µs a window for each form on the bench's
fleet (docs/performance.md, session 22). Here :func:`gather` reads each window's fields
once into :class:`WindowColumns` (a row per (window, op); the exponential histograms'
counts and the busy intervals as one flat array each, with a length per row), and a
:class:`Layout` places every field of every window with numpy calls over all of them; the
runs are then varint-encoded together (varints.py).

Exactness: the columns are int64. :func:`gather` refuses windows with an integer outside
int64 (None: the callers write those one by one, exactly, as before), and the layouts
mark windows they cannot lay out exactly as odd (:func:`divide` says how a double is
made exactly).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from streams.core.counters import SLOTS_PER_OP
from streams.core.events import OPS
from streams.core.sorting import stable_order
from streams.core.windows.acc import N_BINS, NO_BUSY, OpAcc, WindowAcc
from streams.core.windows.exphist import ExpHistogram

N_OPS = len(OPS)
_EXACT_DOUBLE = 1 << 53  # every integer of magnitude up to this is a double exactly


@dataclass(frozen=True, slots=True)
class WindowColumns:
    """The integers of ``n`` windows (WindowAcc's fields). Per window: ``start``,
    ``length``, ``busy_ns``, ``busy_len``; per (window, op) row, window-major (row
    ``w * N_OPS + op``): the rest. An op's exponential histogram is as read trimmed
    (exphist.ExpHistogram.read_trimmed), its counts ``exp_len`` of ``exp_counts`` in row
    order; ``exp_listed``: whether the histogram, untrimmed, listed any bucket (the packed
    form tells that apart). Busy intervals: ``busy_len`` rows of ``busy`` per window."""

    start: np.ndarray
    length: np.ndarray
    counts: np.ndarray  # (rows, SLOTS_PER_OP)
    has_min: np.ndarray
    min_ns: np.ndarray  # 0 where not has_min
    has_max: np.ndarray
    max_ns: np.ndarray
    histogram: np.ndarray  # (rows, N_BINS)
    inflight_ns: np.ndarray
    exp_known: np.ndarray
    exp_listed: np.ndarray
    exp_offset: np.ndarray
    exp_zero: np.ndarray
    exp_len: np.ndarray
    exp_counts: np.ndarray
    busy_len: np.ndarray
    busy: np.ndarray  # (intervals, 2)
    busy_ns: np.ndarray
    extra: np.ndarray  # (windows, k): the integers a caller gave with each window

    def __len__(self) -> int:
        return len(self.start)

    def row_op(self) -> np.ndarray:
        """Each row's op code."""
        return np.tile(np.arange(N_OPS), len(self))

    def row_window(self) -> np.ndarray:
        """Each row's window index."""
        return np.repeat(np.arange(len(self)), N_OPS)

    def take_index(self, index: np.ndarray) -> WindowColumns:
        """The windows at ``index`` (ints), in that order: these columns themselves when
        that is all of them in their order (columns are never changed in place; about a
        third of the takes of a unit at 1,000 volumes are such)."""
        n = len(self.start)
        if len(index) == n and (n == 0 or bool((index == np.arange(n)).all())):
            return self
        rows = (index[:, None] * N_OPS + np.arange(N_OPS)).reshape(-1)
        exp_first = np.cumsum(self.exp_len) - self.exp_len
        busy_first = np.cumsum(self.busy_len) - self.busy_len
        return WindowColumns(
            self.start[index], self.length[index], self.counts[rows], self.has_min[rows],
            self.min_ns[rows], self.has_max[rows], self.max_ns[rows], self.histogram[rows],
            self.inflight_ns[rows], self.exp_known[rows], self.exp_listed[rows],
            self.exp_offset[rows], self.exp_zero[rows], self.exp_len[rows],
            self.exp_counts[_spans(exp_first[rows], self.exp_len[rows])],
            self.busy_len[index], self.busy[_spans(busy_first[index], self.busy_len[index])],
            self.busy_ns[index], self.extra[index])

    def with_extra(self, extra: np.ndarray) -> WindowColumns:
        """The same windows with other extra integers."""
        return dataclasses.replace(self, extra=extra)

    def take(self, keep: np.ndarray) -> WindowColumns:
        """The windows where ``keep`` (a bool per window) is set, in order."""
        rows = np.repeat(keep, N_OPS)
        return WindowColumns(
            self.start[keep], self.length[keep], self.counts[rows], self.has_min[rows],
            self.min_ns[rows], self.has_max[rows], self.max_ns[rows], self.histogram[rows],
            self.inflight_ns[rows], self.exp_known[rows], self.exp_listed[rows],
            self.exp_offset[rows], self.exp_zero[rows], self.exp_len[rows],
            self.exp_counts[np.repeat(rows, self.exp_len)], self.busy_len[keep],
            self.busy[np.repeat(keep, self.busy_len)], self.busy_ns[keep], self.extra[keep])


Batch = TypeVar("Batch")


def by_batch(sources: Iterable[tuple[Batch, int] | None]
             ) -> tuple[list[tuple[Batch, list[int], list[int]]], list[int]]:
    """Items that each name a row of a batch of windows held as columns ((batch, its
    index there)), grouped by batch in the order first seen: (batch, the items'
    positions, their rows); and the positions of the items that name none (None)."""
    groups: dict[int, tuple[Batch, list[int], list[int]]] = {}
    others: list[int] = []
    for i, source in enumerate(sources):
        if source is None:
            others.append(i)
            continue
        batch, k = source
        group = groups.get(id(batch))
        if group is None:
            group = groups[id(batch)] = (batch, [], [])
        group[1].append(i)
        group[2].append(k)
    return list(groups.values()), others


def _spans(first: np.ndarray, length: np.ndarray) -> np.ndarray:
    """The indexes [first, first + length) of each span, one span after another."""
    total = int(length.sum())
    return np.repeat(first - (np.cumsum(length) - length), length) + np.arange(total)


def gather(accs: Sequence[WindowAcc], extra: Sequence[tuple[int, ...]]
           ) -> WindowColumns | None:
    """The columns of ``accs``, with ``extra`` integers per window (WindowColumns.extra);
    None when one does not fit them: an integer outside int64, or ops or histogram bins
    other than this version's (an older stored window)."""
    starts, lengths, busy_ns, busy_len, busy = [], [], [], [], []
    counts: list[int] = []
    histogram: list[int] = []
    has_min, mins, has_max, maxs, inflight = [], [], [], [], []
    known, listed, offsets, zeros, lens = [], [], [], [], []
    exp_counts: list[int] = []
    for acc in accs:
        ops = acc.ops
        if len(ops) != N_OPS:
            return None
        starts.append(acc.window_start_ns)
        lengths.append(acc.window_len_ns)
        busy_ns.append(acc.busy_ns)
        intervals = acc.busy
        busy_len.append(len(intervals))
        if len(intervals):
            busy.append(intervals)
        for op in ops:
            counts += op.counts
            bins = op.histogram
            if len(bins) != N_BINS:
                return None
            histogram += bins
            low, high = op.min_ns, op.max_ns
            has_min.append(low is not None)
            mins.append(low or 0)
            has_max.append(high is not None)
            maxs.append(high or 0)
            inflight.append(op.inflight_ns)
            exp = op.exp
            if exp is None:
                known.append(False)
                listed.append(False)
                offsets.append(0)
                zeros.append(0)
                lens.append(0)
                continue
            listed.append(bool(exp.counts))
            exp = exp.read_trimmed()
            known.append(True)
            offsets.append(exp.offset)
            zeros.append(exp.zero)
            lens.append(len(exp.counts))
            exp_counts += exp.counts
    try:
        return WindowColumns(
            _ints(starts), _ints(lengths), _ints(counts).reshape(-1, SLOTS_PER_OP),
            np.array(has_min, dtype=bool), _ints(mins), np.array(has_max, dtype=bool),
            _ints(maxs), _ints(histogram).reshape(-1, N_BINS), _ints(inflight),
            np.array(known, dtype=bool), np.array(listed, dtype=bool), _ints(offsets),
            _ints(zeros), _ints(lens), _ints(exp_counts), _ints(busy_len),
            np.concatenate(busy) if busy else np.empty((0, 2), dtype=np.int64),
            _ints(busy_ns), np.array(extra, dtype=np.int64).reshape(len(starts), -1))
    except OverflowError:
        return None


def gather_fitting(accs: Sequence[WindowAcc], extra: Sequence[tuple[int, ...]]
                   ) -> tuple[WindowColumns | None, np.ndarray]:
    """:func:`gather` of those of ``accs`` that fit the columns (None: none), and which
    those are (a bool per window): one that does not is looked for only when one fails."""
    cols = gather(accs, extra)
    if cols is not None:
        return cols, np.ones(len(accs), dtype=bool)
    fits = np.array([gather([acc], [more]) is not None
                     for acc, more in zip(accs, extra, strict=True)], dtype=bool)
    kept = np.flatnonzero(fits).tolist()
    if not kept:
        return None, fits
    return gather([accs[k] for k in kept], [extra[k] for k in kept]), fits


def to_accs(cols: WindowColumns) -> list[WindowAcc]:
    """The windows of ``cols`` as objects (the inverse of :func:`gather` on what it
    holds: an exponential histogram comes back trimmed)."""
    counts, histogram = cols.counts.tolist(), cols.histogram.tolist()
    has_min, mins = cols.has_min.tolist(), cols.min_ns.tolist()
    has_max, maxs = cols.has_max.tolist(), cols.max_ns.tolist()
    inflight, known = cols.inflight_ns.tolist(), cols.exp_known.tolist()
    offsets, zeros = cols.exp_offset.tolist(), cols.exp_zero.tolist()
    exp_ends = np.cumsum(cols.exp_len).tolist()
    exp_counts = cols.exp_counts.tolist()
    busy_ends = np.cumsum(cols.busy_len).tolist()
    out = []
    row = 0
    for w, (start, length, busy_ns) in enumerate(zip(cols.start.tolist(), cols.length.tolist(),
                                                      cols.busy_ns.tolist(), strict=True)):
        ops = []
        for r in range(row, row + N_OPS):
            exp = (ExpHistogram(offsets[r], exp_counts[exp_ends[r] - int(cols.exp_len[r]):
                                                       exp_ends[r]], zeros[r])
                   if known[r] else None)
            ops.append(OpAcc(counts[r], mins[r] if has_min[r] else None,
                             maxs[r] if has_max[r] else None, histogram[r], inflight[r], exp))
        row += N_OPS
        first = busy_ends[w] - int(cols.busy_len[w])
        busy = cols.busy[first:busy_ends[w]].copy() if busy_ends[w] > first else NO_BUSY
        out.append(WindowAcc(start, length, ops, busy, busy_ns))
    return out


def _ints(values: list[int]) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def unsigned(values: np.ndarray) -> np.ndarray:
    """The int64 whose zigzag form is each value: an unsigned varint written as a signed
    one (packed.py's ``_u``)."""
    return (values >> 1) ^ -(values & 1)


def divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` of int64s as Python divides ints (correctly rounded; ``den`` != 0):
    in floats where both are exact doubles (then IEEE division is that), else in Python."""
    exact = ((num >= -_EXACT_DOUBLE) & (num <= _EXACT_DOUBLE)
             & (den >= -_EXACT_DOUBLE) & (den <= _EXACT_DOUBLE))
    out = num.astype(np.float64) / np.where(exact, den, 1).astype(np.float64)
    for k in np.flatnonzero(~exact).tolist():
        out[k] = int(num[k]) / int(den[k])
    return out


class Layout:
    """The runs of integers of ``n`` windows, one run a window: its ``head`` fields, then
    each op's ``ops`` fields in turn, then its ``tail`` fields. A field gives each row of
    its section (a window; a (window, op) row for ``ops``) zero or more integers, or a
    double (a placeholder integer and the double to write over it: varints.zigzag_runs).
    Fields are added in their order; :meth:`build` places them all."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.sections: dict[str, list[tuple[str, Any, Any]]] = {"head": [], "ops": [],
                                                                "tail": []}

    def one(self, section: str, values: Any) -> None:
        """One integer per row (an array, or one value for all)."""
        self.sections[section].append(("one", 1, values))

    def maybe(self, section: str, present: np.ndarray, values: Any) -> None:
        """One integer in the rows where ``present``, none elsewhere."""
        self.sections[section].append(("maybe", present, values))

    def many(self, section: str, lens: np.ndarray, flat: np.ndarray) -> None:
        """``lens[r]`` integers in row r, the rows' in turn in ``flat``."""
        self.sections[section].append(("many", lens, flat))

    def double(self, section: str, present: np.ndarray, values: np.ndarray) -> None:
        """A double (8 bytes) in the rows where ``present``."""
        self.sections[section].append(("double", present, values))

    def build(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(integers, end of each window's run in them, doubles, their placeholders)."""
        n = self.n
        sizes = {name: n * (N_OPS if name == "ops" else 1) for name in self.sections}
        widths = {name: self._widths(fields, sizes[name])
                  for name, fields in self.sections.items()}
        ops = widths["ops"].reshape(n, N_OPS)
        op_total = ops.sum(axis=1)
        per_window = widths["head"] + op_total + widths["tail"]
        ends = np.cumsum(per_window)
        base = ends - per_window
        out = np.zeros(int(ends[-1]) if n else 0, dtype=np.int64)
        cursors = {"head": base.copy(),
                   "ops": ((base + widths["head"])[:, None] + np.cumsum(ops, axis=1)
                           - ops).reshape(-1),
                   "tail": base + widths["head"] + op_total}
        at: list[np.ndarray] = []
        doubles: list[np.ndarray] = []
        for name, fields in self.sections.items():
            cursor = cursors[name]
            for kind, width, values in fields:
                if kind == "one":
                    out[cursor] = values
                    cursor += 1
                elif kind == "many":
                    total = int(width.sum())
                    if total:
                        firsts = np.cumsum(width) - width
                        out[np.repeat(cursor - firsts, width) + np.arange(total)] = values
                    cursor += width
                else:
                    where = cursor[width]
                    if kind == "maybe":
                        out[where] = values[width] if isinstance(values, np.ndarray) else values
                    else:
                        at.append(where)
                        doubles.append(values[width])
                    cursor += width
        return (out, ends, np.concatenate(doubles) if doubles else np.empty(0),
                np.concatenate(at) if at else np.empty(0, dtype=np.intp))

    @staticmethod
    def _widths(fields: list[tuple[str, Any, Any]], rows: int) -> np.ndarray:
        total = np.zeros(rows, dtype=np.int64)
        for _, width, _ in fields:
            total += width
        return total


def running_max_by_run(values: np.ndarray, floor: np.ndarray, run_starts: np.ndarray
                       ) -> np.ndarray:
    """np.maximum.accumulate of ``values``, restarted at each True of ``run_starts``.

    Each run is made relative to its ``floor`` at the run's start (a run is one window's
    pieces: ends minus the lowest start, within (0, L]) and lifted by a per-run offset
    that keeps runs apart, when that fits in int64; else run by run."""
    run = np.cumsum(run_starts) - 1
    relative = values - floor[run_starts][run]
    spread = int(relative.max()) + 1
    if (int(run[-1]) + 1) * spread < (1 << 62):
        lift = run * spread
        return np.maximum.accumulate(relative + lift) - lift + (values - relative)
    out = np.empty_like(values)
    bounds = np.r_[np.flatnonzero(run_starts), len(values)]
    for first, after in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        out[first:after] = np.maximum.accumulate(values[first:after])
    return out


def empty_windows(start: np.ndarray, length: np.ndarray, extra: np.ndarray) -> WindowColumns:
    """Windows with nothing in them (WindowAcc.empty's)."""
    n = len(start)
    rows = n * N_OPS
    zeros = np.zeros(rows, dtype=np.int64)
    return WindowColumns(
        start, length, np.zeros((rows, SLOTS_PER_OP), dtype=np.int64),
        np.zeros(rows, dtype=bool), zeros, np.zeros(rows, dtype=bool), zeros.copy(),
        np.zeros((rows, N_BINS), dtype=np.int64), zeros.copy(), np.ones(rows, dtype=bool),
        np.zeros(rows, dtype=bool), zeros.copy(), zeros.copy(), zeros.copy(),
        np.empty(0, dtype=np.int64), np.zeros(n, dtype=np.int64),
        np.empty((0, 2), dtype=np.int64), np.zeros(n, dtype=np.int64), extra)


def concat(parts: Sequence[WindowColumns]) -> WindowColumns:
    """The windows of ``parts``, one after another."""
    if len(parts) == 1:
        return parts[0]
    return WindowColumns(*(np.concatenate([getattr(p, name) for p in parts])
                           for name in WindowColumns.__slots__))


def _overflowed(a: np.ndarray, b: np.ndarray, total: np.ndarray) -> bool:
    """Whether some a + b (int64) wrapped into ``total``."""
    return bool((((a ^ total) & (b ^ total)) < 0).any())


def add_partial(base: WindowColumns, part: WindowColumns) -> WindowColumns | None:
    """Each window of ``base`` with the same window of ``part`` (what events add:
    vector.partial_columns) added, as OpAcc.add_partial, the in-flight time and
    WindowAcc.union_busy do it; ``base``'s extra. None when a sum leaves int64."""
    counts = base.counts + part.counts
    inflight = base.inflight_ns + part.inflight_ns
    if _overflowed(base.counts, part.counts, counts) or _overflowed(
            base.inflight_ns, part.inflight_ns, inflight):
        return None
    timed = part.has_min & part.has_max
    replace = timed & ~(base.has_min & base.has_max)
    both = timed & ~replace
    min_ns = np.where(replace, part.min_ns,
                      np.where(both, np.minimum(base.min_ns, part.min_ns), base.min_ns))
    max_ns = np.where(replace, part.max_ns,
                      np.where(both, np.maximum(base.max_ns, part.max_ns), base.max_ns))
    histogram = np.where(replace[:, None], part.histogram,
                         np.where(both[:, None], base.histogram + part.histogram,
                                  base.histogram))
    # the exponential histogram: the part's where it replaces, the sum where both count
    # and this one is known, else this one's (unknown stays unknown)
    keep_base = ~replace
    summed = both & base.exp_known
    offset, length, flat = _sum_histograms(
        [(base.exp_offset, base.exp_len, base.exp_counts, keep_base),
         (part.exp_offset, part.exp_len, part.exp_counts, replace | summed)],
        len(counts))
    zero = np.where(replace, part.exp_zero,
                    np.where(summed, base.exp_zero + part.exp_zero, base.exp_zero))
    known = base.exp_known | replace
    listed = np.where(replace, part.exp_listed, base.exp_listed | (summed & part.exp_listed))
    busy_len, busy, busy_ns = _union_busy(base, part)
    return WindowColumns(
        base.start, base.length, counts, base.has_min | timed, min_ns, base.has_max | timed,
        max_ns, histogram, inflight, known, listed, offset, zero, length, flat, busy_len,
        busy, busy_ns, base.extra)


def _sum_histograms(inputs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                    rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, the sum of the exponential histograms (offset, bucket count, counts in
    row order, used) of ``inputs`` where used: offsets, bucket counts, counts. Trimmed
    histograms of counts >= 0 add up to a trimmed one."""
    lo = np.full(rows, np.iinfo(np.int64).max)
    hi = np.full(rows, np.iinfo(np.int64).min)
    for offset, length, _, used in inputs:
        some = used & (length > 0)
        lo = np.where(some, np.minimum(lo, offset), lo)
        hi = np.where(some, np.maximum(hi, offset + length), hi)
    span = np.where(hi > lo, hi - lo, 0)
    first = np.cumsum(span) - span
    out = np.zeros(int(span.sum()), dtype=np.int64)
    for offset, length, flat, used in inputs:
        owner = np.repeat(np.arange(rows), length)
        take = np.repeat(used, length)
        j = np.arange(len(flat)) - np.repeat(np.cumsum(length) - length, length)
        place = first[owner] + offset[owner] - lo[owner] + j
        out[place[take]] += flat[take]  # no place twice within one input
    return np.where(span > 0, lo, 0), span, out


def _union_busy(base: WindowColumns, part: WindowColumns
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per window, ``base``'s busy intervals with ``part``'s unioned in (an interval that
    overlaps or touches the furthest end before it joins it), and busy_ns grown by what
    the union adds: (interval counts, intervals, busy_ns)."""
    if not len(part.busy):
        return base.busy_len, base.busy, base.busy_ns
    n = len(base)
    owner = np.r_[np.repeat(np.arange(n), base.busy_len), np.repeat(np.arange(n),
                                                                      part.busy_len)]
    both = np.concatenate((base.busy, part.busy))
    order = np.lexsort((both[:, 0], owner))
    owner, lo, hi = owner[order], both[order, 0], both[order, 1]
    new_owner = np.r_[True, owner[1:] != owner[:-1]]
    reach = running_max_by_run(hi, lo, new_owner)
    begins = np.flatnonzero(new_owner | np.r_[True, lo[1:] > reach[:-1]])
    ends = np.r_[begins[1:], len(lo)] - 1
    merged = np.stack((lo[begins], reach[ends]), axis=1)
    count = np.bincount(owner[begins], minlength=n)
    old = _lengths(base.busy_len, base.busy, n)
    new = _lengths(count, merged, n)
    return count.astype(np.int64), merged, base.busy_ns + new - old


def _lengths(count: np.ndarray, intervals: np.ndarray, n: int) -> np.ndarray:
    """Per window, the total length of its ``count`` intervals (each within a window:
    int64)."""
    total = np.zeros(n, dtype=np.int64)
    some = np.flatnonzero(count)
    if len(some):
        firsts = (np.cumsum(count) - count)[some]
        total[some] = np.add.reduceat(intervals[:, 1] - intervals[:, 0], firsts)
    return total


_I64_MAX = np.iinfo(np.int64).max
_I64_MIN = np.iinfo(np.int64).min


def reduce_windows(cols: WindowColumns, group: np.ndarray, n_groups: int
                   ) -> WindowColumns | None:
    """Per group 0 .. n_groups - 1 (``group``: each window's; every group has one), its
    windows merged as WindowAcc.merge merges rollup parts: counters, histograms, in-flight
    and busy time add, min and max of those known, an exponential histogram unknown if
    any is; no busy intervals; start and length of the group's first window. None when a
    sum could leave int64."""
    if not len(cols):
        return None
    most = int(np.bincount(group).max())  # no sum has more terms than this
    if max(int(np.abs(cols.counts).max()), int(np.abs(cols.inflight_ns).max()),
           int(np.abs(cols.busy_ns).max()), int(np.abs(cols.histogram).max()),
           int(np.abs(cols.exp_zero).max())) >= _I64_MAX // most:
        return None
    order = stable_order(group)
    firsts = np.flatnonzero(np.r_[True, group[order][1:] != group[order][:-1]])
    rows = (order[:, None] * N_OPS + np.arange(N_OPS)).reshape(-1)
    by_op = [rows[op::N_OPS] for op in range(N_OPS)]  # each op's rows, group after group

    def per_op(values: np.ndarray, ufunc: np.ufunc) -> np.ndarray:
        out = np.empty((n_groups, N_OPS) + values.shape[1:], dtype=values.dtype)
        for op in range(N_OPS):
            out[:, op] = ufunc.reduceat(values[by_op[op]], firsts, axis=0)
        return out.reshape((n_groups * N_OPS,) + values.shape[1:])

    has_min, has_max = per_op(cols.has_min, np.logical_or), per_op(cols.has_max, np.logical_or)
    min_ns = per_op(np.where(cols.has_min, cols.min_ns, _I64_MAX), np.minimum)
    max_ns = per_op(np.where(cols.has_max, cols.max_ns, _I64_MIN), np.maximum)
    known = per_op(cols.exp_known, np.logical_and)
    row_group = np.repeat(group, N_OPS) * N_OPS + np.tile(np.arange(N_OPS), len(cols))
    offset, length, flat = _group_sum_histograms(cols, row_group, n_groups * N_OPS, known)
    if flat is None:
        return None
    windows = order[firsts]
    return WindowColumns(
        cols.start[windows], cols.length[windows], per_op(cols.counts, np.add), has_min,
        np.where(has_min, min_ns, 0), has_max, np.where(has_max, max_ns, 0),
        per_op(cols.histogram, np.add), per_op(cols.inflight_ns, np.add), known, length > 0,
        offset, np.where(known, per_op(cols.exp_zero, np.add), 0), length, flat,
        np.zeros(n_groups, dtype=np.int64), np.empty((0, 2), dtype=np.int64),
        np.add.reduceat(cols.busy_ns[order], firsts), np.empty((n_groups, 0), dtype=np.int64))


def _group_sum_histograms(cols: WindowColumns, row_group: np.ndarray, n_out: int,
                          known: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The sum of the exponential histograms of each output row's rows (``row_group``:
    each row's output row), for the output rows ``known``: offsets, bucket counts, counts;
    None for the counts when their sum could be inexact in the float weights."""
    lens = np.where(known[row_group], cols.exp_len, 0)
    some = lens > 0
    lo = np.full(n_out, _I64_MAX)
    hi = np.full(n_out, _I64_MIN)
    np.minimum.at(lo, row_group[some], cols.exp_offset[some])
    np.maximum.at(hi, row_group[some], cols.exp_offset[some] + lens[some])
    span = np.where(hi > lo, hi - lo, 0)
    first = np.cumsum(span) - span
    take = np.repeat(known[row_group], cols.exp_len)
    owner = np.repeat(np.arange(len(lens)), cols.exp_len)[take]
    values = cols.exp_counts[take]
    if len(values) and int(values.sum()) >= 1 << 53:
        return lo, span, None
    j = (np.arange(len(cols.exp_counts))
         - np.repeat(np.cumsum(cols.exp_len) - cols.exp_len, cols.exp_len))[take]
    out_row = row_group[owner]
    place = first[out_row] + cols.exp_offset[owner] - lo[out_row] + j
    flat = np.bincount(place, weights=values, minlength=int(span.sum())).astype(np.int64)
    return np.where(span > 0, lo, 0), span, flat
