"""The audit (SEMANTICS.md section 6): replay raw records, recompute, compare.

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

:class:`BillingLedger` and :class:`WindowLedger` collect what was published (Kafka key,
value or None for a tombstone, and where it was), and :func:`compare` says where the two
disagree: one :class:`Difference` per finding, per volume and hour.

Known limits, also in docs/audit.md and ``ioacct audit --help``:

* The time horizons of section 4 (retention, 5 minutes in the future) are judged against
  each raw record's Kafka timestamp (when the producer sent it), the worker against its
  own wall clock when it processed the record. An event within seconds of those limits
  can be judged differently; nothing a healthy pipeline produces is near them.
* An event later than the revision horizon (1 h of event time behind the watermark by
  default) revises no window, by design. The audit cannot know the watermark at
  processing time, so such windows show as differences; the detail says when the events
  arrived long enough after the window's end to have been beyond the horizon.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.core.batch import EventBatch
from streams.core.codec import HEADER_LEN, CodecError, SchemaSet, default_schemas
from streams.core.counters import COUNTER_NAMES, N_SLOTS, VolumeState, add_to_slots
from streams.core.events import STATUS_INVALID
from streams.core.ingest import Limits, account_record
from streams.core.keys import (
    MARKER_KEY_PREFIX,
    billing_record_id,
    parse_billing_record_id,
    parse_window_key,
)
from streams.core.times import HOUR_NS, NS_PER_S, hour_of, iso
from streams.core.windows.acc import (
    WINDOW_LENGTHS_NS,
    WINDOW_NAMES,
    WindowAcc,
    window_stats,
)

COUNTER_FIELDS = tuple(name for name, _ in COUNTER_NAMES)
# Counters that count events (every status), for "billed events".
EVENT_FIELDS = tuple(name for name in COUNTER_FIELDS
                     if name.endswith("_ios") or name.endswith("_ios_error"))
MAX_FIELDS_SHOWN = 6  # per window difference; the rest is counted


@dataclass(frozen=True, slots=True)
class Scope:
    """What an audit looks at: windows starting in [from_ns, to_ns), the hours that
    overlap that range (each checked whole), optionally one volume."""

    from_ns: int
    to_ns: int
    volume: str | None = None

    def __post_init__(self) -> None:
        if self.to_ns <= self.from_ns:
            raise ValueError("the audit range is empty: --to must be after --from")

    def wants(self, volume_id: str | None) -> bool:
        return self.volume is None or volume_id == self.volume

    def hour_in(self, hour_start_ns: int) -> bool:
        return hour_start_ns + HOUR_NS > self.from_ns and hour_start_ns < self.to_ns

    def window_in(self, start_ns: int) -> bool:
        return self.from_ns <= start_ns < self.to_ns


@dataclass(frozen=True, slots=True)
class Difference:
    """One disagreement. ``what`` is "billing" or "window 1s" / "window 1m" / "window 1h"."""

    volume_id: str | None
    hour_start_ns: int | None
    what: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"volume_id": self.volume_id, "hour_start_ns": self.hour_start_ns,
                "what": self.what, "detail": self.detail}


# --------------------------------------------------------------------------- replay


@dataclass(slots=True)
class HourExpectation:
    """The recomputed section 2 counters of one (volume, hour)."""

    tenant_id: str
    counters: list[int] = field(default_factory=lambda: [0] * N_SLOTS)
    events: int = 0


class _Window:
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
                 schemas: SchemaSet | None = None) -> None:
        self.scope = scope
        self.limits = limits or Limits()
        self.schemas = schemas or default_schemas()
        self.tick_header = self.schemas.headers["Tick"]
        self.states: dict[str, VolumeState] = {}
        self.hours: dict[tuple[str, int], HourExpectation] = {}
        self.windows: dict[int, dict[tuple[str, int], _Window]] = {
            n: {} for n in WINDOW_LENGTHS_NS}
        self.records = 0  # raw records replayed (Ticks not included)
        self.ticks = 0
        self.replays_skipped = 0
        self.events_counted = 0
        self.events_rejected = 0

    @property
    def events(self) -> int:
        """Events judged by the replay: counted or rejected (skipped replays excluded)."""
        return self.events_counted + self.events_rejected

    def add(self, payload: bytes, timestamp_ns: int) -> int:
        """One raw record, in its partition's order; returns the events it counted.

        ``timestamp_ns`` (the record's Kafka timestamp) stands in for the worker's clock
        in the retention and future checks. A Tick (told by its schema header, as the
        worker does) is skipped.
        """
        if payload[:HEADER_LEN] == self.tick_header:
            self.ticks += 1
            return 0
        self.records += 1
        outcome = account_record(payload, self.states.get, self.schemas, timestamp_ns,
                                 self.limits)
        if outcome.state is not None and outcome.volume_id is not None:
            self.states[outcome.volume_id] = outcome.state
        self.replays_skipped += outcome.replay
        self.events_rejected += sum(r.events for r in outcome.rejections)
        self.events_counted += outcome.counted
        batch = outcome.events  # a replay's batch is for the worker's windows: skipped here
        if (batch is None or outcome.replay or not batch.indexes
                or not self.scope.wants(outcome.volume_id)):
            return outcome.counted
        self._bill(batch)
        for length_ns in WINDOW_LENGTHS_NS:
            self._window(batch, length_ns, timestamp_ns)
        return outcome.counted

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
        first_in_range = lo_bound + (-lo_bound) % length  # first window start >= from
        last_start: int | None = None  # a batch's events mostly share their windows
        w: _Window | None = None
        for i in batch.indexes:
            s, c, op, status = submit[i], complete[i], ops[i], statuses[i]
            start = c - c % length
            in_range = lo_bound <= start < hi_bound
            if in_range:
                if start != last_start:
                    last_start = start
                    w = self._get(book, volume_id, start, length, record_ns)
                assert w is not None
                op_acc = w.acc.ops[op]
                op_acc.add_completion(status, nbytes[i], c - s)
                if s >= start and c > s and status != STATUS_INVALID:
                    # The usual case: in flight within this window only (add_busy, inlined).
                    op_acc.inflight_ns += c - s
                    ends = w.ends
                    if ends and w.starts[-1] <= s <= ends[-1]:
                        if c > ends[-1]:
                            ends[-1] = c
                    else:
                        w.starts.append(s)
                        ends.append(c)
                    continue
            if status == STATUS_INVALID or c <= s:
                continue
            # The in-flight interval [s, c), clipped to every window in range it overlaps.
            for w_start in range(max(s - s % length, first_in_range), min(c, hi_bound), length):
                other = self._get(book, volume_id, w_start, length, record_ns)
                piece_lo, piece_hi = max(s, w_start), min(c, w_start + length)
                other.acc.ops[op].inflight_ns += piece_hi - piece_lo
                other.add_busy(piece_lo, piece_hi)

    @staticmethod
    def _get(book: dict[tuple[str, int], _Window], volume_id: str, start: int, length: int,
             record_ns: int) -> _Window:
        w = book.get((volume_id, start))
        if w is None:
            w = book[(volume_id, start)] = _Window(start, length)
        if record_ns > w.latest_record_ns:
            w.latest_record_ns = record_ns
        return w

    def tenant_of(self, volume_id: str) -> str | None:
        state = self.states.get(volume_id)
        return None if state is None else state.tenant_id


# --------------------------------------------------------------------------- published


def _where(where: str) -> str:
    return f" ({where})" if where else ""


@dataclass(slots=True)
class _Copy:
    record: dict[str, Any] | None  # None: a tombstone
    where: str


class BillingLedger:
    """Every message of the billing topic, grouped by record_id (key)."""

    def __init__(self, scope: Scope, schemas: SchemaSet | None = None) -> None:
        self.scope = scope
        self.schemas = schemas or default_schemas()
        self.copies: dict[str, list[_Copy]] = {}
        self.problems: list[Difference] = []
        self.messages = 0

    def add(self, key: bytes | None, value: bytes | None, where: str = "") -> None:
        """One message: its key, its value (None for a tombstone) and where it was."""
        self.messages += 1
        key_text = key.decode(errors="replace") if key is not None else None
        if value is None:
            volume, hour = parse_billing_record_id(key_text)
            if (volume is None and self.scope.volume is None) or (
                    volume is not None and hour is not None and self.scope.wants(volume)
                    and self.scope.hour_in(hour)):
                self.copies.setdefault(key_text or "", []).append(_Copy(None, where))
            return
        try:
            _, record = self.schemas.decode(value, expect="BillingRecord")
        except CodecError as exc:
            volume, hour = parse_billing_record_id(key_text)
            if self.scope.volume is None or volume == self.scope.volume:
                self.problems.append(Difference(volume, hour, "billing",
                                                f"undecodable message{_where(where)}: {exc}"))
            return
        if not (self.scope.wants(record["volume_id"]) and self.scope.hour_in(
                record["hour_start_ns"])):
            return
        rid = record["record_id"]
        wants = billing_record_id(record["tenant_id"], record["volume_id"], record["hour_start_ns"],
                          record["sequence"])
        problems = []
        if key_text != rid:
            problems.append(f"key {key_text!r} is not its record_id {rid!r}")
        if rid != wants:
            problems.append(f"record_id {rid!r} does not match its fields ({wants!r})")
        if record["hour_start_ns"] % HOUR_NS or record["hour_length_ns"] != HOUR_NS:
            problems.append("hour_start_ns/hour_length_ns is not an epoch-aligned hour")
        if record["kind"] != ("hour" if record["sequence"] == 0 else "adjustment"):
            problems.append(f"kind {record['kind']!r} with sequence {record['sequence']}")
        for problem in problems:
            self.problems.append(Difference(record["volume_id"], record["hour_start_ns"],
                                            "billing", f"malformed record{_where(where)}: "
                                            + problem))
        self.copies.setdefault(key_text if key_text is not None else rid, []).append(
            _Copy(record, where))


@dataclass(slots=True)
class _Latest:
    payload: bytes | None  # None: a tombstone is the latest message of the key
    where: str
    revision: int | None = None  # None: not decoded (a key seen once is decoded only once)
    conflict: str | None = None




class WindowLedger:
    """The latest revision per window key of one stats topic, kept encoded: most keys have
    one message, decoded once when compared (decoding is the costly part)."""

    def __init__(self, length_ns: int, scope: Scope, schemas: SchemaSet | None = None) -> None:
        self.length_ns = length_ns
        self.scope = scope
        self.schemas = schemas or default_schemas()
        self.latest: dict[tuple[str, int], _Latest] = {}
        self.problems: list[Difference] = []
        self.messages = 0

    @property
    def what(self) -> str:
        return f"window {WINDOW_NAMES[self.length_ns]}"

    def decode(self, payload: bytes) -> dict[str, Any]:
        return self.schemas.decode(payload, expect="WindowStats")[1]

    def _revision(self, entry: _Latest) -> int:
        if entry.revision is None:
            try:
                entry.revision = int(self.decode(entry.payload)["revision"]) if (
                    entry.payload is not None) else -1
            except CodecError:
                entry.revision = -1  # reported when compared, if it stays the latest
        return entry.revision

    def add(self, key: bytes | None, value: bytes | None, where: str = "") -> None:
        if key is not None and key.startswith(MARKER_KEY_PREFIX):
            return  # a watermark marker between the windows (schemas/watermark.avsc)
        self.messages += 1
        parsed = parse_window_key(key)
        if parsed is None:
            self._stray(key, value, where)
            return
        if not (self.scope.wants(parsed[0]) and self.scope.window_in(parsed[1])):
            return
        previous = self.latest.get(parsed)
        entry = _Latest(value, where)
        if value is None or previous is None or previous.payload is None:
            self.latest[parsed] = entry  # a tombstone deletes whatever came before
        elif value != previous.payload:  # identical copies are one message
            mine, theirs = self._revision(entry), self._revision(previous)
            if mine > theirs:
                self.latest[parsed] = entry
            elif mine == theirs:
                previous.conflict = (f"conflicting copies of revision {mine} "
                                     f"({previous.where} and {where})")

    def _stray(self, key: bytes | None, value: bytes | None, where: str) -> None:
        """A message whose key names no window: reported, never taken as a window."""
        if value is None:
            return
        try:
            record = self.decode(value)
        except CodecError as exc:
            if self.scope.volume is None:
                self.problems.append(Difference(None, None, self.what,
                                                f"undecodable message{_where(where)}: {exc}"))
            return
        volume_id, start = record["volume_id"], record["window_start_ns"]
        if self.scope.wants(volume_id) and self.scope.window_in(start):
            self.problems.append(Difference(
                volume_id, hour_of(start), self.what,
                f"window {iso(start)}{_where(where)}: key {key!r} does not name it"))


# --------------------------------------------------------------------------- compare


@dataclass(slots=True)
class HourRow:
    """One line of the report's table."""

    volume_id: str
    tenant_id: str | None
    hour_start_ns: int
    billing_records: int = 0
    billed_events: int = 0
    recomputed_events: int = 0
    status: str = "OK"  # OK, DIFF, or OPEN (not billed yet: the hour has not closed)

    def to_dict(self) -> dict[str, Any]:
        return {"volume_id": self.volume_id, "tenant_id": self.tenant_id,
                "hour_start_ns": self.hour_start_ns, "hour": iso(self.hour_start_ns),
                "billing_records": self.billing_records, "billed_events": self.billed_events,
                "recomputed_events": self.recomputed_events, "status": self.status}


@dataclass
class Comparison:
    rows: list[HourRow]
    differences: list[Difference]
    windows_checked: dict[str, int]


def _counts(record: Mapping[str, Any]) -> list[int]:
    return [record[name] for name in COUNTER_FIELDS]


def _field_diffs(published: Mapping[str, Any], recomputed: Mapping[str, Any],
                 names: Iterable[str]) -> list[str]:
    return [f"{name} published {published.get(name)!r}, recomputed {recomputed.get(name)!r}"
            for name in names if published.get(name) != recomputed.get(name)]


def _check_hour(
    volume_id: str, hour: int, expected: HourExpectation | None, copies: dict[str, list[_Copy]],
    open_after_ns: int | None, row: HourRow,
) -> list[Difference]:
    out: list[Difference] = []

    def diff(detail: str) -> None:
        out.append(Difference(volume_id, hour, "billing", detail))

    live: dict[str, dict[str, Any]] = {}
    sequences: list[int] = []
    for rid, versions in sorted(copies.items()):
        records = [c for c in versions if c.record is not None]
        if versions[-1].record is None:
            diff(f"record {rid} was deleted (tombstone{_where(versions[-1].where)})")
        elif records:
            first = records[0]
            assert first.record is not None
            live[rid] = first.record
            for other in records[1:]:
                assert other.record is not None
                if other.record != first.record:
                    changed = [f"{name} {first.record.get(name)!r} vs {other.record.get(name)!r}"
                               for name in dict.fromkeys([*first.record, *other.record])
                               if first.record.get(name) != other.record.get(name)]
                    diff(f"conflicting copies of {rid}: " + "; ".join(changed)
                         + f" (first copy{_where(first.where)}, later copy"
                         + f"{_where(other.where)})")
        if records:
            sequences.append(records[0].record["sequence"])  # type: ignore[index]
        elif (parsed := rid.rsplit("/", 1)) and parsed[-1].isdigit():
            sequences.append(int(parsed[-1]))
    row.billing_records = len(live)
    row.billed_events = sum(r[name] for r in live.values() for name in EVENT_FIELDS)
    row.recomputed_events = 0 if expected is None else expected.events
    if expected is None:
        for rid in live:
            diff(f"unexpected record {rid}: no counted event of this volume completes in "
                 "this hour")
        return out
    if not copies:
        if open_after_ns is not None and hour + HOUR_NS > open_after_ns:
            row.status = "OPEN"
            return out
        diff(f"no billing record for this hour; recomputed {expected.events} events")
        return out
    tenants = {r["tenant_id"] for r in live.values()}
    if tenants - {expected.tenant_id}:
        diff(f"tenant_id published {', '.join(sorted(tenants))}, "
             f"recomputed {expected.tenant_id}")
    if sorted(sequences) != list(range(len(sequences))):
        missing = sorted(set(range(max(sequences) + 1)) - set(sequences))
        repeated = sorted({s for s in sequences if sequences.count(s) > 1})
        diff(f"sequences {', '.join(map(str, sorted(sequences)))}"
             + (f": {', '.join(map(str, missing))} missing" if missing else "")
             + (f": {', '.join(map(str, repeated))} repeated" if repeated else ""))
    total = [0] * len(COUNTER_FIELDS)
    for record in live.values():
        total = [a + b for a, b in zip(total, _counts(record), strict=True)]
    want = [expected.counters[slot] for _, slot in COUNTER_NAMES]
    if total != want:
        changed = [f"{name} published {got}, recomputed {exp}"
                   for name, got, exp in zip(COUNTER_FIELDS, total, want, strict=True)
                   if got != exp]
        culprits = [rid for rid, record in live.items()
                    if [t - c for t, c in zip(total, _counts(record), strict=True)] == want]
        note = (f"; record {culprits[0]} is not backed by the raw topic (without it the "
                "hour agrees)" if len(culprits) == 1
                else f"; records: {', '.join(sorted(live)) or 'none left'}")
        diff("sums of the hour's records differ: " + "; ".join(changed) + note)
    return out


def _check_windows(
    replay: Replay, ledger: WindowLedger, open_after_ns: int | None, horizon_ns: int | None,
) -> list[Difference]:
    out: list[Difference] = []
    length = ledger.length_ns
    what = ledger.what
    recomputed = replay.windows[length]
    for key in sorted(set(recomputed) | set(ledger.latest)):
        volume_id, start = key
        label = f"window {iso(start)}"
        mine = recomputed.get(key)
        theirs = ledger.latest.get(key)

        def diff(detail: str, volume_id: str = volume_id, start: int = start) -> None:
            out.append(Difference(volume_id, hour_of(start), what, detail))

        if theirs is not None and theirs.conflict:
            diff(f"{label}: {theirs.conflict}")
        if theirs is None or theirs.payload is None:
            if mine is None:
                continue  # a tombstone for a window nobody expects
            if theirs is None and open_after_ns is not None and start + length > open_after_ns:
                continue  # not closed yet
            acc = mine.acc
            events = sum(o.ios + o.errors + o.invalid for o in acc.ops)
            gone = ("deleted (tombstone" + _where(theirs.where) + ")" if theirs is not None
                    else "missing on the stats topic")
            diff(f"{label} {gone}; recomputed {events} events completing in it"
                 + _late_hint(mine, start + length, horizon_ns))
            continue
        try:
            record = ledger.decode(theirs.payload)
        except CodecError as exc:
            diff(f"{label}: undecodable message{_where(theirs.where)}: {exc}")
            continue
        revision = record.pop("revision")
        if (record["volume_id"], record["window_start_ns"]) != key:
            diff(f"{label}: the message{_where(theirs.where)} under its key is window "
                 f"{iso(record['window_start_ns'])} of {record['volume_id']}")
            continue
        if mine is None:
            diff(f"{label} published (revision {revision}{_where(theirs.where)}) but no "
                 "counted event completes or is in flight in it")
            continue
        tenant = replay.tenant_of(volume_id) or ""
        stats = window_stats(volume_id, tenant, mine.finished())
        if record != stats:
            names = [n for n in dict.fromkeys([*stats, *record]) if record.get(n) != stats.get(n)]
            shown = _field_diffs(record, stats, names[:MAX_FIELDS_SHOWN])
            more = len(names) - len(shown)
            diff(f"{label} (revision {revision}{_where(theirs.where)}): " + "; ".join(shown)
                 + (f"; and {more} more field(s)" if more else "")
                 + _late_hint(mine, start + length, horizon_ns))
    return out


def _late_hint(window: _Window, end_ns: int, horizon_ns: int | None) -> str:
    if horizon_ns is None or window.latest_record_ns - end_ns <= horizon_ns:
        return ""
    late_s = (window.latest_record_ns - end_ns) // NS_PER_S
    return (f" (events for it were written {late_s} s after the window ended, more than the "
            f"revision horizon of {horizon_ns // NS_PER_S} s: if the watermark had passed "
            "the horizon then, the window was rightly not revised; see docs/audit.md)")


def compare(
    replay: Replay, billing: BillingLedger, windows: Iterable[WindowLedger],
    open_after_ns: int | None = None, horizon_ns: int | None = None,
) -> Comparison:
    """Every difference between the replay and what was published.

    ``open_after_ns``: an hour or window ending after it that has no record yet is still
    open (not a difference); None: everything must have been published.
    ``horizon_ns``: the revision horizon, only for the hint in window differences.
    """
    scope = replay.scope
    by_hour: dict[tuple[str, int], dict[str, list[_Copy]]] = {}
    loose: list[Difference] = list(billing.problems)
    for rid, versions in billing.copies.items():
        volume, hour = parse_billing_record_id(rid)
        record = next((c.record for c in versions if c.record is not None), None)
        if record is not None:
            volume, hour = record["volume_id"], record["hour_start_ns"]
        if volume is None or hour is None:
            loose.append(Difference(None, None, "billing",
                                    f"tombstone with key {rid!r}, which is no record_id"))
            continue
        by_hour.setdefault((volume, hour), {})[rid] = versions
    rows: dict[tuple[str, int], HourRow] = {}
    differences: list[Difference] = []
    for key in sorted(set(replay.hours) | set(by_hour)):
        volume_id, hour = key
        expected = replay.hours.get(key)
        row = rows[key] = HourRow(volume_id, expected.tenant_id if expected else
                                  replay.tenant_of(volume_id), hour)
        differences += _check_hour(volume_id, hour, expected, by_hour.get(key, {}),
                                   open_after_ns, row)
    checked: dict[str, int] = {}
    for ledger in windows:
        differences += ledger.problems
        differences += _check_windows(replay, ledger, open_after_ns, horizon_ns)
        checked[WINDOW_NAMES[ledger.length_ns]] = len(
            set(replay.windows[ledger.length_ns]) | set(ledger.latest))
    differences += loose
    for d in differences:
        if d.volume_id is None or d.hour_start_ns is None:
            continue
        marked = rows.get((d.volume_id, d.hour_start_ns))
        if marked is None:
            marked = rows[(d.volume_id, d.hour_start_ns)] = HourRow(
                d.volume_id, replay.tenant_of(d.volume_id), d.hour_start_ns)
        marked.status = "DIFF"
    assert all(scope.wants(v) for v, _ in rows)
    ordered = [rows[k] for k in sorted(rows)]
    differences.sort(key=lambda d: (d.volume_id or "", d.hour_start_ns or 0, d.what))
    return Comparison(ordered, differences, checked)



# --------------------------------------------------------------------------- report


@dataclass
class AuditReport:
    """What ``ioacct audit`` found, with what it took to find it."""

    from_ns: int
    to_ns: int
    volume: str | None
    rows: list[HourRow]
    differences: list[Difference]
    windows_checked: dict[str, int] = field(default_factory=dict)
    events_replayed: int = 0
    records_replayed: int = 0
    events_counted: int = 0
    events_rejected: int = 0
    replays_skipped: int = 0
    ticks_skipped: int = 0
    billing_messages: int = 0
    stats_messages: int = 0
    replay_seconds: float = 0.0
    seconds: float = 0.0

    @classmethod
    def build(cls, replay: Replay, billing: BillingLedger, windows: list[WindowLedger],
              comparison: Comparison, replay_seconds: float = 0.0,
              seconds: float = 0.0) -> AuditReport:
        return cls(
            replay.scope.from_ns, replay.scope.to_ns, replay.scope.volume, comparison.rows,
            comparison.differences, comparison.windows_checked, replay.events,
            replay.records, replay.events_counted, replay.events_rejected,
            replay.replays_skipped, replay.ticks, billing.messages,
            sum(w.messages for w in windows), replay_seconds, seconds)

    @property
    def ok(self) -> bool:
        return not self.differences

    @property
    def volumes(self) -> int:
        return len({row.volume_id for row in self.rows})

    @property
    def rate_events_per_s(self) -> float:
        return self.events_replayed / self.replay_seconds if self.replay_seconds > 0 else 0.0

    @property
    def rate_records_per_s(self) -> float:
        return self.records_replayed / self.replay_seconds if self.replay_seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "from_ns": self.from_ns, "to_ns": self.to_ns, "volume": self.volume,
            "volumes": self.volumes, "hours": [row.to_dict() for row in self.rows],
            "events_replayed": self.events_replayed, "records_replayed": self.records_replayed,
            "rate_events_per_s": round(self.rate_events_per_s, 1),
            "rate_records_per_s": round(self.rate_records_per_s, 1),
            "events_counted": self.events_counted, "events_rejected": self.events_rejected,
            "replays_skipped": self.replays_skipped, "ticks_skipped": self.ticks_skipped,
            "billing_messages": self.billing_messages, "stats_messages": self.stats_messages,
            "windows_checked": self.windows_checked,
            "replay_seconds": round(self.replay_seconds, 3), "seconds": round(self.seconds, 3),
            "differences": [d.to_dict() for d in self.differences], "ok": self.ok,
        }

    def summary(self) -> str:
        windows = sum(self.windows_checked.values())
        verdict = "OK: the published records agree with the raw topic" if self.ok else (
            f"{len(self.differences)} difference(s)")
        return (f"audit {iso(self.from_ns)} .. {iso(self.to_ns)}"
                + (f" volume {self.volume}" if self.volume else "")
                + f": {self.volumes} volume(s), {len(self.rows)} hour(s), {windows:,} "
                f"window(s) checked; replayed {self.records_replayed:,} records "
                f"({self.events_replayed:,} events) at {self.rate_events_per_s:,.0f} events/s; "
                + verdict)

    def text(self) -> str:
        """The readable report: a table per volume and hour, the differences, a summary."""
        width = max([len("VOLUME")] + [len(row.volume_id) for row in self.rows])
        lines = [f"{'VOLUME':<{width}}  {'HOUR (UTC)':<20}  {'RECORDS':>7}  "
                 f"{'BILLED EVENTS':>13}  STATUS"]
        lines += [f"{row.volume_id:<{width}}  {iso(row.hour_start_ns):<20}  "
                  f"{row.billing_records:>7}  {row.billed_events:>13}  {row.status}"
                  for row in self.rows]
        if self.differences:
            lines += ["", "DIFFERENCES"]
            lines += [f"{d.volume_id or '-'} "
                      f"{iso(d.hour_start_ns) if d.hour_start_ns is not None else '-'} "
                      f"{d.what}: {d.detail}" for d in self.differences]
        lines += ["", self.summary()]
        return "\n".join(lines)


__all__ = ["AuditReport", "BillingLedger", "Comparison", "Difference", "HourExpectation", "HourRow",
           "Replay", "Scope", "WindowLedger", "compare", "iso"]
