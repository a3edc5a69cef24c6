"""The audit's replay and comparisons (streams/audit/), against the brute-force oracles.

The "published" side is built here from tests/oracle.py and tests/window_oracle.py (what a
correct worker publishes), never from the pipeline's code; the replay must agree with it
exactly, and every forgery must be found and named.
"""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from streams.audit.compare import Comparison, compare
from streams.audit.ledgers import BillingLedger, WindowLedger
from streams.audit.replay import Replay
from streams.audit.report import AuditReport
from streams.audit.scope import Scope
from streams.core.codec import SchemaSet
from streams.core.counters import COUNTER_NAMES
from streams.core.events import OPS, STATUSES
from streams.core.ingest import Limits, Placement
from streams.core.windows.acc import window_stats
from tests.oracles.counters import billing_oracle, counters_oracle, oracle_reject_reason
from tests.oracles.windows import horizon_oracle, rollup_oracle, windows_oracle

SCHEMAS = SchemaSet()
S = 1_000_000_000
HOUR = 3600 * S
T0 = 1_700_000_000 * S - (1_700_000_000 * S) % HOUR  # an hour boundary
NOW = T0 + 3 * HOUR  # Kafka timestamp of every record unless a test says otherwise
LENGTHS = (S, 60 * S, HOUR)
NAMES = [name for name, _ in COUNTER_NAMES]
SCOPE = Scope(T0 - HOUR, T0 + 3 * HOUR)


def make_events(seed: int = 1, n: int = 400) -> list[dict[str, Any]]:
    """Valid events of four volumes over two hours: every op and status, short and long
    requests (some in flight across 1 s, 1 m and hour boundaries), nearly in order."""
    rng = random.Random(seed)
    events = []
    for k in range(n):
        volume = f"vol-{k % 4}"
        complete = T0 + (k * 2 * HOUR) // n + rng.randrange(0, 3 * S)
        latency = 70 * S if k % 97 == 5 else rng.choice(
            [3_000, 40_000, 900_000, 25 * 10**6, 1_500 * 10**6])
        op = rng.choice(OPS)
        nbytes = 0 if op == "flush" else rng.choice([512, 4096, 65536])
        events.append({
            "volume_id": volume, "tenant_id": f"ten-{k % 4 // 2}", "host_id": "h-1",
            "op": op, "status": rng.choice(["ok", "ok", "ok", "failed", "invalid"]),
            "offset": 0 if op == "flush" else rng.randrange(0, 2**30, 512),
            "bytes": nbytes, "submit_ns": complete - latency, "complete_ns": complete,
        })
    return events


def batch_payload(events: list[dict[str, Any]], producer: str = "p-1", seq: int = 0) -> bytes:
    first = events[0]
    return SCHEMAS.encode("IoBatch", {
        "producer_id": producer, "seq": seq, "volume_id": first["volume_id"],
        "tenant_id": first["tenant_id"], "host_id": first.get("host_id"),
        "op": bytes(OPS.index(e["op"]) for e in events),
        "status": bytes(STATUSES.index(e["status"]) for e in events),
        "offset": [e["offset"] for e in events], "bytes": [e["bytes"] for e in events],
        "submit_ns": [e["submit_ns"] for e in events],
        "complete_ns": [e["complete_ns"] for e in events],
    })


def raw_records(events: list[dict[str, Any]], size: int = 7) -> list[bytes]:
    """Per volume, consecutive batches of ``size`` events with increasing seqs."""
    per_volume: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        per_volume.setdefault(event["volume_id"], []).append(event)
    payloads, seq = [], 0
    for volume_events in per_volume.values():
        for i in range(0, len(volume_events), size):
            payloads.append(batch_payload(volume_events[i:i + size], seq=seq))
            seq += 1
    return payloads


def tick() -> bytes:
    return SCHEMAS.encode("Tick", {"wall_ns": NOW, "worker": "http://127.0.0.1:6066"})


def placed(payload: bytes) -> Placement:
    """Where a producer keys and partitions ``payload`` (one partition here; a Tick has
    no volume)."""
    return Placement.of(SCHEMAS.decode(payload)[1].get("volume_id", ""), 1)


def replay_of(payloads: list[bytes], scope: Scope = SCOPE, now: int = NOW) -> Replay:
    replay = Replay(scope, Limits(), SCHEMAS)
    for payload in payloads:
        replay.add(payload, now, placed(payload))
    return replay


