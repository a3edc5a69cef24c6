"""Exact cumulative counters per volume (SEMANTICS.md section 2).

Pure logic: no faust, no aiokafka. The whole state of a volume is one small
:class:`VolumeState`; :meth:`VolumeState.snapshot` is what the Faust table
stores, so recovery is deserialising that one value.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from streams.core.batch import Columns, EventBatch
from streams.core.events import OPS, STATUS_FAILED, STATUS_INVALID, STATUS_OK, STATUSES
from streams.core.times import NS_PER_S

# Per op, five slots: ok ios, ok bytes, failed ios, invalid ios, time of ok+failed.
SLOTS_PER_OP = 5
IOS, BYTES, ERRORS, INVALID, TIME = range(SLOTS_PER_OP)
# 3 added the cumulative latency histogram; 2 added the per-producer digest of the last
# applied record. 1 and 2 still load (no digests, an empty histogram).
_SNAPSHOT_VERSION = 3

# The status -> counter rule of SEMANTICS.md section 2, written once, by status code: the
# slot an event counts one in, whether its bytes count, whether its time (complete - submit)
# counts. Latency statistics (windows) take exactly the events whose time counts.
_RULES = {STATUS_OK: (IOS, True, True), STATUS_FAILED: (ERRORS, False, True),
          STATUS_INVALID: (INVALID, False, False)}
STATUS_RULES: tuple[tuple[int, bool, bool], ...] = tuple(_RULES[s] for s in range(len(STATUSES)))


def _op_counter_names(op: str) -> tuple[tuple[str, int], ...]:
    names = ((f"{op}_ios", IOS), (f"{op}_bytes", BYTES), (f"{op}_ios_error", ERRORS),
             (f"invalid_{op}_ios", INVALID), (f"total_{op}_time_ns", TIME))
    return tuple((name, slot) for name, slot in names if not (op == "flush" and slot == BYTES))


# (public counter name, slot within the op) by op code, in SEMANTICS.md order; no flush_bytes.
OP_COUNTER_NAMES: tuple[tuple[tuple[str, int], ...], ...] = tuple(
    _op_counter_names(op) for op in OPS)
# (public counter name, slot index) of all ops, in SEMANTICS.md order.
COUNTER_NAMES: list[tuple[str, int]] = [
    (name, op_code * SLOTS_PER_OP + slot)
    for op_code, names in enumerate(OP_COUNTER_NAMES) for name, slot in names]
N_SLOTS = len(OPS) * SLOTS_PER_OP

_US, _MS = 1_000, 1_000_000
# SEMANTICS.md section 3's 19 latency histogram bounds (ns), shared by the windows and the
# cumulative per-volume histogram of /metrics.
HISTOGRAM_BOUNDS_NS: tuple[int, ...] = (
    10 * _US, 20 * _US, 50 * _US, 100 * _US, 200 * _US, 500 * _US,
    1 * _MS, 2 * _MS, 5 * _MS, 10 * _MS, 20 * _MS, 50 * _MS, 100 * _MS, 200 * _MS, 500 * _MS,
    1 * NS_PER_S, 2 * NS_PER_S, 5 * NS_PER_S, 10 * NS_PER_S,
)
# Cumulative latency bins per op: bin i holds bound[i-1] < latency <= bound[i] (Prometheus'
# `le`, inclusive, unlike the windows' exclusive bins), the last one latency > 10 s.
LATENCY_BINS = len(HISTOGRAM_BOUNDS_NS) + 1
LATENCY_SLOTS = len(OPS) * LATENCY_BINS
_LATENCY_BOUNDS = np.array(HISTOGRAM_BOUNDS_NS, dtype=np.uint64)


def add_to_slots(counters: list[int], batch: EventBatch) -> int | None:
    """Add the events of ``batch`` to section 2 counter slots; their latest complete_ns."""
    ops, statuses, nbytes = batch.ops, batch.statuses, batch.nbytes
    submit_ns, complete_ns = batch.submit_ns, batch.complete_ns
    rules = STATUS_RULES
    latest: int | None = None
    for i in batch.indexes:
        base = ops[i] * SLOTS_PER_OP
        slot, counts_bytes, counts_time = rules[statuses[i]]
        counters[base + slot] += 1
        if counts_bytes:
            counters[base + BYTES] += nbytes[i]
        if counts_time:
            counters[base + TIME] += complete_ns[i] - submit_ns[i]
        if latest is None or complete_ns[i] > latest:
            latest = complete_ns[i]
    return latest


def add_to_latency_bins(bins: list[int], batch: EventBatch) -> None:
    """Count the latency of each ok or failed event of ``batch`` in its op's cumulative bin
    (the events whose time counts, STATUS_RULES: the windows' latency rule)."""
    ops, statuses = batch.ops, batch.statuses
    submit_ns, complete_ns = batch.submit_ns, batch.complete_ns
    for i in batch.indexes:
        if STATUS_RULES[statuses[i]][2]:
            latency = complete_ns[i] - submit_ns[i]
            bins[ops[i] * LATENCY_BINS + bisect_left(HISTOGRAM_BOUNDS_NS, latency)] += 1


def latency_bin_counts(columns: Columns) -> list[list[int]]:
    """Per volume of ``columns.volumes``, what its events (all taken: validated) add to its
    cumulative latency bins (:func:`add_to_latency_bins`), in one numpy pass."""
    rows: list[list[int]] = latency_bin_rows(columns).tolist()
    return rows


def latency_bin_rows(columns: Columns) -> np.ndarray:
    """:func:`latency_bin_counts` as one array, a row per volume (counts of events: int64
    holds them)."""
    n = len(columns.volumes)
    timed = columns.status != STATUS_INVALID
    # complete - submit wraps in uint64 but is exact there: it lies in [0, 2**64).
    latency = columns.complete_ns[timed].view(np.uint64) - columns.submit_ns[timed].view(np.uint64)
    keys = (columns.volume[timed] * LATENCY_SLOTS
            + columns.op[timed].astype(np.intp) * LATENCY_BINS
            + np.searchsorted(_LATENCY_BOUNDS, latency, side="left"))
    return np.bincount(keys, minlength=n * LATENCY_SLOTS).reshape(n, LATENCY_SLOTS)


# The slot of the one a status counts, by status code (numpy twin of STATUS_RULES).
_COUNT_SLOT = np.array([rule[0] for rule in STATUS_RULES], dtype=np.intp)
_INT64_LIMIT = 2**63  # a sum of int64 values stays exact below this


def slot_sums(columns: Columns) -> list[list[int]]:
    """Per volume of ``columns.volumes``, the section 2 slot sums of its events (all
    taken: already validated, so codes are known and complete_ns >= submit_ns), as
    Python ints. One numpy pass over every volume (DESIGN.md decision 2): counts by
    slot, bytes and time summed by (volume, op) over every event, zero where the status
    does not count them (no masked copies: they cost more than adding zeros)."""
    n_groups = len(columns.volumes) * len(OPS)
    group = columns.volume * len(OPS) + columns.op.astype(np.intp)  # (volume, op)
    totals = np.bincount(group * SLOTS_PER_OP + _COUNT_SLOT[columns.status],
                         minlength=n_groups * SLOTS_PER_OP)
    by_slot = totals.reshape(n_groups, SLOTS_PER_OP)  # a view: adds land in totals
    # complete - submit wraps in uint64 but is exact there: it lies in [0, 2**64).
    latency = columns.complete_ns.view(np.uint64) - columns.submit_ns.view(np.uint64)
    zero = np.uint64(0)
    summed = ((BYTES, np.where(columns.status == STATUS_OK, columns.nbytes.view(np.uint64),
                               zero)),
              (TIME, np.where(columns.status != STATUS_INVALID, latency, zero)))
    exact: list[tuple[int, list[tuple[int, int]]]] = []
    for slot, values in summed:
        # int64 where max * count (counts included) proves no overflow, else Python ints
        # (a hostile but valid event may carry 2**63-1 bytes).
        if not len(values) or int(values.max()) * len(values) < _INT64_LIMIT:
            sums = np.zeros(n_groups, dtype=np.int64)
            np.add.at(sums, group, values.astype(np.int64))  # integer adds: exact
            by_slot[:, slot] += sums
        else:
            exact.append((slot, _python_sums(group, values)))
    out = totals.tolist()
    for slot, group_sums in exact:
        for g, total in group_sums:
            out[g * SLOTS_PER_OP + slot] += total
    return [out[v * N_SLOTS:(v + 1) * N_SLOTS] for v in range(len(columns.volumes))]


def _python_sums(keys: np.ndarray, values: np.ndarray) -> list[tuple[int, int]]:
    """(key, exact sum of its values) for each key that has values, in Python ints."""
    exact: dict[int, int] = {}
    for key, value in zip(keys.tolist(), values.tolist(), strict=True):
        exact[key] = exact.get(key, 0) + value
    return list(exact.items())


def latest_complete(columns: Columns) -> list[int | None]:
    """Per volume of ``columns.volumes``, the latest complete_ns of its events (None: none)."""
    n = len(columns.volumes)
    latest = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(latest, columns.volume, columns.complete_ns)
    seen = np.bincount(columns.volume, minlength=n) > 0
    return [int(t) if s else None for t, s in zip(latest.tolist(), seen.tolist(), strict=True)]


def event_counts(op_code: int, status: int, nbytes: int, latency_ns: int) -> dict[str, int]:
    """What one event adds to the public counters, by name (for code that counts by name)."""
    slot, counts_bytes, counts_time = STATUS_RULES[status]
    amounts = {slot: 1}
    if counts_bytes:
        amounts[BYTES] = nbytes
    if counts_time:
        amounts[TIME] = latency_ns
    return {name: amounts[s] for name, s in OP_COUNTER_NAMES[op_code] if s in amounts}


def record_digest(payload: bytes) -> str:
    """A short hash of a raw record's value: tells a replay from a conflicting record."""
    return hashlib.blake2b(payload, digest_size=8).hexdigest()


def table_json(value: Any) -> bytes:
    """orjson's bytes, right-sized: orjson.dumps keeps a 4 KiB buffer in each, and the
    worker holds one per table value in memory."""
    return bytes(memoryview(orjson.dumps(value)))


def named_counters(counters: Sequence[int]) -> dict[str, int]:
    """Slots -> the section 2 counter names, in SEMANTICS.md order."""
    return {name: counters[slot] for name, slot in COUNTER_NAMES}


@dataclass(slots=True)
class VolumeState:
    """Everything the pipeline remembers about one volume."""

    tenant_id: str
    counters: list[int] = field(default_factory=lambda: [0] * N_SLOTS)
    last_io_ns: int | None = None
    rejected: int = 0
    # Highest seq applied per producer: a record at or below it is a replay.
    producer_seqs: dict[str, int] = field(default_factory=dict)
    # record_digest of that record (none for producers loaded from a version 1 snapshot).
    producer_digests: dict[str, str] = field(default_factory=dict)
    # Cumulative latency bins, LATENCY_BINS per op (add_to_latency_bins).
    latency_bins: list[int] = field(default_factory=lambda: [0] * LATENCY_SLOTS)
    # Per op, the time already in total_{op}_time_ns when the bins started (nonzero only
    # for a state loaded from a version 1 or 2 snapshot): the histogram's sum leaves it out.
    unbinned_time_ns: list[int] = field(default_factory=lambda: [0] * len(OPS))

    def is_replay(self, producer_id: str, seq: int) -> bool:
        return seq <= self.producer_seqs.get(producer_id, -1)

    def conflicts(self, producer_id: str, seq: int, digest: str) -> bool:
        """Is this the producer's last applied seq with other content? (Only the last
        record's digest is kept: a lower seq cannot be checked.)"""
        if self.producer_seqs.get(producer_id) != seq:
            return False
        applied = self.producer_digests.get(producer_id)
        return applied is not None and applied != digest

    def mark_applied(self, producer_id: str, seq: int, digest: str) -> None:
        self.producer_seqs[producer_id] = seq
        self.producer_digests[producer_id] = digest

    def add_events(self, batch: EventBatch) -> None:
        """Count the events of ``batch`` (already validated)."""
        latest = add_to_slots(self.counters, batch)
        add_to_latency_bins(self.latency_bins, batch)
        if latest is not None and (self.last_io_ns is None or latest > self.last_io_ns):
            self.last_io_ns = latest

    def add_sums(self, sums: Sequence[int], latest_ns: int | None,
                 bins: Sequence[int] | None = None) -> None:
        """Add slot sums (:func:`slot_sums`) and latency bin counts
        (:func:`latency_bin_counts`; None: no events) of events whose latest completion is
        ``latest_ns`` (None: no events)."""
        self.counters = [a + b for a, b in zip(self.counters, sums, strict=True)]
        if bins is not None:
            self.latency_bins = [a + b for a, b in zip(self.latency_bins, bins, strict=True)]
        self.completed_at(latest_ns)

    def completed_at(self, latest_ns: int | None) -> None:
        """Events completing at ``latest_ns`` at the latest were counted (None: none)."""
        if latest_ns is not None and (self.last_io_ns is None or latest_ns > self.last_io_ns):
            self.last_io_ns = latest_ns

    def counters_json(self, volume_id: str, reference_ns: int) -> dict[str, Any]:
        """The public counters object of SEMANTICS.md section 2 at ``reference_ns``."""
        obj: dict[str, Any] = {"volume_id": volume_id, "tenant_id": self.tenant_id,
                               **named_counters(self.counters)}
        obj["last_io_ns"] = self.last_io_ns
        # Negative when the last completion is ahead of the reference (clock skew,
        # within the 5 min future tolerance): reported as is, per SEMANTICS.md.
        obj["idle_time_ns"] = None if self.last_io_ns is None else reference_ns - self.last_io_ns
        obj["rejected"] = self.rejected
        return obj

    def latency_histograms(self) -> dict[str, tuple[list[int], int]]:
        """Per op: its cumulative latency bin counts (LATENCY_BINS, not cumulative over the
        bins) and the exact sum of those latencies in ns."""
        return {op: (self.latency_bins[code * LATENCY_BINS:(code + 1) * LATENCY_BINS],
                     self.counters[code * SLOTS_PER_OP + TIME] - self.unbinned_time_ns[code])
                for code, op in enumerate(OPS)}

    def snapshot(self) -> bytes:
        value = [_SNAPSHOT_VERSION, self.tenant_id, self.counters, self.last_io_ns,
                 self.rejected, self.producer_seqs, self.producer_digests, self.latency_bins,
                 self.unbinned_time_ns]
        try:
            return table_json(value)
        except TypeError:
            # A counter past int64 (absurd but valid input): stay exact, not fast.
            return json.dumps(value, separators=(",", ":")).encode()

    @classmethod
    def from_snapshot(cls, data: bytes) -> VolumeState:
        decoded = orjson.loads(data)
        if _has_float(decoded):
            decoded = json.loads(data)  # orjson reads integers past 64 bits as floats
        version = decoded[0]
        if version == _SNAPSHOT_VERSION:
            _, tenant_id, counters, last_io_ns, rejected, seqs, digests, bins, unbinned = decoded
            return cls(tenant_id, counters, last_io_ns, rejected, seqs, digests, bins, unbinned)
        if version not in (1, 2):
            raise ValueError(f"unknown volume state snapshot version {version}")
        _, tenant_id, counters, last_io_ns, rejected, seqs, *digests = decoded
        # No bins yet: the time counted so far is outside the histogram, which starts empty.
        unbinned = [counters[code * SLOTS_PER_OP + TIME] for code in range(len(OPS))]
        return cls(tenant_id, counters, last_io_ns, rejected, seqs,
                   digests[0] if digests else {}, unbinned_time_ns=unbinned)


def _has_float(decoded: list[Any]) -> bool:
    """Did orjson read an integer past 64 bits (as a float) in a snapshot's counters? (A
    sum is a float if any term is: far cheaper than looking at each, on every load.)"""
    total = decoded[4] + sum(decoded[2])
    if len(decoded) > 7:
        total += sum(decoded[7]) + sum(decoded[8])
    return isinstance(total, float)
