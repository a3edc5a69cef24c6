"""Compiled loops for the windows' per-event work (issue 17), where numpy needs many passes.

Pure logic: no faust, no aiokafka. numpy does a step's per-event work as whole-array
passes: grouping the completions by (volume, window, op) alone sorts the events, gathers
every column in that order and reduces each one (~120 ns an event on a 1,000-volume step).
numba compiles a plain loop over the same arrays to machine code: one pass that adds each
event into its group's row (~30 ns an event; docs/performance.md, session 35).
:func:`completions` and :func:`inflight` have numpy twins in vector.py that compute the
same arrays; the tests hold each pair equal on random steps, and the twin takes over
wherever the kernel's preconditions fail (a sum that could leave int64, keys too sparse
for a dense table, an op, status or volume index outside its tables: the kernels do not
check bounds), so the results never depend on which ran. :func:`exp_tokens` and
:func:`percentiles` serve the encoders; their tests hold the records they make to
``pack_entry``'s and fastavro's bytes.

The kernels are compiled for the argument types of their first call and cached beside
this file (numba's ``cache=True``): ~8 s in all once after a change, then loaded in
~0.2-0.3 s; warm.py does that before a worker takes records. ``NUMBA_DISABLE_JIT=1``
runs them as Python, for a debugger.
"""

from __future__ import annotations

import numba
import numpy as np

from streams.core.counters import BYTES, SLOTS_PER_OP, STATUS_RULES, TIME
from streams.core.windows.acc import HISTOGRAM_BOUNDS_NS
from streams.core.windows.exphist import BUCKETS_PER_OCTAVE, MIN_INDEX, upper_bounds

# SEMANTICS.md's status rules by status code (counters.STATUS_RULES), and the 20-bin
# histogram's bounds, as the arrays the kernels and their numpy twins (vector.py) index
STATUS_SLOT = np.array([rule[0] for rule in STATUS_RULES], dtype=np.int64)
COUNTS_BYTES = np.array([rule[1] for rule in STATUS_RULES], dtype=np.bool_)
COUNTS_TIME = np.array([rule[2] for rule in STATUS_RULES], dtype=np.bool_)
BIN_BOUNDS = np.array(HISTOGRAM_BOUNDS_NS, dtype=np.uint64)
_EXP_BOUNDS = upper_bounds()
# A dense table of group numbers, one int32 per possible (volume, window, op), is cleared
# for every call: it may have at most this many entries per event (plus a floor), else the
# numpy twin (a sort) groups them.
TABLE_PER_EVENT = 8
TABLE_FLOOR = 1 << 16


