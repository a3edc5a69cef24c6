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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streams.core.counters import SLOTS_PER_OP
from streams.core.events import OPS
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
