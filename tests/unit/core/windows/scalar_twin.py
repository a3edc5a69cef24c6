"""The scalar code the vectorised windows and billing hours replaced, kept as their twin:
event by event, in Python ints, exactly as the product computed them before (issue 17).
Property tests hold the vectorised path to it, integer for integer."""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from streams.core.batch import EventBatch
from streams.core.billing import BillingBook, BillingEntry, BillingRecord
from streams.core.counters import BYTES, N_SLOTS, STATUS_RULES, TIME, add_to_slots
from streams.core.events import STATUS_INVALID
from streams.core.times import HOUR_NS
from streams.core.windows.acc import (
    HISTOGRAM_BOUNDS_NS,
    WindowAcc,
    busy_array,
    window_start_ns,
)
from streams.core.windows.book import Emission, WindowBook, WindowEntry
from streams.core.windows.exphist import bucket_index


def add_events(book: WindowBook, batch: EventBatch, watermark_ns: int | None,
               offset: int = -1, max_complete_ns: int | None = None) -> list[Emission]:
    """WindowBook.add_events as it was: one event at a time. In-flight time stops at the
    horizon of the watermark after the batch (``max_complete_ns``: the largest
    complete_ns of the whole batch, when ``batch`` is one volume's part of it)."""
    volume_id, tenant_id = batch.volume_id, batch.tenant_id
    ops, statuses, nbytes = batch.ops, batch.statuses, batch.nbytes
    submit_ns, complete_ns = batch.submit_ns, batch.complete_ns
    frozen_before = book._frozen_before_ns(watermark_ns)
    if max_complete_ns is None:
        max_complete_ns = max((complete_ns[i] for i in batch.indexes), default=None)
    after = watermark_ns
    if max_complete_ns is not None:
        candidate = max_complete_ns - book.settings.grace_ns
        after = candidate if after is None else max(after, candidate)
    inflight_frozen_before = book._frozen_before_ns(after)
    touched: dict[int, WindowEntry] = {}
    for i in batch.indexes:
        start = window_start_ns(complete_ns[i], book.window_len_ns)
        if frozen_before is not None and start + book.window_len_ns <= frozen_before:
            book.late_beyond_horizon += 1
            continue
        entry = touched.get(start) or book._entry(volume_id, tenant_id, start)
        touched[start] = entry
        latency_ns = complete_ns[i] - submit_ns[i]
        add_completion(entry.acc, ops[i], statuses[i], nbytes[i], latency_ns)
        if statuses[i] != STATUS_INVALID:
            _add_inflight(book, volume_id, tenant_id, ops[i], submit_ns[i], complete_ns[i],
                          inflight_frozen_before, touched)
    for start, entry in touched.items():
        book.store[(volume_id, start)] = entry
    return [book._revise(volume_id, e, offset) for e in touched.values() if e.emitted]


def _add_inflight(book: WindowBook, volume_id: str, tenant_id: str, op: int, submit_ns: int,
                  complete_ns: int, frozen_before: int | None,
                  touched: dict[int, WindowEntry]) -> None:
    length = book.window_len_ns
    if frozen_before is not None:  # (the product looped over the frozen windows too)
        submit_ns_from = max(submit_ns, window_start_ns(frozen_before, length))
    else:
        submit_ns_from = submit_ns
    own_start = window_start_ns(complete_ns, length)
    if frozen_before is not None:  # its completion counts in its own window: so does it
        submit_ns_from = max(submit_ns, min(submit_ns_from, own_start))
    for start in window_starts_overlapping(submit_ns_from, complete_ns, length):
        if frozen_before is not None and start + length <= frozen_before and start != own_start:
            continue  # the revision horizon: these windows are final
        entry = touched.get(start) or book._entry(volume_id, tenant_id, start)
        touched[start] = entry
        add_inflight(entry.acc, op, submit_ns, complete_ns)


def window_starts_overlapping(start_ns: int, end_ns: int, window_len_ns: int) -> range:
    """Starts of the windows that ``[start_ns, end_ns)`` overlaps with positive length."""
    if end_ns <= start_ns:
        return range(0)
    return range(window_start_ns(start_ns, window_len_ns), end_ns, window_len_ns)


def histogram_bin(latency_ns: int) -> int:
    """Bin of a latency: upper bounds exclusive, the last bin open."""
    return bisect_right(HISTOGRAM_BOUNDS_NS, latency_ns)


def add_completion(acc: WindowAcc, op: int, status: int, nbytes: int, latency_ns: int
                   ) -> None:
    """WindowAcc.add_completion as it was: one completing event into its window."""
    slot, counts_bytes, counts_time = STATUS_RULES[status]
    op_acc = acc.ops[op]
    counts = op_acc.counts
    counts[slot] += 1
    if counts_bytes:
        counts[BYTES] += nbytes
    if not counts_time:
        return
    counts[TIME] += latency_ns
    op_acc.histogram[histogram_bin(latency_ns)] += 1
    assert op_acc.exp is not None  # a fresh window's is known
    if latency_ns:
        op_acc.exp.add_indexes([bucket_index(latency_ns)])
    else:
        op_acc.exp.zero += 1
    op_acc.min_ns = latency_ns if op_acc.min_ns is None else min(op_acc.min_ns, latency_ns)
    op_acc.max_ns = latency_ns if op_acc.max_ns is None else max(op_acc.max_ns, latency_ns)


def add_inflight(acc: WindowAcc, op: int, submit_ns: int, complete_ns: int) -> None:
    """WindowAcc.add_inflight as it was: the part of a request's in-flight interval that
    lies in the window, and its busy intervals unioned by binary search."""
    start = max(submit_ns, acc.window_start_ns)
    end = min(complete_ns, acc.window_start_ns + acc.window_len_ns)
    if end <= start:
        return
    acc.ops[op].inflight_ns += end - start
    busy = acc.busy.tolist()
    first = bisect_left(busy, start, key=lambda interval: interval[1])  # first hi >= start
    after = bisect_right(busy, end, key=lambda interval: interval[0])  # first lo > end
    removed = 0
    if first < after:
        start, end = min(start, busy[first][0]), max(end, busy[after - 1][1])
        removed = sum(hi - lo for lo, hi in busy[first:after])
    busy[first:after] = [[start, end]]
    acc.busy = busy_array(busy)
    acc.busy_ns += end - start - removed


def add_billing(book: BillingBook, batch: EventBatch, offset: int = -1) -> list[BillingRecord]:
    """BillingBook.add_events as it was: hours found event by event, counted in slots."""
    complete_ns = batch.complete_ns
    by_hour: dict[int, list[int]] = {}
    for i in batch.indexes:
        by_hour.setdefault(complete_ns[i] - complete_ns[i] % HOUR_NS, []).append(i)
    volume_id = batch.volume_id
    adjustments: list[BillingRecord] = []
    for start, hour_indexes in by_hour.items():
        entry = book.store.get((volume_id, start))
        if entry is None:
            entry = BillingEntry(batch.tenant_id)
            book._closing.push(start + HOUR_NS, volume_id)
        if entry.counters is not None:
            add_to_slots(entry.counters, batch.select(hour_indexes))
        else:
            delta = [0] * N_SLOTS
            add_to_slots(delta, batch.select(hour_indexes))
            adjustments.append(BillingRecord(entry.tenant_id, volume_id, start,
                                             entry.next_sequence, tuple(delta)))
            entry.unconfirmed.append([offset, entry.next_sequence, delta])
            entry.next_sequence += 1
        book.store[(volume_id, start)] = entry
    return adjustments
