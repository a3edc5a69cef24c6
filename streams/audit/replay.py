"""The audit's recomputation (SEMANTICS.md section 6): replay raw records, recount them.

Pure logic: no faust, no aiokafka. :class:`Replay` takes the raw topic's records in
partition order and counts them exactly as the worker does, through the worker's own
:func:`streams.core.ingest.account_record` (validation, tenant ownership, the
(producer_id, seq) replay check) with one :class:`VolumeState` per volume in a dict.
From the events it counted it recomputes

* per (volume, hour of ``complete_ns``) the section 2 counters the billing ledger must
  add up to (:func:`streams.core.counters.add_to_slots`), and
* per window length (1 s, 1 m, 1 h), volume and window start in ``[from, to)`` the
  section 3 statistics, each window straight from the raw events (never by rollup):
  :class:`streams.core.windows.acc.WindowAcc` for completions and in-flight time, with the busy
  time (the union of in-flight intervals) computed here once per window by sorting.

What was published is in :mod:`streams.audit.ledgers`, the comparison in
:mod:`streams.audit.compare`.

Known limits, also in docs/audit.md and ``ioacct audit --help``:

* The time horizons of section 4 (retention, 5 minutes in the future) are judged against
  each raw record's Kafka timestamp (when the producer sent it), the worker against its
  own wall clock when it processed the record. An event within seconds of those limits
  can be judged differently; nothing a healthy pipeline produces is near them.
* The volume registry is read to its end once, before the replay: a volume registered
  after some of its events were appended is judged registered for all of them, while the
  worker, which read them before the registration, rejected those (docs/audit.md).
* An event later than the revision horizon (1 h of event time behind the watermark by
  default) revises no window, by design. The audit cannot know the watermark at
  processing time, so such windows show as differences; the detail says when the events
  arrived long enough after the window's end to have been beyond the horizon.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

from streams.audit.scope import Scope
from streams.core.batch import EventBatch
from streams.core.codec import HEADER_LEN, SchemaSet, default_schemas
from streams.core.counters import N_SLOTS, VolumeState, add_to_slots
from streams.core.events import STATUS_INVALID
from streams.core.ingest import Limits, Placement, account_record, legacy_event_batch
from streams.core.times import HOUR_NS
from streams.core.windows.acc import WINDOW_LENGTHS_NS, WindowAcc

WindowBook = dict[tuple[str, int], "RecomputedWindow"]  # (volume_id, window start) -> window


@dataclass(slots=True)
class HourExpectation:
    """The recomputed section 2 counters of one (volume, hour)."""

    tenant_id: str
    counters: list[int] = field(default_factory=lambda: [0] * N_SLOTS)
    events: int = 0


class RecomputedWindow:
    """One recomputed window: its WindowAcc, the in-flight pieces for the busy time,
    and the latest Kafka timestamp of a record that added to it (for the horizon hint)."""

    __slots__ = ("acc", "starts", "ends", "latest_record_ns")

    def __init__(self, start_ns: int, length_ns: int) -> None:
        self.acc = WindowAcc(start_ns, length_ns)
        self.starts = array("q")
        self.ends = array("q")
        self.latest_record_ns = 0

    def add_event(self, op: int, status: int, nbytes: int, submit_ns: int,
                  complete_ns: int) -> bool:
        """An event completing in this window; True when it was in flight in it only."""
        op_acc = self.acc.ops[op]
        op_acc.add_completion(status, nbytes, complete_ns - submit_ns)
        if (submit_ns >= self.acc.window_start_ns and complete_ns > submit_ns
                and status != STATUS_INVALID):
            op_acc.inflight_ns += complete_ns - submit_ns
            self.add_busy(submit_ns, complete_ns)
            return True
        return False

    def add_busy(self, lo: int, hi: int) -> None:
        starts, ends = self.starts, self.ends
        if ends and starts[-1] <= lo <= ends[-1]:  # the usual case: events nearly in order
            if hi > ends[-1]:
                ends[-1] = hi
        else:
            starts.append(lo)
            ends.append(hi)

    def busy_ns(self) -> int:
        """Length of the union of the in-flight pieces (sorted once, merged)."""
        total, cur_lo, cur_hi = 0, None, 0
        for lo, hi in sorted(zip(self.starts, self.ends, strict=True)):
            if cur_lo is None:
                cur_lo, cur_hi = lo, hi
            elif lo <= cur_hi:
                cur_hi = max(cur_hi, hi)
            else:
                total += cur_hi - cur_lo
                cur_lo, cur_hi = lo, hi
        return total if cur_lo is None else total + cur_hi - cur_lo

    def finished(self) -> WindowAcc:
        self.acc.busy_ns = self.busy_ns()
        return self.acc


class Replay:
    """The raw topic replayed: volume states, expected billing hours and windows."""

    def __init__(self, scope: Scope, limits: Limits | None = None,
                 schemas: SchemaSet | None = None,
                 registered: Callable[[str], str | None] | None = None) -> None:
        """``registered``: the volume registry's lookup, read to its end once before the
        replay (None: no registry, the first tenant seen owns a volume)."""
        self.scope = scope
        self.registered = registered
        self.limits = limits or Limits()
        self.schemas = schemas or default_schemas()
        self.tick_header = self.schemas.headers["Tick"]
        self.states: dict[str, VolumeState] = {}
        self.hours: dict[tuple[str, int], HourExpectation] = {}
        self.windows: dict[int, WindowBook] = {n: {} for n in WINDOW_LENGTHS_NS}
        self.records = 0  # raw records replayed (Ticks not included)
        self.ticks = 0
        self.replays_skipped = 0
        self.events_counted = 0
        self.events_rejected = 0

    @property
    def events(self) -> int:
        """Events judged by the replay: counted or rejected (skipped replays excluded)."""
        return self.events_counted + self.events_rejected

    def add(self, payload: bytes, timestamp_ns: int, placement: Placement) -> int:
        """One raw record (its key, partition and the topic's partition count in
        ``placement``), in its partition's order; returns the events it counted.

        ``timestamp_ns`` (the record's Kafka timestamp) stands in for the worker's clock
        in the retention and future checks. A Tick (told by its schema header, as the
        worker does) is skipped.
        """
        if payload[:HEADER_LEN] == self.tick_header:
            self.ticks += 1
            return 0
        self.records += 1
        outcome = account_record(payload, placement, self.states.get, self.schemas,
                                 timestamp_ns, self.limits, self.registered)
        for volume in outcome.volumes:
            if volume.state is not None:
                self.states[volume.volume_id] = volume.state
        self.replays_skipped += outcome.replays
        self.events_rejected += sum(r.events for r in outcome.rejections)
        self.events_counted += outcome.counted
        for volume in outcome.volumes:
            # a replay's events are for the worker's windows: skipped here
            if volume.replay or not len(volume.events) or not self.scope.wants(volume.volume_id):
                continue
            batch = legacy_event_batch(volume)
            self._bill(batch)
            for length_ns in WINDOW_LENGTHS_NS:
                self._window(batch, length_ns, timestamp_ns)
        return outcome.counted

    def tenant_of(self, volume_id: str) -> str | None:
        state = self.states.get(volume_id)
        return None if state is None else state.tenant_id

    def _bill(self, batch: EventBatch) -> None:
        complete = batch.complete_ns
        by_hour: dict[int, list[int]] = {}
        for i in batch.indexes:
            by_hour.setdefault(complete[i] - complete[i] % HOUR_NS, []).append(i)
        volume_id = batch.volume_id
        for hour, indexes in by_hour.items():
            if not self.scope.hour_in(hour):
                continue
            entry = self.hours.get((volume_id, hour))
            if entry is None:
                entry = self.hours[(volume_id, hour)] = HourExpectation(batch.tenant_id)
            add_to_slots(entry.counters, batch.select(indexes))
            entry.events += len(indexes)

    def _window(self, batch: EventBatch, length: int, record_ns: int) -> None:
        book = self.windows[length]
        volume_id = batch.volume_id
        ops, statuses, nbytes = batch.ops, batch.statuses, batch.nbytes
        submit, complete = batch.submit_ns, batch.complete_ns
        lo_bound, hi_bound = self.scope.from_ns, self.scope.to_ns
        last_start: int | None = None  # a batch's events mostly share their windows
        w: RecomputedWindow | None = None
        for i in batch.indexes:
            s, c, op, status = submit[i], complete[i], ops[i], statuses[i]
            start = c - c % length
            if lo_bound <= start < hi_bound:
                if start != last_start:
                    last_start = start
                    w = self._get(book, volume_id, start, length, record_ns)
                assert w is not None
                if w.add_event(op, status, nbytes[i], s, c):
                    continue
            if status != STATUS_INVALID and c > s:
                self._spread_inflight(book, volume_id, op, s, c, length, record_ns)

    def _spread_inflight(self, book: WindowBook, volume_id: str, op: int, submit_ns: int,
                         complete_ns: int, length: int, record_ns: int) -> None:
        """The in-flight interval [submit, complete), clipped to every window in range."""
        lo_bound, hi_bound = self.scope.from_ns, self.scope.to_ns
        first_in_range = lo_bound + (-lo_bound) % length  # first window start >= from
        for w_start in range(max(submit_ns - submit_ns % length, first_in_range),
                             min(complete_ns, hi_bound), length):
            other = self._get(book, volume_id, w_start, length, record_ns)
            piece_lo, piece_hi = max(submit_ns, w_start), min(complete_ns, w_start + length)
            other.acc.ops[op].inflight_ns += piece_hi - piece_lo
            other.add_busy(piece_lo, piece_hi)

    @staticmethod
    def _get(book: WindowBook, volume_id: str, start: int, length: int,
             record_ns: int) -> RecomputedWindow:
        w = book.get((volume_id, start))
        if w is None:
            w = book[(volume_id, start)] = RecomputedWindow(start, length)
        if record_ns > w.latest_record_ns:
            w.latest_record_ns = record_ns
        return w