@numba.njit(cache=True, nogil=True)
def _completion_kernel(key: np.ndarray, n_keys: int, status: np.ndarray, nbytes: np.ndarray,
                       latency: np.ndarray, slot: np.ndarray, counts_bytes: np.ndarray,
                       counts_time: np.ndarray, bounds: np.ndarray, exp_bounds: np.ndarray,
                       min_index: int, per_octave: int) -> tuple:  # type: ignore[type-arg]
    n = len(key)
    group_of = np.full(n_keys, -1, dtype=np.int32)
    for i in range(n):
        group_of[key[i]] = 0
    n_groups = 0
    for k in range(n_keys):
        if group_of[k] == 0:
            group_of[k] = n_groups
            n_groups += 1
    keys = np.empty(n_groups, dtype=np.int64)
    counts = np.zeros((n_groups, SLOTS_PER_OP), dtype=np.int64)
    some = np.zeros(n_groups, dtype=np.bool_)
    low = np.full(n_groups, np.uint64(0xFFFF_FFFF_FFFF_FFFF), dtype=np.uint64)
    high = np.zeros(n_groups, dtype=np.uint64)
    histogram = np.zeros((n_groups, len(bounds) + 1), dtype=np.int64)
    zeros = np.zeros(n_groups, dtype=np.int64)
    first_bucket = np.full(n_groups, len(exp_bounds) + 1, dtype=np.int64)  # none yet
    last_bucket = np.full(n_groups, -1, dtype=np.int64)
    bucket = np.empty(n, dtype=np.int64)
    last_bound = len(exp_bounds) - 1
    for i in range(n):
        g = group_of[key[i]]
        keys[g] = key[i]
        s = status[i]
        counts[g, slot[s]] += 1
        bucket[i] = -1
        if counts_bytes[s]:
            counts[g, BYTES] += nbytes[i]
        if not counts_time[s]:
            continue
        x = latency[i]
        some[g] = True
        counts[g, TIME] += np.int64(x)
        if x < low[g]:
            low[g] = x
        if x > high[g]:
            high[g] = x
        b = 0  # np.searchsorted(bounds, x, side="right")
        while b < len(bounds) and x >= bounds[b]:
            b += 1
        histogram[g, b] += 1
        if x == np.uint64(0):
            zeros[g] += 1
            continue
        # exphist.bucket_indexes: a float guess, then one exact comparison each way
        position = int(np.ceil(np.log2(np.float64(x)) * per_octave)) - 1 - min_index
        position = min(max(position, 0), last_bound)
        if x > exp_bounds[position]:
            position += 1
        elif position > 0 and x <= exp_bounds[position - 1]:
            position -= 1
        bucket[i] = position  # the bucket's index is position + min_index
        first_bucket[g] = min(first_bucket[g], position)
        last_bucket[g] = max(last_bucket[g], position)
    lens = np.zeros(n_groups, dtype=np.int64)
    offsets = np.zeros(n_groups, dtype=np.int64)
    begins = np.zeros(n_groups, dtype=np.int64)
    total = 0
    for g in range(n_groups):
        if last_bucket[g] >= first_bucket[g]:
            offsets[g] = first_bucket[g] + min_index
            lens[g] = last_bucket[g] - first_bucket[g] + 1
        begins[g] = total
        total += lens[g]
    flat = np.zeros(total, dtype=np.int64)
    for i in range(n):
        if bucket[i] >= 0:
            g = group_of[key[i]]
            flat[begins[g] + bucket[i] + min_index - offsets[g]] += 1
    return keys, counts, some, low, high, histogram, offsets, zeros, lens, flat


