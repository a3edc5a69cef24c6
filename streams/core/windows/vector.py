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

import numpy as np

from streams.core.batch import Columns
from streams.core.counters import BYTES, SLOTS_PER_OP, STATUS_RULES, TIME
from streams.core.events import OPS
from streams.core.times import HOUR_NS
from streams.core.windows.acc import HISTOGRAM_BOUNDS_NS, N_BINS
from streams.core.windows.exphist import ExpHistogram, group_histograms

_N_OPS = len(OPS)
_SLOT = np.array([rule[0] for rule in STATUS_RULES], dtype=np.int64)
_COUNTS_BYTES = np.array([rule[1] for rule in STATUS_RULES], dtype=bool)
_COUNTS_TIME = np.array([rule[2] for rule in STATUS_RULES], dtype=bool)
_BOUNDS = np.array(HISTOGRAM_BOUNDS_NS, dtype=np.uint64)
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
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    if len(ordered) == 0:
        return order, np.empty(0, dtype=np.intp)
    return order, np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])


def _dense_key(volume: np.ndarray, window: np.ndarray, op: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """One int64 per (volume, window, op), ordered as the triple: window indexes are
    ranked first, so the key stays below volumes * events * ops whatever their range."""
    windows, rank = np.unique(window, return_inverse=True)
    key = (volume.astype(np.int64) * len(windows) + rank.reshape(-1)) * _N_OPS + op
    return key, windows


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
    window = np.floor_divide(columns.complete_ns, window_len_ns)
    late = 0
    if first_window is not None:
        keep = window >= first_window
        late = len(columns) - int(np.count_nonzero(keep))
        if late:
            columns, window = columns.take(keep), window[keep]
        if from_ns is None:
            from_ns = first_window * window_len_ns
    latency = latencies_ns(columns)
    return WindowPartials(late, _completions(columns, window, latency),
                          *_inflight(columns, window_len_ns, from_ns,
                                     own_len_ns or window_len_ns))


def _completions(columns: Columns, window: np.ndarray, latency: np.ndarray
                 ) -> list[OpPartial]:
    if len(columns) == 0:
        return []
    key, windows = _dense_key(columns.volume, window, columns.op)
    order, starts = _runs(key)
    status = columns.status[order]
    latency = latency[order]
    timed = _COUNTS_TIME[status]
    n_groups = len(starts)
    group = np.repeat(np.arange(n_groups), np.diff(np.r_[starts, len(order)]))
    counts = np.bincount(group * SLOTS_PER_OP + _SLOT[status],
                         minlength=n_groups * SLOTS_PER_OP).reshape(n_groups, SLOTS_PER_OP)
    nbytes = np.where(_COUNTS_BYTES[status], columns.nbytes[order], 0).view(np.uint64)
    byte_sums = exact_sums(nbytes, starts)
    time_sums = exact_sums(np.where(timed, latency, np.uint64(0)), starts)
    timed_n = np.add.reduceat(timed.astype(np.int64), starts).tolist()
    low = np.minimum.reduceat(np.where(timed, latency, np.uint64(_U64_LIMIT - 1)), starts)
    high = np.maximum.reduceat(np.where(timed, latency, np.uint64(0)), starts)
    bins = np.searchsorted(_BOUNDS, latency[timed], side="right")
    histograms = np.bincount(group[timed] * N_BINS + bins, minlength=n_groups * N_BINS
                             ).reshape(n_groups, N_BINS).tolist()
    exps = group_histograms(group[timed], latency[timed], n_groups)
    volumes, windows_of, ops = _decode_key(key[order][starts], windows)
    out = []
    for g, (row, lo, hi) in enumerate(zip(counts.tolist(), low.tolist(), high.tolist(),
                                         strict=True)):
        row[BYTES], row[TIME] = byte_sums[g], time_sums[g]
        some = timed_n[g] > 0
        out.append(OpPartial(volumes[g], windows_of[g], ops[g], row, lo if some else None,
                             hi if some else None, histograms[g], exps[g]))
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
    which = np.flatnonzero(_COUNTS_TIME[columns.status] & (end > start))
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
    order = np.lexsort((at, keys))
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
    order = np.lexsort((lo, pair))
    pair, lo, hi = pair[order], lo[order], hi[order]
    # Within a window a piece starts a new interval unless it overlaps or touches the
    # furthest end so far; pieces of the next window never join (np.r_'s first True).
    new_pair = np.r_[True, pair[1:] != pair[:-1]]
    reach = _running_max_by_run(hi, lo, new_pair)
    begins = np.flatnonzero(new_pair | np.r_[True, lo[1:] > reach[:-1]])
    ends = np.r_[begins[1:], len(lo)] - 1
    starts_ns, ends_ns = lo[begins], reach[ends]
    intervals = np.stack((starts_ns, ends_ns), axis=1)  # a window's rows are copied out
    owners = pair[begins]
    bounds = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
    totals = np.add.reduceat(ends_ns - starts_ns, bounds).tolist()  # <= L each: int64
    n_windows = len(windows)
    busy: dict[tuple[int, int], Busy] = {}
    for first, after, p, total in zip(bounds.tolist(), np.r_[bounds[1:], len(owners)].tolist(),
                                      owners[bounds].tolist(), totals, strict=True):
        busy[(p // n_windows, int(windows[p % n_windows]))] = (intervals[first:after].copy(),
                                                               total)
    return busy


def _running_max_by_run(values: np.ndarray, floor: np.ndarray, run_starts: np.ndarray
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
    counts = np.bincount(group * SLOTS_PER_OP + _SLOT[status],
                         minlength=n_groups * SLOTS_PER_OP).reshape(n_groups, SLOTS_PER_OP)
    byte_sums = exact_sums(
        np.where(_COUNTS_BYTES[status], columns.nbytes[order], 0).view(np.uint64), starts)
    time_sums = exact_sums(
        np.where(_COUNTS_TIME[status], latencies_ns(columns)[order], np.uint64(0)), starts)
    volumes, hour_of, ops = _decode_key(key[order][starts], hours)
    out: list[HourPartial] = []
    for g, row in enumerate(counts.tolist()):
        row[BYTES], row[TIME] = byte_sums[g], time_sums[g]
        if not out or (out[-1].volume, out[-1].hour_start_ns) != (volumes[g],
                                                                   hour_of[g] * HOUR_NS):
            out.append(HourPartial(volumes[g], hour_of[g] * HOUR_NS,
                                   [0] * (SLOTS_PER_OP * _N_OPS)))
        base = ops[g] * SLOTS_PER_OP
        out[-1].counters[base:base + SLOTS_PER_OP] = row
    return out