# ----------------------------------------------------------- the published side, by oracle


def billing_record(row: dict[str, Any], hour: int, sequence: int = 0,
                   **changes: int) -> dict[str, Any]:
    rid = f"{row['tenant_id']}/{row['volume_id']}/{hour}/{sequence}"
    record = {"record_id": rid, "tenant_id": row["tenant_id"], "volume_id": row["volume_id"],
              "hour_start_ns": hour, "hour_length_ns": HOUR, "sequence": sequence,
              "kind": "hour" if sequence == 0 else "adjustment",
              **{name: row[name] for name in NAMES}}
    record.update(changes)
    return record


def encode_billing(record: dict[str, Any]) -> tuple[bytes, bytes]:
    return record["record_id"].encode(), SCHEMAS.encode("BillingRecord", record)


def oracle_ledger(events: list[dict[str, Any]]) -> list[tuple[bytes, bytes | None]]:
    """One record 0 per (volume, hour), as a correct worker publishes when nothing is late."""
    return [encode_billing(billing_record(row, hour))
            for (_, hour), row in sorted(billing_oracle(events).items())]


# Keeps the events list too, so that its id cannot be reused by another list.
_CACHE: dict[tuple[int, int], tuple[list[Any], list[tuple[bytes, bytes | None]]]] = {}


def oracle_windows(events: list[dict[str, Any]], length: int
                   ) -> list[tuple[bytes, bytes | None]]:
    """Revision 0 of every window, as the oracle computes it (cached per events list)."""
    cached = _CACHE.get((id(events), length))
    if cached is None or cached[0] is not events:
        cached = _CACHE[(id(events), length)] = (events, _oracle_windows(events, length))
    return list(cached[1])


def _oracle_windows(events: list[dict[str, Any]], length: int
                    ) -> list[tuple[bytes, bytes | None]]:
    out = []
    for (volume, start), row in sorted(windows_oracle(events, length).items()):
        out.append((b"%s/%d" % (volume.encode(), start),
                    SCHEMAS.encode("WindowStats", {**row, "revision": 0})))
    return out


def audit(
    events: list[dict[str, Any]], payloads: list[bytes] | None = None,
    billing: list[tuple[bytes, bytes | None]] | None = None,
    windows: dict[int, list[tuple[bytes, bytes | None]]] | None = None,
    scope: Scope = SCOPE, **kw: Any,
) -> Comparison:
    replay = replay_of(raw_records(events) if payloads is None else payloads, scope)
    ledger = BillingLedger(scope, SCHEMAS)
    for key, value in oracle_ledger(events) if billing is None else billing:
        ledger.add(key, value, "here")
    books = []
    for length in LENGTHS:
        book = WindowLedger(length, scope, SCHEMAS)
        for key, value in (windows or {}).get(length, oracle_windows(events, length)):
            book.add(key, value)
        books.append(book)
    return compare(replay, ledger, books, **kw)


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return make_events()


# ----------------------------------------------------------- the replay itself


def test_replay_recomputes_billing_and_windows_as_the_oracles(events: list[dict[str, Any]]
                                                               ) -> None:
    replay = replay_of(raw_records(events))
    assert replay.events_counted == len(events) and replay.records == len(raw_records(events))
    want = {key: {n: row[n] for n in NAMES} for key, row in billing_oracle(events).items()}
    got = {key: dict(zip(NAMES, (h.counters[slot] for _, slot in COUNTER_NAMES), strict=True))
           for key, h in replay.hours.items()}
    assert got == want
    sums = {v: {n: sum(got[k][n] for k in got if k[0] == v) for n in NAMES}
            for v in {k[0] for k in got}}
    assert sums == {v: {n: row[n] for n in NAMES} for v, row in counters_oracle(events).items()}
    from streams.core.windows.acc import window_stats

    for length in LENGTHS:
        recomputed = {key: window_stats(key[0], replay.tenant_of(key[0]) or "", w.finished())
                      for key, w in replay.windows[length].items()}
        assert recomputed == windows_oracle(events, length), length


