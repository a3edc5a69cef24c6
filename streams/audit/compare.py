"""The audit's comparison: where the replay and what was published disagree.

Pure logic: no faust, no aiokafka. :func:`compare` checks every (volume, hour) of the
billing ledger against the recomputed counters and every window of each stats topic
against the recomputed statistics, and says where they disagree: one
:class:`streams.audit.scope.Difference` per finding, per volume and hour.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from streams.audit.ledgers import BillingCopy, BillingLedger, LatestWindow, WindowLedger
from streams.audit.replay import HourExpectation, RecomputedWindow, Replay
from streams.audit.scope import Difference, where_note
from streams.core.codec import CodecError
from streams.core.counters import COUNTER_NAMES
from streams.core.keys import parse_billing_record_id
from streams.core.times import HOUR_NS, NS_PER_S, hour_of, iso
from streams.core.windows.acc import WINDOW_NAMES, window_stats

COUNTER_FIELDS = tuple(name for name, _ in COUNTER_NAMES)
# Counters that count events (every status), for "billed events".
EVENT_FIELDS = tuple(name for name in COUNTER_FIELDS
                     if name.endswith("_ios") or name.endswith("_ios_error"))
MAX_FIELDS_SHOWN = 6  # per window difference; the rest is counted

Copies = dict[str, list[BillingCopy]]  # record_id -> its messages, in order


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


def compare(
    replay: Replay, billing: BillingLedger, windows: Iterable[WindowLedger],
    open_after_ns: int | None = None, horizon_ns: int | None = None,
) -> Comparison:
    """Every difference between the replay and what was published.

    ``open_after_ns``: an hour or window ending after it that has no record yet is still
    open (not a difference); None: everything must have been published.
    ``horizon_ns``: the revision horizon, only for the hint in window differences.
    """
    by_hour, loose = _billing_by_hour(billing)
    rows, differences = _check_hours(replay, by_hour, open_after_ns)
    checked: dict[str, int] = {}
    for ledger in windows:
        differences += ledger.problems
        differences += _WindowCheck(replay, ledger, open_after_ns, horizon_ns).run()
        checked[WINDOW_NAMES[ledger.length_ns]] = len(
            set(replay.windows[ledger.length_ns]) | set(ledger.latest))
    differences += loose
    _mark_differing(rows, differences, replay)
    assert all(replay.scope.wants(v) for v, _ in rows)
    ordered = [rows[k] for k in sorted(rows)]
    differences.sort(key=lambda d: (d.volume_id or "", d.hour_start_ns or 0, d.what))
    return Comparison(ordered, differences, checked)


def _billing_by_hour(
    billing: BillingLedger,
) -> tuple[dict[tuple[str, int], Copies], list[Difference]]:
    """The ledger's record_ids per (volume, hour), and its findings that have neither."""
    by_hour: dict[tuple[str, int], Copies] = {}
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
    return by_hour, loose


def _check_hours(
    replay: Replay, by_hour: dict[tuple[str, int], Copies], open_after_ns: int | None,
) -> tuple[dict[tuple[str, int], HourRow], list[Difference]]:
    rows: dict[tuple[str, int], HourRow] = {}
    differences: list[Difference] = []
    for key in sorted(set(replay.hours) | set(by_hour)):
        volume_id, hour = key
        expected = replay.hours.get(key)
        row = rows[key] = HourRow(volume_id, expected.tenant_id if expected else
                                  replay.tenant_of(volume_id), hour)
        differences += _check_hour(volume_id, hour, expected, by_hour.get(key, {}),
                                   open_after_ns, row)
    return rows, differences


def _mark_differing(rows: dict[tuple[str, int], HourRow], differences: list[Difference],
                    replay: Replay) -> None:
    """DIFF on the row of every difference's hour, adding the rows no check made."""
    for d in differences:
        if d.volume_id is None or d.hour_start_ns is None:
            continue
        marked = rows.get((d.volume_id, d.hour_start_ns))
        if marked is None:
            marked = rows[(d.volume_id, d.hour_start_ns)] = HourRow(
                d.volume_id, replay.tenant_of(d.volume_id), d.hour_start_ns)
        marked.status = "DIFF"


