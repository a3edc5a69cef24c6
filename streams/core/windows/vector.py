"""The windows' and billing hours' aggregates of many volumes' events in one numpy pass
(DESIGN.md decision 2; SEMANTICS.md sections 3 and 5).

Pure logic: no faust, no aiokafka. Given a :class:`Columns` (validated events of one or
more volumes) and a window length, :func:`window_partials` computes, per (volume, window),
what those events add to its :class:`~streams.core.windows.acc.WindowAcc`: the counters,
min/max latency, the 20-bin and the exponential histogram per op of the events completing in it, the
in-flight time per op of the ok/failed requests overlapping it, and the union of those
pieces (busy intervals). A request is cut into its first and last piece; the windows it
covers whole between them are counted per (volume, op) by a difference array, so a long
request costs O(1) plus the windows touched, never one piece per window.
:func:`hour_partials` does the section 2 counters per (volume, hour) for billing.

Exactness: latencies are taken as uint64 (``complete - submit`` of int64s lies in
[0, 2**64), so the wrapped difference is exact); every sum is checked against a bound
before it is done in 64 bits, and otherwise done as two 32-bit halves (:func:`exact_sums`).
Never float weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from streams.core.batch import Columns
from streams.core.counters import BYTES, SLOTS_PER_OP, TIME
from streams.core.events import INT64_MAX, OPS
from streams.core.sorting import stable_order, stable_order_by
from streams.core.times import HOUR_NS
from streams.core.windows import kernels
from streams.core.windows.acc import N_BINS
from streams.core.windows.columns import N_OPS, WindowColumns, running_max_by_run
from streams.core.windows.exphist import ExpHistogram, group_histogram_columns, group_histograms
from streams.core.windows.kernels import BIN_BOUNDS, COUNTS_BYTES, COUNTS_TIME, STATUS_SLOT

_N_OPS = len(OPS)
_U64_LIMIT = 1 << 64
_LOW_32 = np.uint64(0xFFFF_FFFF)
INT64_MIN = -(1 << 63)


Busy = tuple[np.ndarray, int]  # a window's merged busy intervals (acc.busy_array), length


@dataclass(slots=True)
class OpPartial:
    """What events add to one op of one window (``counts`` by counter slot)."""

    volume: int  # index into the Columns' volume table
    window: int  # window index: the window starts at window * window_len_ns
    op: int
    counts: list[int]
    min_ns: int | None
    max_ns: int | None
    histogram: list[int]
    exp: ExpHistogram


@dataclass(slots=True)
class WindowPartials:
    """The aggregates of one :func:`window_partials` pass, ordered by (volume, window, op)."""

    late: int  # events whose window lies past the revision horizon (counted nowhere else)
    completions: list[OpPartial]
    inflight: list[tuple[int, int, int, int]]  # (volume, window, op, in-flight ns)
    busy: dict[tuple[int, int], Busy]  # (volume, window) -> merged intervals, length


def latencies_ns(columns: Columns) -> np.ndarray:
    """complete_ns - submit_ns of each event, exact, as uint64."""
    return columns.complete_ns.view(np.uint64) - columns.submit_ns.view(np.uint64)


def exact_sums(values: np.ndarray, starts: np.ndarray) -> list[int]:
    """Sums of the runs of uint64 ``values`` that begin at ``starts``, as exact ints: in
    64 bits when the largest value times the count cannot reach 2**64, else by halves."""
    if len(values) == 0:
        return []
    if int(values.max()) * len(values) < _U64_LIMIT:
        sums: list[int] = np.add.reduceat(values, starts).tolist()
        return sums
    high = np.add.reduceat(values >> np.uint64(32), starts).tolist()  # < 2**32 each, and
    low = np.add.reduceat(values & _LOW_32, starts).tolist()  # fewer than 2**32 values
    return [(h << 32) + lo for h, lo in zip(high, low, strict=True)]


def _runs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A stable order that sorts ``keys``, and where each run of equal keys begins in it."""
    order = stable_order(keys)
    ordered = keys[order]
    if len(ordered) == 0:
        return order, np.empty(0, dtype=np.intp)
    return order, np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])