def test_layout2_records_replay_like_layout1_records(events: list[dict[str, Any]]) -> None:
    """The audit counts IoBatch2 records (four volumes each, one partition) through the
    same account_record: the same hours, windows and states as one record per volume."""
    from streams.core.raw import layout2_record

    payloads, seq = [], 0
    volumes = sorted({e["volume_id"] for e in events})
    tenants = [next(e["tenant_id"] for e in events if e["volume_id"] == v) for v in volumes]
    for i in range(0, len(events), 23):
        part = events[i:i + 23]
        payloads.append(SCHEMAS.encode("IoBatch2", layout2_record(
            "p-2", seq, "h-1", volumes, tenants, {
                "volume": [volumes.index(e["volume_id"]) for e in part],
                "op": [OPS.index(e["op"]) for e in part],
                "status": [STATUSES.index(e["status"]) for e in part],
                **{name: [e[name] for e in part]
                   for name in ("offset", "bytes", "submit_ns", "complete_ns")}})))
        seq += 1
    two = Replay(SCOPE, Limits(), SCHEMAS)
    for payload in payloads + payloads[:3]:  # and three delivered again
        two.add(payload, NOW, Placement.of(volumes[0], 1))
    one = replay_of(raw_records(events))
    assert two.events_counted == one.events_counted == len(events)
    assert two.replays_skipped == 3 * 4 and two.events_rejected == 0
    assert {k: (h.counters, h.events) for k, h in two.hours.items()} == {
        k: (h.counters, h.events) for k, h in one.hours.items()}
    for length in LENGTHS:
        assert {k: w.finished() for k, w in two.windows[length].items()} == {
            k: w.finished() for k, w in one.windows[length].items()}
    assert {v: s.counters for v, s in two.states.items()} == {
        v: s.counters for v, s in one.states.items()}


def test_faithful_publication_has_no_difference(events: list[dict[str, Any]]) -> None:
    result = audit(events)
    assert result.differences == []
    assert {row.status for row in result.rows} == {"OK"}
    assert len(result.rows) == len(billing_oracle(events))
    assert sum(row.billed_events for row in result.rows) == len(events)
    assert result.windows_checked["1s"] == len(windows_oracle(events, S))


def test_replayed_raw_record_is_not_counted_twice(events: list[dict[str, Any]]) -> None:
    payloads = raw_records(events)
    redelivered = payloads[:5] + payloads[:5] + payloads[5:] + payloads[3:9]
    replay = replay_of(redelivered)
    assert replay.replays_skipped == 11 and replay.events_counted == len(events)
    assert audit(events, payloads=redelivered).differences == []


def test_long_requests_stop_at_the_horizon_of_their_record() -> None:
    """Requests in flight since 1970, for a week and for two hours, in records spanning
    more than the horizon: the audit's windows are the oracle's under section 4's rule,
    each record a batch of its own (the watermark the worker has at least), and one
    volume holds no more windows than grace + horizon allow per record."""
    rng = random.Random(5)
    events = []
    for k in range(24):
        complete = T0 + k * 7 * 60 * S + rng.randrange(S)
        latency = [complete, 7 * 24 * HOUR, 2 * HOUR, 90 * S, 40_000][k % 5]
        events.append({"volume_id": f"vol-{k % 2}", "tenant_id": "ten-0", "host_id": "h-1",
                       "op": OPS[k % 4], "status": ["ok", "failed", "invalid"][k % 3],
                       "offset": 0, "bytes": 0, "submit_ns": complete - latency,
                       "complete_ns": complete})
    size = 5  # five events of a volume span 56 minutes: records reach past the horizon
    replay = replay_of(raw_records(events, size))
    per_volume: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        per_volume.setdefault(event["volume_id"], []).append(event)
    batches = [(evs[i:i + size], None) for evs in per_volume.values()
               for i in range(0, len(evs), size)]
    seconds, late = horizon_oracle(batches, S, 2 * S, HOUR)
    assert late == 0
    for length in LENGTHS:
        expected = seconds if length == S else rollup_oracle(seconds, length)
        got = {key: window_stats(key[0], "ten-0", w.finished())
               for key, w in replay.windows[length].items()}
        assert got == {k: row for k, row in expected.items() if SCOPE.window_in(k[1])}, length
    n_records = len(batches) // 2
    assert len(replay.windows[S]) <= 2 * n_records * (3602 + size)


def test_ticks_are_skipped(events: list[dict[str, Any]]) -> None:
    payloads = raw_records(events)
    with_ticks = [p for payload in payloads for p in (tick(), payload)] + [tick()]
    replay = replay_of(with_ticks)
    assert replay.ticks == len(payloads) + 1 and replay.records == len(payloads)
    assert audit(events, payloads=with_ticks).differences == []