def completions(key: np.ndarray, n_keys: int, status: np.ndarray, nbytes: np.ndarray,
                latency: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per (volume, window, op) group of completions, in the order of ``key`` (dense, each
    below ``n_keys``): the key, the counter slots (``BYTES`` and ``TIME`` the exact sums),
    whether a latency counts, min and max latency (uint64; the max is 0 and the min
    2**64 - 1 where none counts), the 20-bin histogram, and the exponential histograms
    as exphist.group_histogram_columns gives them (offsets, zero counts, lengths, the
    counts of every group in turn).

    The caller vouches that ``key`` lies in [0, n_keys) and that the sums stay in int64
    (every byte count and latency times the events is below 2**63)."""
    return _completion_kernel(  # type: ignore[no-any-return]
        key, n_keys, status, nbytes, latency, STATUS_SLOT, COUNTS_BYTES, COUNTS_TIME,
        BIN_BOUNDS, _EXP_BOUNDS, MIN_INDEX, BUCKETS_PER_OCTAVE)


# A pair's pieces come nearly in order of their start (a record's events in order of
# completion): an insertion sort moves each piece past the few that started later, in
# linear time. Past this many moves a piece on average it stops and sorts the rest.
_MOVES_PER_PIECE = 16


@numba.njit(cache=True, nogil=True)
def _sort_by_start(lo: np.ndarray, hi: np.ndarray, a: int, b: int) -> None:
    """Sorts the pieces [a, b) of ``lo`` and ``hi`` by ``lo``, in place."""
    budget = _MOVES_PER_PIECE * (b - a)
    for m in range(a + 1, b):
        piece_lo, piece_hi = lo[m], hi[m]
        k = m - 1
        while k >= a and lo[k] > piece_lo:
            lo[k + 1], hi[k + 1] = lo[k], hi[k]
            k -= 1
        lo[k + 1], hi[k + 1] = piece_lo, piece_hi
        budget -= m - 1 - k
        if budget < 0:  # far from in order: sort them (no quadratic time)
            order = np.argsort(lo[a:b], kind="mergesort") + a
            lo[a:b], hi[a:b] = lo[order], hi[order]
            return


@numba.njit(cache=True, nogil=True)
def _inflight_kernel(volume: np.ndarray, op: np.ndarray, start: np.ndarray, end: np.ndarray,
                     first: np.ndarray, last: np.ndarray, low_window: int, span: int,
                     window_len_ns: int) -> tuple:  # type: ignore[type-arg]
    n = len(start)
    n_pieces = 0
    for r in range(n):
        n_pieces += last[r] - first[r] + 1  # a piece in each window it reaches
    pair = np.empty(n_pieces, dtype=np.int64)  # volume * span + window - low_window
    piece_op = np.empty(n_pieces, dtype=np.int64)
    lo = np.empty(n_pieces, dtype=np.int64)
    hi = np.empty(n_pieces, dtype=np.int64)
    p = 0
    for r in range(n):
        base = volume[r] * span - low_window
        if last[r] == first[r]:
            pair[p], piece_op[p], lo[p], hi[p] = base + first[r], op[r], start[r], end[r]
            p += 1
        else:  # its first window's piece, each window between whole, its last's piece
            cut = (first[r] + 1) * window_len_ns
            pair[p], piece_op[p], lo[p], hi[p] = base + first[r], op[r], start[r], cut
            p += 1
            for w in range(first[r] + 1, last[r]):
                pair[p], piece_op[p] = base + w, op[r]
                lo[p], hi[p] = w * window_len_ns, (w + 1) * window_len_ns
                p += 1
            cut = last[r] * window_len_ns
            pair[p], piece_op[p], lo[p], hi[p] = base + last[r], op[r], cut, end[r]
            p += 1
    n_pairs = 0
    for k in range(n_pieces):
        n_pairs = max(n_pairs, pair[k] + 1)
    # in-flight ns per (pair, op), in key order
    flight = np.zeros(n_pairs * 4, dtype=np.int64)
    reached = np.zeros(n_pairs * 4, dtype=np.bool_)
    per_pair = np.zeros(n_pairs + 1, dtype=np.int64)
    for k in range(n_pieces):
        key = pair[k] * 4 + piece_op[k]
        flight[key] += hi[k] - lo[k]
        reached[key] = True
        per_pair[pair[k] + 1] += 1
    n_keys = 0
    for key in range(n_pairs * 4):
        if reached[key]:
            n_keys += 1
    f_pair = np.empty(n_keys, dtype=np.int64)
    f_op = np.empty(n_keys, dtype=np.int64)
    f_ns = np.empty(n_keys, dtype=np.int64)
    j = 0
    for key in range(n_pairs * 4):
        if reached[key]:
            f_pair[j], f_op[j], f_ns[j] = key // 4, key % 4, flight[key]
            j += 1
    # the pieces by pair (a counting sort), then by start within each pair
    for q in range(n_pairs):
        per_pair[q + 1] += per_pair[q]
    fill = per_pair[:-1].copy()
    by_lo = np.empty(n_pieces, dtype=np.int64)
    by_hi = np.empty(n_pieces, dtype=np.int64)
    for k in range(n_pieces):
        at = fill[pair[k]]
        by_lo[at], by_hi[at] = lo[k], hi[k]
        fill[pair[k]] += 1
    n_busy = 0
    for q in range(n_pairs):
        if per_pair[q + 1] > per_pair[q]:
            n_busy += 1
    b_pair = np.empty(n_busy, dtype=np.int64)
    b_count = np.zeros(n_busy, dtype=np.int64)
    b_total = np.zeros(n_busy, dtype=np.int64)
    intervals = np.empty((n_pieces, 2), dtype=np.int64)
    n_intervals = 0
    j = 0
    for q in range(n_pairs):
        a, b = per_pair[q], per_pair[q + 1]
        if a == b:
            continue
        _sort_by_start(by_lo, by_hi, a, b)
        b_pair[j] = q
        begin, reach = by_lo[a], by_hi[a]
        for m in range(a + 1, b):
            piece_lo, piece_hi = by_lo[m], by_hi[m]
            if piece_lo > reach:  # a gap: the interval so far is whole
                intervals[n_intervals, 0], intervals[n_intervals, 1] = begin, reach
                n_intervals += 1
                b_count[j] += 1
                b_total[j] += reach - begin
                begin, reach = piece_lo, piece_hi
            elif piece_hi > reach:
                reach = piece_hi
        intervals[n_intervals, 0], intervals[n_intervals, 1] = begin, reach
        n_intervals += 1
        b_count[j] += 1
        b_total[j] += reach - begin
        j += 1
    return f_pair, f_op, f_ns, b_pair, b_count, intervals[:n_intervals].copy(), b_total


def inflight(volume: np.ndarray, op: np.ndarray, start: np.ndarray, end: np.ndarray,
             first: np.ndarray, last: np.ndarray, low_window: int, span: int,
             window_len_ns: int) -> tuple[np.ndarray, ...]:
    """The in-flight time and busy intervals of requests of ``volume`` and ``op``, in
    flight over [start, end), in windows ``first`` .. ``last`` of ``window_len_ns`` (all
    in [low_window, low_window + span)), each cut into a piece per window: per (volume,
    window, op) reached, in that order, its pair (``volume * span + window -
    low_window``), op and in-flight ns; per pair reached, in order, the pair, its number
    of merged intervals and their length; and the merged intervals ([start, end], sorted,
    disjoint and not touching within a pair), pair after pair.

    The caller vouches that the pieces' sums stay in int64 (the pieces times
    ``window_len_ns`` is below 2**63), and bounds their number (a piece a window)."""
    return _inflight_kernel(  # type: ignore[no-any-return]
        volume, op, start, end, first, last, low_window, span, window_len_ns)


@numba.njit(cache=True, nogil=True)
def exp_tokens(flat: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's exponential histogram counts (``lens[r]`` of ``flat`` a row, in turn)
    as packed._write_exp writes them: a count c as c, a run of k zero buckets as -k;
    the tokens, and how many each row has."""
    tokens = np.empty(len(flat), dtype=np.int64)
    n_tokens = np.zeros(len(lens), dtype=np.int64)
    t = i = 0
    for r in range(len(lens)):
        end = i + lens[r]
        while i < end:
            if flat[i] != 0:
                tokens[t] = flat[i]
                i += 1
            else:
                j = i
                while j < end and flat[j] == 0:
                    j += 1
                tokens[t] = i - j
                i = j
            t += 1
            n_tokens[r] += 1
    return tokens[:t], n_tokens