# --------------------------------------------------------------------------- billing


def _counts(record: Mapping[str, Any]) -> list[int]:
    return [record[name] for name in COUNTER_FIELDS]


def _check_hour(
    volume_id: str, hour: int, expected: HourExpectation | None, copies: Copies,
    open_after_ns: int | None, row: HourRow,
) -> list[Difference]:
    out: list[Difference] = []

    def diff(detail: str) -> None:
        out.append(Difference(volume_id, hour, "billing", detail))

    live, sequences = _live_records(copies, diff)
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
    for detail in (_sequence_gaps(sequences), _sum_difference(live, expected)):
        if detail is not None:
            diff(detail)
    return out


def _live_records(
    copies: Copies, diff: Callable[[str], None],
) -> tuple[dict[str, dict[str, Any]], list[int]]:
    """The first copy of every record_id not deleted, and every record_id's sequence;
    reports deletions and conflicting copies through ``diff``."""
    live: dict[str, dict[str, Any]] = {}
    sequences: list[int] = []
    for rid, versions in sorted(copies.items()):
        records = [c for c in versions if c.record is not None]
        if versions[-1].record is None:
            diff(f"record {rid} was deleted (tombstone{where_note(versions[-1].where)})")
        elif records:
            first = records[0]
            assert first.record is not None
            live[rid] = first.record
            for other in records[1:]:
                if other.record != first.record:
                    diff(_conflict(rid, first, other))
        if records:
            sequences.append(records[0].record["sequence"])  # type: ignore[index]
        elif (parsed := rid.rsplit("/", 1)) and parsed[-1].isdigit():
            sequences.append(int(parsed[-1]))
    return live, sequences


def _conflict(rid: str, first: BillingCopy, other: BillingCopy) -> str:
    assert first.record is not None and other.record is not None
    changed = [f"{name} {first.record.get(name)!r} vs {other.record.get(name)!r}"
               for name in dict.fromkeys([*first.record, *other.record])
               if first.record.get(name) != other.record.get(name)]
    return (f"conflicting copies of {rid}: " + "; ".join(changed)
            + f" (first copy{where_note(first.where)}, later copy"
            + f"{where_note(other.where)})")


def _sequence_gaps(sequences: list[int]) -> str | None:
    """What is wrong with an hour's sequences when they are not exactly 0, 1, ..., n-1."""
    if sorted(sequences) == list(range(len(sequences))):
        return None
    missing = sorted(set(range(max(sequences) + 1)) - set(sequences))
    repeated = sorted({s for s in sequences if sequences.count(s) > 1})
    return (f"sequences {', '.join(map(str, sorted(sequences)))}"
            + (f": {', '.join(map(str, missing))} missing" if missing else "")
            + (f": {', '.join(map(str, repeated))} repeated" if repeated else ""))


def _sum_difference(live: dict[str, dict[str, Any]], expected: HourExpectation) -> str | None:
    """How the hour's records' sums differ from the recomputed counters, naming the one
    record without which they would agree when there is one."""
    total = [0] * len(COUNTER_FIELDS)
    for record in live.values():
        total = [a + b for a, b in zip(total, _counts(record), strict=True)]
    want = [expected.counters[slot] for _, slot in COUNTER_NAMES]
    if total == want:
        return None
    changed = [f"{name} published {got}, recomputed {exp}"
               for name, got, exp in zip(COUNTER_FIELDS, total, want, strict=True)
               if got != exp]
    culprits = [rid for rid, record in live.items()
                if [t - c for t, c in zip(total, _counts(record), strict=True)] == want]
    note = (f"; record {culprits[0]} is not backed by the raw topic (without it the "
            "hour agrees)" if len(culprits) == 1
            else f"; records: {', '.join(sorted(live)) or 'none left'}")
    return "sums of the hour's records differ: " + "; ".join(changed) + note


# --------------------------------------------------------------------------- windows