def test_rejected_events_count_nowhere_judged_by_the_kafka_timestamp() -> None:
    good = make_events(seed=3, n=40)
    bad = [dict(good[0], complete_ns=good[0]["submit_ns"] - 1),  # complete before submit
           dict(good[1], complete_ns=NOW + 301 * S, submit_ns=NOW + 300 * S),  # future
           dict(good[2], op="flush", bytes=7)]
    # The same event is too old for a record stamped eight days later.
    old = dict(good[3], volume_id="vol-old")
    # Records of four events span 36 minutes, within the revision horizon: no request of
    # one reaches a window that record freezes (test_long_requests_... below for those).
    payloads = raw_records(good + bad, size=4)
    replay = replay_of(payloads)
    payload = batch_payload([old], producer="p-2")
    replay.add(payload, old["complete_ns"] + 8 * 24 * HOUR, placed(payload))
    assert all(oracle_reject_reason(e, NOW) for e in bad)
    assert oracle_reject_reason(old, old["complete_ns"] + 8 * 24 * HOUR)
    assert replay.events_rejected == len(bad) + 1
    assert replay.events_counted == len(good)
    assert "vol-old" not in {v for v, _ in replay.hours}
    assert audit(good, payloads=payloads).differences == []


# ----------------------------------------------------------- billing forgeries


def _first_hour(events: list[dict[str, Any]]) -> tuple[dict[str, Any], int]:
    (volume, hour), row = sorted(billing_oracle(events).items())[0]
    return row, hour


def test_forged_extra_adjustment_is_named(events: list[dict[str, Any]]) -> None:
    row, hour = _first_hour(events)
    zeros = dict.fromkeys(NAMES, 0)
    forged = billing_record({**row, **zeros}, hour, 1, read_ios=3, read_bytes=12288)
    result = audit(events, billing=oracle_ledger(events) + [encode_billing(forged)])
    assert len(result.differences) == 1
    diff = result.differences[0]
    assert (diff.volume_id, diff.hour_start_ns, diff.what) == (row["volume_id"], hour, "billing")
    assert forged["record_id"] in diff.detail and "not backed by the raw topic" in diff.detail
    assert f"read_bytes published {row['read_bytes'] + 12288}" in diff.detail
    assert [r.status for r in result.rows].count("DIFF") == 1


def test_altered_record_is_detected_and_named(events: list[dict[str, Any]]) -> None:
    row, hour = _first_hour(events)
    altered = billing_record(row, hour, write_bytes=row["write_bytes"] + 512)
    ledger = [encode_billing(altered) if key == altered["record_id"].encode() else (key, value)
              for key, value in oracle_ledger(events)]
    [diff] = audit(events, billing=ledger).differences
    assert altered["record_id"] in diff.detail
    assert (f"write_bytes published {row['write_bytes'] + 512}, recomputed "
            f"{row['write_bytes']}") in diff.detail


def test_deleted_record_is_reported(events: list[dict[str, Any]]) -> None:
    row, hour = _first_hour(events)
    rid = f"{row['tenant_id']}/{row['volume_id']}/{hour}/0"
    result = audit(events, billing=oracle_ledger(events) + [(rid.encode(), None)])
    details = [d.detail for d in result.differences]
    assert f"record {rid} was deleted (tombstone (here))" in details
    assert all(d.volume_id == row["volume_id"] and d.hour_start_ns == hour
               for d in result.differences)


def test_conflicting_copies_are_named(events: list[dict[str, Any]]) -> None:
    row, hour = _first_hour(events)
    other = encode_billing(billing_record(row, hour, read_bytes=row["read_bytes"] + 1))
    [diff] = audit(events, billing=oracle_ledger(events) + [other]).differences
    rid = f"{row['tenant_id']}/{row['volume_id']}/{hour}/0"
    assert diff.detail.startswith(f"conflicting copies of {rid}: read_bytes ")


def test_duplicate_identical_copy_is_accepted(events: list[dict[str, Any]]) -> None:
    ledger = oracle_ledger(events)
    assert audit(events, billing=ledger + ledger[:3]).differences == []


def test_adjustments_that_add_up_are_accepted_and_gaps_are_not(
    events: list[dict[str, Any]],
) -> None:
    row, hour = _first_hour(events)
    rest = oracle_ledger(events)[1:]
    part0 = billing_record(row, hour, 0, read_ios=row["read_ios"] - 1)
    part1 = billing_record(dict.fromkeys(NAMES, 0) | {k: row[k] for k in ("tenant_id",
                           "volume_id")}, hour, 1, read_ios=1)
    assert audit(events, billing=[encode_billing(part0), encode_billing(part1)] + rest
                 ).differences == []
    part2 = billing_record(part1, hour, 2)
    [diff] = audit(events, billing=[encode_billing(part0), encode_billing(part2)] + rest
                   ).differences
    assert diff.detail == "sequences 0, 2: 1 missing"


