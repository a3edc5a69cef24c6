"""Brute-force oracle for the windowed statistics of SEMANTICS.md section 3.

Written independently of the pipeline on purpose: it imports nothing from ``streams`` and
works on plain dicts, the canonical JSON objects of section 1, all assumed valid (run them
through ``tests.oracle.oracle_reject_reason`` first if they may not be). Lateness does not
exist here (section 4): every event counts in its windows, as if none were beyond the
revision horizon, so compare with the pipeline's latest revision of each window.

Every window is computed straight from the raw events: each event is dropped into the window
holding its ``complete_ns``, and its interval ``[submit_ns, complete_ns)`` is clipped to every
window it overlaps. Nothing is incremental and nothing is clever.

The exponential histogram ``{op}_latency_exp`` is found with integers only: bucket ``i`` of a
latency ``x >= 1`` is the one with ``2**i < x**32 <= 2**(i + 1)``; percentiles are read off it
by listing every latency's bucket in order and taking the one of rank ceil(q * n).

Records carry, besides the published fields, ``{op}_inflight_time_ns`` (the integer numerator
of ``avg_{op}_queue_depth``), because the exact rollup of section 3 needs it. They carry no
``revision``: that belongs to delivery, not to the statistics.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tests.oracles.counters import add_to_counters, empty_counters

WINDOW_OPS = ("read", "write", "flush", "discard")

US = 1_000
MS = 1_000_000
S = 1_000_000_000

# Upper bounds (exclusive) of the first 19 bins; bin 19 is open (latency >= 10 s).
HISTOGRAM_BOUNDS_NS: tuple[int, ...] = (
    10 * US, 20 * US, 50 * US, 100 * US, 200 * US, 500 * US,
    1 * MS, 2 * MS, 5 * MS, 10 * MS, 20 * MS, 50 * MS, 100 * MS, 200 * MS, 500 * MS,
    1 * S, 2 * S, 5 * S, 10 * S,
)
HISTOGRAM_BINS = len(HISTOGRAM_BOUNDS_NS) + 1

# (name, numerator, denominator): q = numerator / denominator, kept as integers.
PERCENTILES = (("p50", 50, 100), ("p90", 90, 100), ("p99", 99, 100), ("p99_9", 999, 1000))


def window_start(t_ns: int, window_len_ns: int) -> int:
    """Start of the tumbling window [k*L, (k+1)*L) that holds ``t_ns``."""
    return (t_ns // window_len_ns) * window_len_ns


def windows_overlapped(start_ns: int, end_ns: int, window_len_ns: int) -> list[int]:
    """Starts of all windows that share a positive length with [start_ns, end_ns)."""
    if end_ns <= start_ns:
        return []
    first = window_start(start_ns, window_len_ns)
    last = window_start(end_ns - 1, window_len_ns)
    return list(range(first, last + window_len_ns, window_len_ns))


def overlap_length(a_start: int, a_end: int, b_start: int, b_end: int) -> int:
    """Length of [a_start, a_end) intersected with [b_start, b_end), 0 when disjoint."""
    return max(0, min(a_end, b_end) - max(a_start, b_start))


def union_length(intervals: list[tuple[int, int]]) -> int:
    """Length of the union of half-open intervals: sort, merge, add up the merged pieces."""
    total = 0
    cur_start: int | None = None
    cur_end = 0
    for start, end in sorted(intervals):
        if end <= start:
            continue
        if cur_start is None:
            cur_start, cur_end = start, end
        elif start <= cur_end:
            cur_end = max(cur_end, end)
        else:
            total += cur_end - cur_start
            cur_start, cur_end = start, end
    if cur_start is not None:
        total += cur_end - cur_start
    return total


def histogram_bin(latency_ns: int) -> int:
    """Index of the bin of ``latency_ns``: how many upper bounds are <= it."""
    index = 0
    for bound in HISTOGRAM_BOUNDS_NS:
        if latency_ns >= bound:
            index += 1
    return index


def percentile_from_histogram(histogram: list[int], num: int, den: int,
                              max_latency_ns: int | None) -> int | None:
    """Upper bound of the first bin whose cumulative count reaches ceil(num/den * n).

    In the last, open bin the answer is the window's max latency. None when n == 0.
    """
    n = sum(histogram)
    if n == 0:
        return None
    rank = -(-n * num // den)  # exact integer ceil(n * num / den)
    cumulative = 0
    for index, count in enumerate(histogram):
        cumulative += count
        if cumulative >= rank:
            if index < len(HISTOGRAM_BOUNDS_NS):
                return HISTOGRAM_BOUNDS_NS[index]
            return max_latency_ns
    raise AssertionError("unreachable: the cumulative count ends at n >= rank")


# The exponential histogram (section 3): base = 2**(1/32), buckets (base**i, base**(i+1)].
EXP_ROOT = 32


def exp_bucket(latency_ns: int) -> int:
    """The i with base**i < x <= base**(i + 1), i.e. 2**i < x**32 <= 2**(i + 1), for x >= 1:
    i + 1 is the smallest k with x**32 <= 2**k, the bit length of x**32 - 1."""
    if latency_ns < 1:
        raise ValueError("latency 0 goes to the zero bucket")
    return (latency_ns ** EXP_ROOT - 1).bit_length() - 1


_REPRESENTATIVES: dict[int, int] = {}


def exp_representative(index: int) -> int:
    """base**(index + 0.5) = 2**((2 index + 1) / 64) rounded to the nearest integer: the
    smallest y >= 0 with y + 1/2 above it, i.e. (2y + 1)**64 > 2**(2 index + 1 + 64), found
    by bisection over integers."""
    if index not in _REPRESENTATIVES:
        target = 1 << (2 * index + 1 + 2 * EXP_ROOT)
        lo, hi = 0, 1 << 65
        while lo < hi:
            mid = (lo + hi) // 2
            if (2 * mid + 1) ** (2 * EXP_ROOT) > target:
                hi = mid
            else:
                lo = mid + 1
        _REPRESENTATIVES[index] = lo
    return _REPRESENTATIVES[index]


def exp_record(buckets: dict[int, int], zero: int) -> dict:
    """The published form: offset, counts from the lowest to the highest non-empty bucket,
    the zero count; offset 0 and no counts when no bucket is used."""
    if not buckets:
        return {"offset": 0, "counts": [], "zero": zero}
    low, high = min(buckets), max(buckets)
    return {"offset": low, "counts": [buckets.get(i, 0) for i in range(low, high + 1)],
            "zero": zero}


def exp_buckets(record: dict) -> dict[int, int]:
    return {record["offset"] + k: c for k, c in enumerate(record["counts"]) if c}


def exp_percentiles(record: dict, min_ns: int | None, max_ns: int | None) -> dict[str, int | None]:
    """p50..p99_9 by brute force: every latency's bucket in order (None for a zero), the
    entry of rank ceil(q * n), its representative clamped to [min_ns, max_ns]."""
    ordered: list[int | None] = [None] * record["zero"]
    for index, count in sorted(exp_buckets(record).items()):
        ordered.extend([index] * count)
    out: dict[str, int | None] = {}
    for name, num, den in PERCENTILES:
        if not ordered:
            out[name] = None
            continue
        chosen = ordered[-(-len(ordered) * num // den) - 1]
        value = 0 if chosen is None else exp_representative(chosen)
        assert min_ns is not None and max_ns is not None
        out[name] = min(max(value, min_ns), max_ns)
    return out


def empty_window(volume_id: str, tenant_id: str, start_ns: int, window_len_ns: int) -> dict:
    """Summable fields of one window, at zero (derived fields come from ``derive``)."""
    row = empty_counters(volume_id, tenant_id)
    del row["last_io_ns"]  # cumulative only
    row.update(window_start_ns=start_ns, window_length_ns=window_len_ns)
    for op in WINDOW_OPS:
        row[f"min_{op}_latency_ns"] = None
        row[f"max_{op}_latency_ns"] = None
        row[f"{op}_latency_histogram"] = [0] * HISTOGRAM_BINS
        row[f"{op}_latency_exp"] = exp_record({}, 0)
        row[f"{op}_inflight_time_ns"] = 0
    row["busy_time_ns"] = 0
    return row


def derive(row: dict) -> dict:
    """Set the fields that are computed from the sums: averages, percentiles, depth, util."""
    length = row["window_length_ns"]
    for op in WINDOW_OPS:
        timed = row[f"{op}_ios"] + row[f"{op}_ios_error"]
        if timed == 0:
            row[f"avg_{op}_latency_ns"] = None
        else:
            row[f"avg_{op}_latency_ns"] = row[f"total_{op}_time_ns"] / timed
        exact = exp_percentiles(row[f"{op}_latency_exp"], row[f"min_{op}_latency_ns"],
                                row[f"max_{op}_latency_ns"])
        for name, _, _ in PERCENTILES:
            row[f"{name}_{op}_latency_ns"] = exact[name]
        row[f"avg_{op}_queue_depth"] = row[f"{op}_inflight_time_ns"] / length
    row["idle_time_ns"] = length - row["busy_time_ns"]
    row["util"] = row["busy_time_ns"] / length
    return row


def _min(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _max(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def windows_oracle(events: Iterable[dict], window_len_ns: int,
                   inflight_frozen_before: Sequence[int] | None = None,
                   ) -> dict[tuple[str, int], dict]:
    """All windows of length ``window_len_ns``, keyed by (volume_id, window_start_ns).

    ``inflight_frozen_before[i]``, when given: event i's in-flight interval counts only in
    the windows that end after it and in event i's own window (the others were final;
    see ``horizon_oracle``)."""
    if window_len_ns <= 0:
        raise ValueError("window length must be positive")
    frozen_before = list(inflight_frozen_before) if inflight_frozen_before is not None else None
    tenants: dict[str, str] = {}
    rows: dict[tuple[str, int], dict] = {}
    busy_pieces: dict[tuple[str, int], list[tuple[int, int]]] = {}
    exp: dict[tuple[str, int, str], dict[int, int]] = {}  # (volume, window, op) -> buckets

    def window(volume_id: str, start_ns: int) -> dict:
        key = (volume_id, start_ns)
        if key not in rows:
            rows[key] = empty_window(volume_id, tenants[volume_id], start_ns, window_len_ns)
            busy_pieces[key] = []
        return rows[key]

    for index, event in enumerate(events):
        vol = event["volume_id"]
        if vol not in tenants:
            tenants[vol] = event["tenant_id"]
        op = event["op"]
        status = event["status"]
        submit = event["submit_ns"]
        complete = event["complete_ns"]
        latency = complete - submit

        # 1. Everything that belongs to the window holding complete_ns.
        row = window(vol, window_start(complete, window_len_ns))
        add_to_counters(row, event)
        if status == "ok" or status == "failed":
            row[f"min_{op}_latency_ns"] = _min(row[f"min_{op}_latency_ns"], latency)
            row[f"max_{op}_latency_ns"] = _max(row[f"max_{op}_latency_ns"], latency)
            row[f"{op}_latency_histogram"][histogram_bin(latency)] += 1
            buckets = exp.setdefault((vol, row["window_start_ns"], op), {})
            if latency == 0:
                row[f"{op}_latency_exp"]["zero"] += 1
            else:
                bucket = exp_bucket(latency)
                buckets[bucket] = buckets.get(bucket, 0) + 1

        # 2. The in-flight interval, clipped to every window it overlaps (ok/failed only).
        if status == "ok" or status == "failed":
            # Windows ending at or before the bound are skipped; start the walk there, so a
            # request in flight since the epoch does not walk every window since then.
            own = window_start(complete, window_len_ns)
            walk_from = submit
            if frozen_before is not None:
                walk_from = max(submit, min(own, window_start(frozen_before[index],
                                                              window_len_ns)))
            for start in windows_overlapped(walk_from, complete, window_len_ns):
                end = start + window_len_ns
                if frozen_before is not None and end <= frozen_before[index] and start != own:
                    continue
                row = window(vol, start)
                row[f"{op}_inflight_time_ns"] += overlap_length(submit, complete, start, end)
                busy_pieces[(vol, start)].append((max(submit, start), min(complete, end)))

    for key, row in rows.items():
        row["busy_time_ns"] = union_length(busy_pieces[key])
        for op in WINDOW_OPS:
            zero = row[f"{op}_latency_exp"]["zero"]
            row[f"{op}_latency_exp"] = exp_record(exp.get((*key, op), {}), zero)
        derive(row)
    return rows


def horizon_oracle(batches: Sequence[tuple[list[dict], int | None]], window_len_ns: int,
                   grace_ns: int, horizon_ns: int) -> tuple[dict[tuple[str, int], dict], int]:
    """Section 4's revision horizon, batch by batch, for one partition's windows of one
    length: the windows and the number of events late beyond the horizon.

    Each batch of events is seen at the watermark given (None: not set yet). An event
    whose window ends at or before watermark - horizon is late: it counts in no window.
    Every other event counts in its windows, except that its in-flight time reaches no
    window ending at or before W - horizon other than its own (the one its completion
    counts in), where W is the watermark once the batch is in: the larger of the
    watermark given and the batch's largest complete_ns - grace. Those windows are final
    once the batch is in, so no request, however long, touches more than its own window
    and the windows of (grace + horizon) before the batch's last completion."""
    kept: list[dict] = []
    bounds: list[int] = []
    late = 0
    for events, watermark in batches:
        if not events:
            continue
        after = max(event["complete_ns"] for event in events) - grace_ns
        if watermark is not None and watermark > after:
            after = watermark
        for event in events:
            window_end = window_start(event["complete_ns"], window_len_ns) + window_len_ns
            if watermark is not None and window_end <= watermark - horizon_ns:
                late += 1
                continue
            kept.append(event)
            bounds.append(after - horizon_ns)
    return windows_oracle(kept, window_len_ns, bounds), late