@dataclass(frozen=True, slots=True)
class _WindowCheck:
    """The windows of one stats topic against the recomputed ones."""

    replay: Replay
    ledger: WindowLedger
    open_after_ns: int | None
    horizon_ns: int | None

    def run(self) -> list[Difference]:
        recomputed = self.replay.windows[self.ledger.length_ns]
        out: list[Difference] = []
        for key in sorted(set(recomputed) | set(self.ledger.latest)):
            volume_id, start = key
            out += [Difference(volume_id, hour_of(start), self.ledger.what, detail)
                    for detail in self._details(key, recomputed.get(key),
                                                self.ledger.latest.get(key))]
        return out

    def _details(self, key: tuple[str, int], mine: RecomputedWindow | None,
                 theirs: LatestWindow | None) -> list[str]:
        label = f"window {iso(key[1])}"
        details = []
        if theirs is not None and theirs.conflict:
            details.append(f"{label}: {theirs.conflict}")
        if theirs is None or theirs.payload is None:
            detail = self._unpublished(label, key[1], mine, theirs)
        else:
            detail = self._published(label, key, mine, theirs.payload, theirs.where)
        return details if detail is None else [*details, detail]

    def _unpublished(self, label: str, start: int, mine: RecomputedWindow | None,
                     theirs: LatestWindow | None) -> str | None:
        """A window missing or deleted on the stats topic: a difference if it had events."""
        end = start + self.ledger.length_ns
        if mine is None:
            return None  # a tombstone for a window nobody expects
        if theirs is None and self.open_after_ns is not None and end > self.open_after_ns:
            return None  # not closed yet
        events = sum(o.ios + o.errors + o.invalid for o in mine.acc.ops)
        gone = ("deleted (tombstone" + where_note(theirs.where) + ")" if theirs is not None
                else "missing on the stats topic")
        return (f"{label} {gone}; recomputed {events} events completing in it"
                + _late_hint(mine, end, self.horizon_ns))

    def _published(self, label: str, key: tuple[str, int], mine: RecomputedWindow | None,
                   payload: bytes, where: str) -> str | None:
        try:
            record = self.ledger.decode(payload)
        except CodecError as exc:
            return f"{label}: undecodable message{where_note(where)}: {exc}"
        revision = record.pop("revision")
        if (record["volume_id"], record["window_start_ns"]) != key:
            return (f"{label}: the message{where_note(where)} under its key is window "
                    f"{iso(record['window_start_ns'])} of {record['volume_id']}")
        if mine is None:
            return (f"{label} published (revision {revision}{where_note(where)}) but no "
                    "counted event completes or is in flight in it")
        volume_id, start = key
        stats = window_stats(volume_id, self.replay.tenant_of(volume_id) or "", mine.finished())
        if record == stats:
            return None
        names = [n for n in dict.fromkeys([*stats, *record]) if record.get(n) != stats.get(n)]
        shown = _field_diffs(record, stats, names[:MAX_FIELDS_SHOWN])
        more = len(names) - len(shown)
        return (f"{label} (revision {revision}{where_note(where)}): " + "; ".join(shown)
                + (f"; and {more} more field(s)" if more else "")
                + _late_hint(mine, start + self.ledger.length_ns, self.horizon_ns))


def _field_diffs(published: Mapping[str, Any], recomputed: Mapping[str, Any],
                 names: Iterable[str]) -> list[str]:
    return [f"{name} published {published.get(name)!r}, recomputed {recomputed.get(name)!r}"
            for name in names if published.get(name) != recomputed.get(name)]


def _late_hint(window: RecomputedWindow, end_ns: int, horizon_ns: int | None) -> str:
    if horizon_ns is None or window.latest_record_ns - end_ns <= horizon_ns:
        return ""
    late_s = (window.latest_record_ns - end_ns) // NS_PER_S
    return (f" (events for it were written {late_s} s after the window ended, more than the "
            f"revision horizon of {horizon_ns // NS_PER_S} s: if the watermark had passed "
            "the horizon then, the window was rightly not revised; see docs/audit.md)")