def test_unexpected_and_missing_hours(events: list[dict[str, Any]]) -> None:
    row, hour = _first_hour(events)
    stray = billing_record(row, hour + 2 * HOUR)  # no event of that volume then
    ledger = oracle_ledger(events)
    result = audit(events, billing=ledger[1:] + [encode_billing(stray)])
    details = {d.detail.split(";")[0] for d in result.differences}
    assert details == {f"unexpected record {stray['record_id']}: no counted event of this "
                       "volume completes in this hour", "no billing record for this hour"}
    # An hour that may still be open is not missing.
    result = audit(events, billing=ledger[1:], open_after_ns=hour + HOUR - 1)
    assert result.differences == [] and result.rows[0].status == "OPEN"


def test_malformed_records_are_reported(events: list[dict[str, Any]]) -> None:
    row, hour = _first_hour(events)
    good = oracle_ledger(events)
    key, value = good[0]
    result = audit(events, billing=[(b"not-the-id", value)] + good[1:])
    assert [d.detail for d in result.differences] == [
        f"malformed record (here): key 'not-the-id' is not its record_id {key.decode()!r}"]
    result = audit(events, billing=good + [(key, b"\xc3\x01garbage")])
    assert [d.detail.split(":")[0] for d in result.differences] == ["undecodable message (here)"]


# ----------------------------------------------------------- window checks


def _decode(value: bytes) -> dict[str, Any]:
    return SCHEMAS.decode(value)[1]


def test_latest_revision_counts_and_alterations_are_named(events: list[dict[str, Any]]) -> None:
    published = oracle_windows(events, 60 * S)
    key, value = published[0]
    stale = _decode(value) | {"revision": 0, "read_ios": 999}
    current = _decode(value) | {"revision": 1}
    revised = [(key, SCHEMAS.encode("WindowStats", stale)),
               (key, SCHEMAS.encode("WindowStats", current))] + published[1:]
    assert audit(events, windows={60 * S: revised}).differences == []
    altered = current | {"revision": 2, "busy_time_ns": current["busy_time_ns"] + 1}
    result = audit(events, windows={60 * S: revised + [(key, SCHEMAS.encode("WindowStats",
                                                                           altered))]})
    [diff] = result.differences
    assert diff.what == "window 1m" and diff.volume_id == current["volume_id"]
    assert diff.hour_start_ns == current["window_start_ns"] - current["window_start_ns"] % HOUR
    assert (f"busy_time_ns published {current['busy_time_ns'] + 1}, recomputed "
            f"{current['busy_time_ns']}") in diff.detail
    assert diff.detail.endswith(f"(revision 2): busy_time_ns published "
                                f"{current['busy_time_ns'] + 1}, recomputed "
                                f"{current['busy_time_ns']}")


def test_missing_extra_and_deleted_windows_are_named(events: list[dict[str, Any]]) -> None:
    published = oracle_windows(events, S)
    extra_key = b"vol-0/%d" % (T0 + 2 * HOUR + 7 * S)
    extra = _decode(published[0][1]) | {"window_start_ns": T0 + 2 * HOUR + 7 * S,
                                        "volume_id": "vol-0"}
    forged = published[2:] + [(extra_key, SCHEMAS.encode("WindowStats", extra)),
                              (published[1][0], None)]
    details = [d.detail for d in audit(events, windows={S: forged}).differences]
    assert len(details) == 3
    assert any("missing on the stats topic" in d for d in details)
    assert any("deleted (tombstone)" in d for d in details)
    assert any("published (revision 0) but no counted event completes or is in flight" in d
               for d in details)


def test_windows_outside_the_range_are_not_checked(events: list[dict[str, Any]]) -> None:
    scope = Scope(T0 + HOUR, T0 + HOUR + 10 * 60 * S)
    result = audit(events, windows={n: [] for n in LENGTHS}, billing=[], scope=scope)
    windows = [d for d in result.differences if d.what.startswith("window")]
    assert windows and all(d.hour_start_ns == T0 + HOUR for d in windows)
    assert {d.what for d in windows} == {"window 1s", "window 1m", "window 1h"}
    n_1m = sum(1 for d in windows if d.what == "window 1m")
    assert n_1m == len({k for k in windows_oracle(events, 60 * S)
                        if scope.window_in(k[1])})
    billing = {d.hour_start_ns for d in result.differences if d.what == "billing"}
    assert billing == {T0 + HOUR}  # the only hour overlapping the range