def rollup_oracle(windows: dict[tuple[str, int], dict],
                  window_len_ns: int) -> dict[tuple[str, int], dict]:
    """Aggregate shorter windows into windows of ``window_len_ns``, never touching raw events.

    Sums add, min/max combine, histograms (both kinds) add, in-flight and busy time add;
    every derived field is then recomputed with the longer L.
    """
    result: dict[tuple[str, int], dict] = {}
    for (vol, _start), short in sorted(windows.items()):
        if window_len_ns % short["window_length_ns"] != 0:
            raise ValueError(f"{short['window_length_ns']} ns windows do not tile "
                             f"{window_len_ns} ns windows")
        key = (vol, window_start(short["window_start_ns"], window_len_ns))
        if key not in result:
            result[key] = empty_window(vol, short["tenant_id"], key[1], window_len_ns)
        row = result[key]
        for op in WINDOW_OPS:
            row[f"{op}_ios"] += short[f"{op}_ios"]
            if op != "flush":
                row[f"{op}_bytes"] += short[f"{op}_bytes"]
            row[f"{op}_ios_error"] += short[f"{op}_ios_error"]
            row[f"invalid_{op}_ios"] += short[f"invalid_{op}_ios"]
            row[f"total_{op}_time_ns"] += short[f"total_{op}_time_ns"]
            row[f"min_{op}_latency_ns"] = _min(row[f"min_{op}_latency_ns"],
                                               short[f"min_{op}_latency_ns"])
            row[f"max_{op}_latency_ns"] = _max(row[f"max_{op}_latency_ns"],
                                               short[f"max_{op}_latency_ns"])
            histogram = row[f"{op}_latency_histogram"]
            for index, count in enumerate(short[f"{op}_latency_histogram"]):
                histogram[index] += count
            buckets = exp_buckets(row[f"{op}_latency_exp"])
            for index, count in exp_buckets(short[f"{op}_latency_exp"]).items():
                buckets[index] = buckets.get(index, 0) + count
            row[f"{op}_latency_exp"] = exp_record(
                buckets, row[f"{op}_latency_exp"]["zero"] + short[f"{op}_latency_exp"]["zero"])
            row[f"{op}_inflight_time_ns"] += short[f"{op}_inflight_time_ns"]
        row["busy_time_ns"] += short["busy_time_ns"]
    for row in result.values():
        derive(row)
    return result


def latest_close_offset(records: Sequence[tuple[int, int, bool]], created: int, end_ns: int,
                        grace_ns: int, idle_ns: int) -> int | None:
    """The raw offset by which section 4 has a window closed, counted in stream time.

    ``records`` is one input partition as (offset, wall_ns, is_data), in offset order, with
    the records' own wall clock (their broker timestamps); ``created`` is the offset of the
    first record holding an event of the window, which ends at ``end_ns``. The answer is the
    first record at or after ``created`` whose wall time is grace + idle timeout past the
    later of the window's end and the partition's latest data record so far (the largest
    wall time of a data record up to it: a clock that steps back moves no deadline earlier),
    or None when no record reaches it (then whichever record closed the window did so in
    time). A data record is never one (it is its own latest data record): only the wall
    clock's records (Ticks) close idle partitions.
    """
    last_data_ns: int | None = None
    for offset, wall_ns, is_data in records:
        if is_data:
            last_data_ns = wall_ns if last_data_ns is None else max(last_data_ns, wall_ns)
        later_ns = end_ns if last_data_ns is None else max(end_ns, last_data_ns)
        if offset >= created and wall_ns >= later_ns + grace_ns + idle_ns:
            return offset
    return None