def _by_then(major: np.ndarray, minor: np.ndarray) -> np.ndarray:
    """The stable order by ``major`` (>= 0) then ``minor`` (np.lexsort((minor, major)))."""
    if not len(minor):
        return np.empty(0, dtype=np.intp)
    low = int(minor.min())
    span = int(minor.max()) - low + 1
    if span >= 1 << 62:
        return np.lexsort((minor, major))
    return stable_order_by(major, minor - low, span)


def _dense_key(volume: np.ndarray, window: np.ndarray, op: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """One int64 per (volume, window, op), ordered as the triple: window indexes are
    ranked first, so the key stays below volumes * events * ops whatever their range."""
    windows, rank = _ranked(window)
    key = (volume.astype(np.int64) * len(windows) + rank) * _N_OPS + op
    return key, windows


def _ranked(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(values, return_inverse=True): the distinct values in order, and each
    value's index into them. Without a sort when the values' range is no longer than
    they are (a step's events mostly span a few windows): by counting. The numbering
    stays dense either way (keys built on it keep their width, and so radix sorts of
    them their passes)."""
    if len(values):
        low, high = int(values.min()), int(values.max())
        if high - low < len(values):
            offset = values - low
            present = np.bincount(offset, minlength=high - low + 1) > 0
            return np.flatnonzero(present) + low, (np.cumsum(present) - 1)[offset]
    numbers, rank = np.unique(values, return_inverse=True)
    return numbers, rank.reshape(-1)


def _decode_key(key: np.ndarray, windows: np.ndarray) -> tuple[list[int], list[int], list[int]]:
    pair = key // _N_OPS
    return ((pair // len(windows)).tolist(), windows[pair % len(windows)].tolist(),
            (key % _N_OPS).tolist())


def frozen_window(frozen_before_ns: int | None, window_len_ns: int) -> int | None:
    """The first window index the revision horizon leaves revisable (None: all are)."""
    return None if frozen_before_ns is None else frozen_before_ns // window_len_ns


def inflight_from_ns(frozen_before_ns: int | None, window_len_ns: int) -> int | None:
    """Where in-flight pieces start to count: the start of the first window that ends
    after ``frozen_before_ns`` (None: everywhere)."""
    first = frozen_window(frozen_before_ns, window_len_ns)
    return None if first is None else first * window_len_ns


def _in_horizon(columns: Columns, window_len_ns: int, first_window: int | None,
                from_ns: int | None) -> tuple[int, Columns, np.ndarray, int | None]:
    """How many events complete before ``first_window`` (late), the others and their
    windows, and ``from_ns`` (None: ``first_window``'s start)."""
    window = np.floor_divide(columns.complete_ns, window_len_ns)
    late = 0
    if first_window is not None:
        keep = window >= first_window
        late = len(columns) - int(np.count_nonzero(keep))
        if late:
            columns, window = columns.take(keep), window[keep]
        if from_ns is None:
            from_ns = first_window * window_len_ns
    return late, columns, window, from_ns


def window_partials(columns: Columns, window_len_ns: int, first_window: int | None,
                    from_ns: int | None = None, own_len_ns: int | None = None
                    ) -> WindowPartials:
    """Every (volume, window) aggregate the events add, skipping windows below
    ``first_window`` (past the revision horizon: their events count in ``late``), and the
    in-flight time before ``from_ns`` (windows final by then; None: ``first_window``'s
    start) but in a request's own completion window (of ``own_len_ns``, the length the
    worker's horizon applies to, when its windows of ``window_len_ns`` are rollups of
    those; None: ``window_len_ns``). The cost is O(events + windows touched), whatever
    the requests' lengths."""
    late, columns, window, from_ns = _in_horizon(columns, window_len_ns, first_window,
                                                 from_ns)
    latency = latencies_ns(columns)
    return WindowPartials(late, _completions(columns, window, latency),
                          *_inflight(columns, window_len_ns, from_ns,
                                     own_len_ns or window_len_ns))


@dataclass
class _Completed:
    """A batch's completions grouped by (volume, window, op) (dense ``key`` per group,
    decoded with ``windows``), events in group order: what both the objects' and the
    columns' sums are made from."""

    key: np.ndarray  # per group
    windows: np.ndarray
    starts: np.ndarray  # each group's first event
    group: np.ndarray  # per event
    timed: np.ndarray  # per event: its latency counts
    latency: np.ndarray
    nbytes: np.ndarray  # uint64, 0 where the bytes do not count
    timed_latency: np.ndarray  # uint64, 0 where the latency does not count
    counts: np.ndarray  # (groups, SLOTS_PER_OP): the requests by status
    some: np.ndarray  # per group: a latency counts
    low: np.ndarray  # uint64 min latency (a high sentinel where none counts)
    high: np.ndarray
    histogram: np.ndarray  # (groups, N_BINS)


def _completed(columns: Columns, window: np.ndarray, latency: np.ndarray) -> _Completed:
    key, windows = _dense_key(columns.volume, window, columns.op)
    order, starts = _runs(key)
    status = columns.status[order]
    latency = latency[order]
    timed = COUNTS_TIME[status]
    n_groups = len(starts)
    group = np.repeat(np.arange(n_groups), np.diff(np.r_[starts, len(order)]))
    counts = np.bincount(group * SLOTS_PER_OP + STATUS_SLOT[status],
                         minlength=n_groups * SLOTS_PER_OP).reshape(n_groups, SLOTS_PER_OP)
    nbytes = np.where(COUNTS_BYTES[status], columns.nbytes[order], 0).view(np.uint64)
    timed_latency = np.where(timed, latency, np.uint64(0))
    some = np.add.reduceat(timed.astype(np.int64), starts) > 0
    low = np.minimum.reduceat(np.where(timed, latency, np.uint64(_U64_LIMIT - 1)), starts)
    high = np.maximum.reduceat(timed_latency, starts)
    bins = np.searchsorted(BIN_BOUNDS, latency[timed], side="right")
    histogram = np.bincount(group[timed] * N_BINS + bins, minlength=n_groups * N_BINS
                            ).reshape(n_groups, N_BINS)
    return _Completed(key[order][starts], windows, starts, group, timed, latency, nbytes,
                      timed_latency, counts, some, low, high, histogram)


def _completions(columns: Columns, window: np.ndarray, latency: np.ndarray
                 ) -> list[OpPartial]:
    if len(columns) == 0:
        return []
    c = _completed(columns, window, latency)
    byte_sums = exact_sums(c.nbytes, c.starts)
    time_sums = exact_sums(c.timed_latency, c.starts)
    exps = group_histograms(c.group[c.timed], c.latency[c.timed], len(c.starts))
    volumes, windows_of, ops = _decode_key(c.key, c.windows)
    out = []
    for g, (row, some, lo, hi, histogram) in enumerate(zip(
            c.counts.tolist(), c.some.tolist(), c.low.tolist(), c.high.tolist(),
            c.histogram.tolist(), strict=True)):
        row[BYTES], row[TIME] = byte_sums[g], time_sums[g]
        out.append(OpPartial(volumes[g], windows_of[g], ops[g], row, lo if some else None,
                             hi if some else None, histogram, exps[g]))
    return out


Requests = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _requests(columns: Columns, window_len_ns: int, from_ns: int | None, own_len_ns: int
              ) -> Requests:
    """The ok/failed requests' in-flight intervals from ``from_ns`` on, or from the start
    of their own completion window if that is earlier (the window counts their completion
    anyway): (event index, start, end, first window, last window)."""
    start = columns.submit_ns
    end = columns.complete_ns
    if from_ns is not None and len(start) and from_ns > INT64_MIN:
        # Earlier windows are final; a request kept ends after this, so it is int64.
        own = np.floor_divide(end, own_len_ns)
        lowest = -(INT64_MIN // -own_len_ns)  # the first window starting in int64
        own_start_ns = np.where(own >= lowest, np.maximum(own, lowest) * own_len_ns,
                                INT64_MIN)
        start = np.maximum(start, np.minimum(own_start_ns, from_ns))
    which = np.flatnonzero(COUNTS_TIME[columns.status] & (end > start))
    start, end = start[which], end[which]
    return (which, start, end, np.floor_divide(start, window_len_ns),
            np.floor_divide(end - 1, window_len_ns))


def _edges(requests: Requests, window_len_ns: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each request's first and last piece (one piece when it lies in one window):
    (event index, window index, piece start, piece end). The windows between are
    :func:`_middles`'."""
    which, start, end, first, last = requests
    spans = np.flatnonzero(last > first)
    # (first + 1) * L and last * L are taken only where they lie inside the request, so
    # inside int64; elsewhere (wrapped) np.where drops them.
    first_end = np.where(last > first, (first + 1) * window_len_ns, end)
    return (np.r_[which, which[spans]], np.r_[first, last[spans]],
            np.r_[start, last[spans] * window_len_ns], np.r_[first_end, end[spans]])


def _middles(volume: np.ndarray, op: np.ndarray, first: np.ndarray, last: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The windows requests cover whole (strictly between their first and last window),
    per (volume, op): (volume, window, op, requests covering it). A difference array over
    the breakpoints, so O(requests + windows covered), not one piece per window."""
    inner = np.flatnonzero(last - first >= 2)
    pair = volume[inner].astype(np.int64) * _N_OPS + op[inner]
    keys = np.r_[pair, pair]
    at = np.r_[first[inner] + 1, last[inner]]  # each covers [first + 1, last)
    delta = np.r_[np.ones(len(inner), np.int64), np.full(len(inner), -1, np.int64)]
    order = _by_then(keys, at)
    keys, at = keys[order], at[order]
    count = np.cumsum(delta[order])  # a pair's deltas add up to 0: no carry to the next
    seg = np.flatnonzero((count[:-1] > 0) & (keys[1:] == keys[:-1]) & (at[1:] > at[:-1]))
    n_windows = at[seg + 1] - at[seg]
    rep = np.repeat(seg, n_windows)
    step = np.arange(len(rep)) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)
    return keys[rep] // _N_OPS, at[rep] + step, keys[rep] % _N_OPS, count[rep]


def _inflight(columns: Columns, window_len_ns: int, from_ns: int | None, own_len_ns: int
              ) -> tuple[list[tuple[int, int, int, int]], dict[tuple[int, int], Busy]]:
    requests = _requests(columns, window_len_ns, from_ns, own_len_ns)
    which, _, _, first, last = requests
    if len(which) == 0:
        return [], {}
    event, window, lo, hi = _edges(requests, window_len_ns)
    m_volume, m_window, m_op, m_count = _middles(columns.volume[which], columns.op[which],
                                                 first, last)
    key, windows = _dense_key(np.r_[columns.volume[event], m_volume], np.r_[window, m_window],
                              np.r_[columns.op[event], m_op])
    edge_key, middle_key = key[:len(event)], key[len(event):]
    order, starts = _runs(edge_key)
    sums = exact_sums((hi - lo).view(np.uint64)[order], starts)
    totals = dict(zip(edge_key[order][starts].tolist(), sums, strict=True))
    for k, n in zip(middle_key.tolist(), m_count.tolist(), strict=True):
        totals[k] = totals.get(k, 0) + n * window_len_ns  # Python ints: exact
    keys = sorted(totals)
    volumes, windows_of, ops = _decode_key(np.array(keys, dtype=np.int64), windows)
    inflight = list(zip(volumes, windows_of, ops, [totals[k] for k in keys], strict=True))
    # A covered window is busy whole: one full piece per (volume, window, op) says so.
    m_lo = m_window * window_len_ns
    return inflight, _busy(key // _N_OPS, np.r_[lo, m_lo], np.r_[hi, m_lo + window_len_ns],
                           windows, window_len_ns)

def _busy(pair: np.ndarray, lo: np.ndarray, hi: np.ndarray, windows: np.ndarray,
          window_len_ns: int) -> dict[tuple[int, int], Busy]:
    """The union of the pieces of each (volume, window) ``pair``, as sorted, disjoint,
    non-touching [start, end] intervals (what WindowAcc keeps)."""
    volume, window, count, intervals, totals = _busy_columns(pair, lo, hi, windows)
    bounds = np.r_[0, np.cumsum(count)].tolist()
    return {(v, w): (intervals[first:after].copy(), total)  # a window's rows copied out
            for v, w, first, after, total in zip(volume.tolist(), window.tolist(), bounds,
                                                 bounds[1:], totals.tolist(), strict=False)}


@dataclass(slots=True)
class HourPartial:
    volume: int
    hour_start_ns: int
    counters: list[int]  # the section 2 slots of all ops (counters.N_SLOTS)


def hour_partials(columns: Columns) -> list[HourPartial]:
    """The section 2 counters per (volume, hour of complete_ns), ordered by both."""
    if len(columns) == 0:
        return []
    hour = np.floor_divide(columns.complete_ns, HOUR_NS)
    key, hours = _dense_key(columns.volume, hour, columns.op)
    order, starts = _runs(key)
    status = columns.status[order]
    n_groups = len(starts)
    group = np.repeat(np.arange(n_groups), np.diff(np.r_[starts, len(order)]))
    counts = np.bincount(group * SLOTS_PER_OP + STATUS_SLOT[status],
                         minlength=n_groups * SLOTS_PER_OP).reshape(n_groups, SLOTS_PER_OP)
    byte_sums = exact_sums(
        np.where(COUNTS_BYTES[status], columns.nbytes[order], 0).view(np.uint64), starts)
    time_sums = exact_sums(
        np.where(COUNTS_TIME[status], latencies_ns(columns)[order], np.uint64(0)), starts)
    group_key = key[order][starts]
    pair = group_key // _N_OPS  # (volume, hour) of each (volume, hour, op), in order
    first = np.r_[True, pair[1:] != pair[:-1]]
    of_pair = np.cumsum(first) - 1
    pairs = pair[first]
    rows = np.zeros((len(pairs), _N_OPS, SLOTS_PER_OP), dtype=np.int64)
    if max(byte_sums) <= INT64_MAX and max(time_sums) <= INT64_MAX:
        counts[:, BYTES], counts[:, TIME] = byte_sums, time_sums
        rows[of_pair, group_key % _N_OPS] = counts
        counters: list[list[int]] = rows.reshape(len(pairs), -1).tolist()
    else:  # a sum past int64 (absurd but valid): Python ints
        counters = rows.reshape(len(pairs), -1).tolist()
        for g, (at, op, row) in enumerate(zip(of_pair.tolist(), (group_key % _N_OPS).tolist(),
                                              counts.tolist(), strict=True)):
            row[BYTES], row[TIME] = byte_sums[g], time_sums[g]
            counters[at][op * SLOTS_PER_OP:(op + 1) * SLOTS_PER_OP] = row
    return [HourPartial(volume, hour * HOUR_NS, row) for volume, hour, row in zip(
        (pairs // len(hours)).tolist(), hours[pairs % len(hours)].tolist(), counters,
        strict=True)]


@dataclass(frozen=True, slots=True)
class PartialColumns:
    """What :func:`partial_columns` found: ``cols`` has one window per (volume, window)
    the events touch, ordered by both (``volume``: index into the Columns' volume table;
    ``window``: window index), with what they add to it."""

    late: int
    volume: np.ndarray
    window: np.ndarray
    cols: WindowColumns
    busy_total: np.ndarray  # per window: the length of the busy intervals the events add


_INT64_LIMIT = 1 << 63


def partial_columns(columns: Columns, window_len_ns: int, first_window: int | None,
                    from_ns: int | None = None, own_len_ns: int | None = None
                    ) -> PartialColumns | None:
    """:func:`window_partials` as columns (:class:`WindowColumns`, in-flight time and busy
    intervals in their windows' rows); None when a sum or latency leaves int64 (then the
    objects of :func:`window_partials` hold them, exactly)."""
    late, columns, window, from_ns = _in_horizon(columns, window_len_ns, first_window,
                                                 from_ns)
    done = _completion_columns(columns, window, latencies_ns(columns))
    flight = _inflight_columns(columns, window_len_ns, from_ns, own_len_ns or window_len_ns)
    if done is None or flight is None:
        return None
    c_volume, c_window, c_op, counts, timed, low, high, histogram, exp = done
    f_volume, f_window, f_op, f_ns, b_volume, b_window, b_len, b_flat, b_total = flight
    windows, rank = _ranked(np.r_[c_window, f_window, b_window])
    n_c, n_f = len(c_window), len(f_window)
    width = len(windows)
    pair = np.r_[c_volume, f_volume, b_volume].astype(np.int64) * width + rank
    pairs, row = np.unique(pair, return_inverse=True)
    row = row.reshape(-1)
    n = len(pairs)
    rows = n * N_OPS
    c_row = row[:n_c] * N_OPS + c_op
    f_row = row[n_c:n_c + n_f] * N_OPS + f_op
    b_row = row[n_c + n_f:]
    offsets, zeros, lens, flat = exp
    has = _placed(rows, c_row, timed)
    exp_len = _placed(rows, c_row, lens)
    busy_total = _placed(n, b_row, b_total)
    cols = WindowColumns(
        windows[pairs % width] * window_len_ns, np.full(n, window_len_ns, dtype=np.int64),
        _placed(rows, c_row, counts), has, _placed(rows, c_row, np.where(timed, low, 0)),
        has.copy(), _placed(rows, c_row, np.where(timed, high, 0)),
        _placed(rows, c_row, histogram), _placed(rows, f_row, f_ns),
        np.ones(rows, dtype=bool), exp_len > 0, _placed(rows, c_row, offsets),
        _placed(rows, c_row, zeros), exp_len, flat, _placed(n, b_row, b_len), b_flat,
        np.zeros(n, dtype=np.int64), np.empty((n, 0), dtype=np.int64))
    return PartialColumns(late, pairs // width, windows[pairs % width], cols, busy_total)


def _placed(n: int, at: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``n`` rows of zeros (of ``values``' dtype and row shape) with ``values`` at ``at``."""
    out = np.zeros((n, *values.shape[1:]), dtype=values.dtype)
    out[at] = values
    return out


def _sums64(values: np.ndarray, starts: np.ndarray) -> np.ndarray | None:
    """Sums of the runs of uint64 ``values`` beginning at ``starts`` as int64, or None
    when one could leave int64."""
    if len(values) and int(values.max()) * len(values) >= _INT64_LIMIT:
        return None
    return np.add.reduceat(values, starts).astype(np.int64) if len(values) else \
        np.zeros(len(starts), dtype=np.int64)


def _completion_columns(columns: Columns, window: np.ndarray, latency: np.ndarray
                        ) -> tuple[Any, ...] | None:
    """Per (volume, window, op) with completions, in that order: volume, window, op,
    counts, whether a latency counts, min and max latency, 20-bin histogram, exponential
    histogram columns (exphist.group_histogram_columns). None when a sum or latency
    leaves int64. The compiled loop (kernels.py) where it can, else its numpy twin."""
    if len(columns) == 0:
        empty = np.empty(0, dtype=np.int64)
        return (empty, empty, empty, np.empty((0, SLOTS_PER_OP), dtype=np.int64),
                np.empty(0, dtype=bool), empty, empty, np.empty((0, N_BINS), dtype=np.int64),
                (empty, empty, empty, empty))
    compiled = _compiled_completion_columns(columns, window, latency)
    return compiled if compiled is not None else \
        _numpy_completion_columns(columns, window, latency)


def _in_kernel_range(columns: Columns) -> bool:
    """Whether every op, status and volume index of ``columns`` is one the kernels index
    their tables with (they do not check bounds: a validated event always is; anything
    else goes to the numpy twins, which do)."""
    return bool(len(columns) == 0 or (int(columns.op.max()) < _N_OPS
                                      and int(columns.status.max()) < len(STATUS_SLOT)
                                      and 0 <= int(columns.volume.min())
                                      and int(columns.volume.max()) < len(columns.volumes)))


def _compiled_completion_columns(columns: Columns, window: np.ndarray, latency: np.ndarray
                                 ) -> tuple[Any, ...] | None:
    """:func:`_completion_columns` by kernels.completions; None where its preconditions
    do not hold: a byte count or latency that times the events could leave int64 (the
    twin checks the counted ones alone, exactly), or more (volume, window, op) keys than
    its dense table takes (many volumes or windows, few events: the twin sorts)."""
    n = len(columns)
    nbytes = columns.nbytes
    if (not _in_kernel_range(columns) or int(nbytes.min()) < 0
            or int(nbytes.max()) * n >= _INT64_LIMIT or int(latency.max()) * n >= _INT64_LIMIT):
        return None
    windows, rank = _ranked(window)
    width = len(windows)
    n_keys = len(columns.volumes) * width * _N_OPS  # volume indexes lie below len(volumes)
    if n_keys > max(kernels.TABLE_PER_EVENT * n, kernels.TABLE_FLOOR):
        return None
    key = (columns.volume.astype(np.int64) * width + rank) * _N_OPS + columns.op
    keys, counts, some, low, high, histogram, *exp = kernels.completions(
        key, n_keys, columns.status, nbytes, latency)
    pair = keys // _N_OPS
    return (pair // width, windows[pair % width], keys % _N_OPS, counts, some,
            np.where(some, low, 0).astype(np.int64), high.astype(np.int64), histogram,
            tuple(exp))


def _numpy_completion_columns(columns: Columns, window: np.ndarray, latency: np.ndarray
                              ) -> tuple[Any, ...] | None:
    """:func:`_completion_columns` in numpy passes (``columns`` not empty)."""
    c = _completed(columns, window, latency)
    byte_sums = _sums64(c.nbytes, c.starts)
    time_sums = _sums64(c.timed_latency, c.starts)
    if byte_sums is None or time_sums is None:
        return None
    if len(c.latency) and int(c.timed_latency.max()) >= _INT64_LIMIT:
        return None
    counts = c.counts
    counts[:, BYTES], counts[:, TIME] = byte_sums, time_sums
    exp = group_histogram_columns(c.group[c.timed], c.latency[c.timed], len(c.starts))
    pair = c.key // _N_OPS
    return (pair // len(c.windows), c.windows[pair % len(c.windows)], c.key % _N_OPS,
            counts, c.some, np.where(c.some, c.low, 0).astype(np.int64),
            c.high.astype(np.int64), c.histogram.astype(np.int64), exp)


def _inflight_columns(columns: Columns, window_len_ns: int, from_ns: int | None,
                      own_len_ns: int) -> tuple[np.ndarray, ...] | None:
    """(volume, window, op, in-flight ns) per (volume, window, op) reached, in that order,
    and the busy intervals: (volume, window, interval count, intervals, their length) per
    (volume, window) reached; None when an in-flight sum could leave int64."""
    requests = _requests(columns, window_len_ns, from_ns, own_len_ns)
    which, _, _, first, last = requests
    empty = np.empty(0, dtype=np.int64)
    if len(which) == 0:
        return (empty,) * 7 + (np.empty((0, 2), dtype=np.int64), empty)
    compiled = _compiled_inflight_columns(columns, requests, window_len_ns)
    if compiled is not None:
        return compiled
    event, window, lo, hi = _edges(requests, window_len_ns)
    m_volume, m_window, m_op, m_count = _middles(columns.volume[which], columns.op[which],
                                                 first, last)
    if (len(event) + int(m_count.sum())) * window_len_ns >= _INT64_LIMIT:
        return None  # (a window's pieces each lie in it: their sum is below this)
    key, windows = _dense_key(np.r_[columns.volume[event], m_volume], np.r_[window, m_window],
                              np.r_[columns.op[event], m_op])
    amount = np.r_[hi - lo, m_count * window_len_ns]
    order, starts = _runs(key)
    sums = np.add.reduceat(amount[order], starts)
    keys = key[order][starts]
    pair = keys // _N_OPS
    f = (pair // len(windows), windows[pair % len(windows)], keys % _N_OPS, sums)
    m_lo = m_window * window_len_ns
    b = _busy_columns(key // _N_OPS, np.r_[lo, m_lo], np.r_[hi, m_lo + window_len_ns], windows)
    return (*f, *b)


def _compiled_inflight_columns(columns: Columns, requests: Requests, window_len_ns: int
                               ) -> tuple[np.ndarray, ...] | None:
    """:func:`_inflight_columns` by kernels.inflight; None where its preconditions do not
    hold: more (volume, window, op) keys than its dense table takes, or more pieces (one
    a window a request reaches: long requests) than that, or pieces whose sum could
    leave int64. The twin counts the windows a request covers whole by a difference
    array, whatever their number."""
    which, start, end, first, last = requests
    if not _in_kernel_range(columns):
        return None
    bound = max(kernels.TABLE_PER_EVENT * len(which), kernels.TABLE_FLOOR)
    pieces = int((last - first).sum()) + len(which)
    if pieces > bound or pieces * window_len_ns >= _INT64_LIMIT:
        return None
    low = int(first.min())
    span = int(last.max()) - low + 1
    if len(columns.volumes) * span * _N_OPS > bound:
        return None
    f_pair, f_op, f_ns, b_pair, b_count, intervals, b_total = kernels.inflight(
        columns.volume[which].astype(np.int64), columns.op[which].astype(np.int64), start,
        end, first, last, low, span, window_len_ns)
    return (f_pair // span, f_pair % span + low, f_op, f_ns, b_pair // span,
            b_pair % span + low, b_count, intervals, b_total)


def _busy_columns(pair: np.ndarray, lo: np.ndarray, hi: np.ndarray, windows: np.ndarray
                  ) -> tuple[np.ndarray, ...]:
    """:func:`_busy` as arrays: per (volume, window) pair in order, its volume, window,
    number of merged intervals, and length; and the intervals, pair after pair."""
    order = _by_then(pair, lo)
    pair, lo, hi = pair[order], lo[order], hi[order]
    # Within a window a piece starts a new interval unless it overlaps or touches the
    # furthest end so far; pieces of the next window never join (np.r_'s first True).
    new_pair = np.r_[True, pair[1:] != pair[:-1]]
    reach = running_max_by_run(hi, lo, new_pair)
    begins = np.flatnonzero(new_pair | np.r_[True, lo[1:] > reach[:-1]])
    ends = np.r_[begins[1:], len(lo)] - 1
    starts_ns, ends_ns = lo[begins], reach[ends]
    owners = pair[begins]
    bounds = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
    totals = np.add.reduceat(ends_ns - starts_ns, bounds)  # <= L each: int64
    p = owners[bounds]
    n_windows = len(windows)
    return (p // n_windows, windows[p % n_windows], np.diff(np.r_[bounds, len(owners)]),
            np.stack((starts_ns, ends_ns), axis=1), totals)