@numba.njit(cache=True, nogil=True)
def percentiles(flat: np.ndarray, lens: np.ndarray, zero: np.ndarray, offset: np.ndarray,
                has_min: np.ndarray, min_ns: np.ndarray, has_max: np.ndarray,
                max_ns: np.ndarray, nums: np.ndarray, dens: np.ndarray,
                representatives: np.ndarray, count_max: int, min_index: int,
                max_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ExpHistogram.percentile_ns of each percentile (``nums[p] / dens[p]``) of every row
    (``lens[r]`` bucket counts of ``flat`` from bucket ``offset[r]``, ``zero[r]`` zeros):
    the values (the bucket's representative, clamped to the row's [min, max]); whether
    the row has them (a count); and the odd rows: a count outside [0, count_max), or a
    bucket without an int64 representative (their values are not to be used)."""
    rows = len(lens)
    values = np.zeros((rows, len(nums)), dtype=np.int64)
    known = np.zeros(rows, dtype=np.bool_)
    odd = np.zeros(rows, dtype=np.bool_)
    int64_max = np.uint64(0x7FFF_FFFF_FFFF_FFFF)
    first = 0
    for r in range(rows):
        n = lens[r]
        bad = zero[r] < 0 or zero[r] >= count_max
        total = 0
        for i in range(first, first + n):
            bad = bad or flat[i] < 0 or flat[i] >= count_max
            total += flat[i]
        if bad:
            odd[r] = True
        zeros = 0 if bad else zero[r]
        total = 0 if bad else total + zeros
        known[r] = total > 0
        if known[r]:
            low = min_ns[r] if has_min[r] else 0
            for p in range(len(nums)):
                rank = -((-total * nums[p]) // dens[p])
                if rank <= zeros:
                    continue
                need, running, j = rank - zeros, 0, 0
                while True:
                    running += flat[first + j]
                    if running >= need:
                        break
                    j += 1
                index = offset[r] + j - min_index
                rep = np.int64(0)
                if 0 <= index <= max_index - min_index and representatives[index] <= int64_max:
                    rep = np.int64(representatives[index])
                else:
                    odd[r] = True
                high = max_ns[r] if has_max[r] else rep
                values[r, p] = min(max(rep, low), high)
        first += n
    return values, known, odd