def test_volume_filter(events: list[dict[str, Any]]) -> None:
    scope = Scope(SCOPE.from_ns, SCOPE.to_ns, "vol-2")
    result = audit(events, scope=scope)
    assert result.differences == [] and {r.volume_id for r in result.rows} == {"vol-2"}
    result = audit(events, scope=scope, billing=[])
    assert {d.volume_id for d in result.differences} == {"vol-2"}


def test_window_missing_because_of_the_horizon_says_so() -> None:
    events = make_events(seed=5, n=20)
    late = dict(events[3], complete_ns=T0 + 5 * S, submit_ns=T0 + 5 * S - 1000)
    replay = replay_of(raw_records(events, size=2))  # records within the horizon (above)
    payload = batch_payload([late], producer="p-late")
    replay.add(payload, T0 + 2 * HOUR, placed(payload))
    books = [WindowLedger(n, SCOPE, SCHEMAS) for n in LENGTHS]
    for book in books:
        for key, value in oracle_windows(events, book.length_ns):
            book.add(key, value)
    ledger = BillingLedger(SCOPE, SCHEMAS)
    for key, value in oracle_ledger(events + [late]):
        ledger.add(key, value)
    result = compare(replay, ledger, books, horizon_ns=HOUR)
    assert {d.what for d in result.differences} == {"window 1s", "window 1m", "window 1h"}
    assert all("more than the revision horizon of 3600 s" in d.detail
               for d in result.differences)


def test_report_formats(events: list[dict[str, Any]]) -> None:
    replay = replay_of(raw_records(events))
    ledger = BillingLedger(SCOPE, SCHEMAS)
    row, hour = _first_hour(events)
    for key, value in oracle_ledger(events)[1:]:
        ledger.add(key, value)
    books = [WindowLedger(n, SCOPE, SCHEMAS) for n in LENGTHS]
    for book in books:
        for key, value in oracle_windows(events, book.length_ns):
            book.add(key, value)
    report = AuditReport.build(replay, ledger, books, compare(replay, ledger, books),
                               replay_seconds=2.0)
    assert not report.ok and report.volumes == 4
    obj = orjson.loads(orjson.dumps(report.to_json()))
    assert obj["ok"] is False and obj["events_replayed"] == len(events)
    assert obj["rate_events_per_s"] == len(events) / 2
    [diff] = obj["differences"]
    assert diff == {"volume_id": row["volume_id"], "hour_start_ns": hour, "what": "billing",
                    "detail": "no billing record for this hour; recomputed "
                              f"{replay.hours[(row['volume_id'], hour)].events} events"}
    text = report.text().splitlines()
    assert text[0].split() == ["VOLUME", "HOUR", "(UTC)", "RECORDS", "BILLED", "EVENTS", "STATUS"]
    assert text[1].split()[-1] == "DIFF" and text[1].split()[2] == "0"
    assert "DIFFERENCES" in text and "1 difference(s)" in text[-1]


def test_the_replay_applies_the_registry_as_the_worker_does() -> None:
    """With the registry read once: a registered volume's events count, an unregistered
    volume's and another tenant's claim are rejected whole and make no volume."""
    from streams.core.registry import Registration, VolumeRegistry

    registry = VolumeRegistry([Registration("vol-a", "t-1", 0)])
    replay = Replay(SCOPE, Limits(), SCHEMAS, registry.tenant_of)
    event = {"op": "read", "status": "ok", "offset": 0, "bytes": 512,
             "submit_ns": T0, "complete_ns": T0 + 100}
    for volume, tenant, seq in (("vol-a", "t-1", 0), ("vol-b", "t-1", 0), ("vol-a", "t-2", 1)):
        payload = batch_payload([{**event, "volume_id": volume, "tenant_id": tenant}], seq=seq)
        replay.add(payload, NOW, placed(payload))
    assert (replay.events_counted, replay.events_rejected) == (1, 2)
    assert set(replay.states) == {"vol-a"}  # no volume for the strangers
    assert replay.states["vol-a"].producer_seqs == {"p-1": 0}  # the claim moved no mark
