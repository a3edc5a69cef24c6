"""The audit's recomputation (SEMANTICS.md section 6): replay raw records, recount them.

Pure logic: no faust, no aiokafka. :class:`Replay` takes the raw topic's records in
partition order and counts them exactly as the worker does, through the worker's own
:func:`streams.core.ingest.account_record` (validation, tenant ownership, the
(producer_id, seq) replay check) with one :class:`VolumeState` per volume in a dict.
From the events it counted it recomputes

* per (volume, hour of ``complete_ns``) the section 2 counters the billing ledger must
  add up to (:func:`streams.core.counters.add_to_slots`), and
* per window length (1 s, 1 m, 1 h), volume and window start in ``[from, to)`` the
  section 3 statistics, each window straight from the raw events (never by rollup), by
  the worker's vectorised windows (:func:`streams.core.windows.vector.window_partials`,
  one implementation of them) into a :class:`~streams.core.windows.acc.WindowAcc` per
  window, with the busy time (the union of in-flight intervals) computed here once per
  window by sorting. In-flight time stops where the worker's stops at the latest
  (SEMANTICS.md section 4): at the revision horizon of the watermark a record's own
  events make, so a request in flight since 1970 costs no more here than in the worker.

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
  arrived long enough after the window's end to have been beyond the horizon. The same
  goes for a long request's in-flight time: the audit's watermark comes from each record's
  own events, so where the worker's was further (earlier records, idle partitions) it
  shows in-flight time the worker rightly left out of windows past the horizon.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

from streams.audit.scope import Scope
from streams.core.batch import Columns, EventBatch
from streams.core.codec import HEADER_LEN, SchemaSet, default_schemas
from streams.core.counters import N_SLOTS, VolumeState, add_to_slots
from streams.core.ingest import Limits, Placement, account_record, legacy_event_batch
from streams.core.times import HOUR_NS, NS_PER_S
from streams.core.windows.acc import WINDOW_LENGTHS_NS, WindowAcc
from streams.core.windows.book import WindowSettings
from streams.core.windows.vector import inflight_from_ns, window_partials

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
                 registered: Callable[[str], str | None] | None = None,
                 window_settings: WindowSettings | None = None) -> None:
        """``registered``: the volume registry's lookup, read to its end once before the
        replay (None: no registry, the first tenant seen owns a volume);
        ``window_settings``: the workers' grace and revision horizon."""
        self.scope = scope
        self.window_settings = window_settings or WindowSettings()
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
        # a replay's events are for the worker's windows: skipped here
        counted = [v for v in outcome.volumes if not v.replay and len(v.events)]
        if not counted:
            return outcome.counted
        from_ns = self._inflight_from_ns(max(int(v.events.complete_ns.max()) for v in counted))
        for volume in counted:
            if not self.scope.wants(volume.volume_id):
                continue
            self._bill(legacy_event_batch(volume))
            for length_ns in WINDOW_LENGTHS_NS:
                self._window(volume.events, length_ns, from_ns, timestamp_ns)
        return outcome.counted

    def _inflight_from_ns(self, max_complete_ns: int) -> int | None:
        """Where the worker's in-flight time starts at the latest for these events
        (SEMANTICS.md section 4, WindowBook.inflight_frozen_before_ns): at the revision
        horizon of the watermark the record's own events make, on 1 s windows (the 1 m and
        1 h ones are made of them). The worker's watermark is at least that once the record
        is in, so the audit clips no more than it did; like lateness, where it was further
        (earlier records, idle partitions) the audit cannot know it."""
        after = max_complete_ns - self.window_settings.grace_ns
        return inflight_from_ns(after - self.window_settings.horizon_ns, NS_PER_S)

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

    def _window(self, columns: Columns, length: int, from_ns: int | None,
                record_ns: int) -> None:
        """The events' windows in range, by the worker's own vectorised windows (one
        implementation of them): no lateness here, every window is recomputed whole."""
        first_in_range = self.scope.from_ns + (-self.scope.from_ns) % length
        if from_ns is None or from_ns < first_in_range:
            from_ns = first_in_range  # pieces before the range are not wanted
        partials = window_partials(columns, length, None, from_ns, NS_PER_S)
        book = self.windows[length]
        volume_id = columns.volumes[0]
        window_in = self.scope.window_in
        for part in partials.completions:
            if window_in(part.window * length):
                self._get(book, volume_id, part.window * length, length, record_ns
                          ).acc.ops[part.op].add_partial(part)
        for _, window, op, inflight_ns in partials.inflight:
            if window_in(window * length):
                self._get(book, volume_id, window * length, length, record_ns
                          ).acc.ops[op].inflight_ns += inflight_ns
        for (_, window), (intervals, _) in partials.busy.items():
            if window_in(window * length):
                w = self._get(book, volume_id, window * length, length, record_ns)
                for lo, hi in intervals.tolist():
                    w.add_busy(lo, hi)

    @staticmethod
    def _get(book: WindowBook, volume_id: str, start: int, length: int,
             record_ns: int) -> RecomputedWindow:
        w = book.get((volume_id, start))
        if w is None:
            w = book[(volume_id, start)] = RecomputedWindow(start, length)
        if record_ns > w.latest_record_ns:
            w.latest_record_ns = record_ns
        return w
