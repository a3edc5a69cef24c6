"""Layout 2 records (several volumes of one partition each) through account_record: against
a per-volume model of the rules feeding the brute-force oracle, and against the same events
sent as one layout 1 record per volume."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.counters import record_digest
from streams.core.events import OPS, STATUSES
from streams.core.ingest import (
    MAX_LISTED_EVENTS,
    RecordOutcome,
    account_record,
    dead_letter_key,
    dead_letter_record,
    legacy_event_batch,
)
from tests.oracles.counters import counters_oracle, latency_histogram_oracle, oracle_reject_reason
from tests.unit.core.ingest_records import FIVE_MIN, NOW, SCHEMAS, WEEK, Table, ev
from tests.unit.core.layout2_records import (
    AWAY_VOLUMES,
    BAD_VOLUMES,
    HOME,
    HOME_VOLUMES,
    home_placement,
    kafka_partition,
    layout2,
    record_order,
    twin_payloads,
)

Group = tuple[str, str, list[dict[str, Any]]]  # volume_id, claimed tenant_id, events
OWNERS = {v: f"t-{i % 2}" for i, v in enumerate(HOME_VOLUMES + AWAY_VOLUMES + BAD_VOLUMES)}


@st.composite
def any_event(draw: st.DrawFn) -> dict[str, Any]:
    """An event (of no volume yet), about a third breaking one rule or more."""
    op = draw(st.sampled_from(OPS * 6 + (4, 255)))
    status = draw(st.sampled_from(STATUSES * 8 + (3,)))
    flush = op == "flush" and draw(st.sampled_from((True, True, True, False)))
    offset, nbytes = (0, 0) if flush else (draw(st.integers(-2, 2**40)),
                                           draw(st.integers(-2, 2**40)))
    complete_ns = draw(st.sampled_from((NOW - WEEK, NOW - WEEK - 1, NOW + FIVE_MIN,
                                        NOW + FIVE_MIN + 1) + (None,) * 12))
    if complete_ns is None:
        complete_ns = draw(st.integers(NOW - WEEK, NOW + FIVE_MIN))
    submit_ns = complete_ns - draw(st.sampled_from((-1,) + (0,) * 4) | st.integers(0, 10**9))
    return ev(op, status, offset, nbytes, submit_ns, complete_ns)


@st.composite
def groups_of(draw: st.DrawFn) -> list[Group]:
    """1..5 distinct volumes (mostly of HOME, some placed elsewhere or of invalid id), each
    claiming its owner mostly, another tenant or an invalid one sometimes, with 1..5 events."""
    pool = HOME_VOLUMES * 4 + AWAY_VOLUMES + BAD_VOLUMES
    volumes = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=5, unique=True))
    groups = []
    for volume_id in volumes:
        tenant_id = draw(st.sampled_from((OWNERS[volume_id],) * 8 + ("t-9", "t#x")))
        events = draw(st.lists(any_event(), min_size=1, max_size=5))
        groups.append((volume_id, tenant_id, [{**e, "volume_id": volume_id,
                                               "tenant_id": tenant_id} for e in events]))
    return groups


COUNTED, REPLAY, REJECTED = "counted", "replay", "rejected"


@dataclass
class Model:
    """SEMANTICS.md's per-volume rules, one obvious ``if`` each, over plain values."""

    owner: dict[str, str] = field(default_factory=dict)
    marks: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    counted_events: list[dict[str, Any]] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)
    seqs: dict[str, dict[str, int]] = field(default_factory=dict)

    def fate(self, volume_id: str, tenant_id: str, producer: str, seq: int,
             digest: str) -> str:
        if volume_id in BAD_VOLUMES or tenant_id == "t#x":
            return REJECTED
        if kafka_partition(volume_id) != HOME:
            return REJECTED
        if self.owner.get(volume_id, tenant_id) != tenant_id:
            return REJECTED
        mark = self.marks.get((volume_id, producer))
        if mark is not None and mark[0] == seq and mark[1] != digest:
            return REJECTED  # a conflict
        if mark is not None and seq <= mark[0]:
            return REPLAY
        return COUNTED

    def apply(self, groups: list[Group], producer: str, seq: int, payload: bytes,
              ) -> list[str] | None:
        """Each group's fate, or None when the record is rejected whole (misplaced key)."""
        if kafka_partition(groups[0][0]) != HOME:
            return None
        digest = record_digest(payload)
        fates = [self.fate(v, t, producer, seq, digest) for v, t, _ in groups]
        for (volume_id, tenant_id, events), fate in zip(groups, fates, strict=True):
            if fate != COUNTED:
                continue
            self.owner.setdefault(volume_id, tenant_id)
            self.marks[(volume_id, producer)] = (seq, digest)
            self.seqs.setdefault(volume_id, {})[producer] = seq
            good = [e for e in events if oracle_reject_reason(e, NOW) is None]
            self.counted_events += good
            self.rejected[volume_id] = self.rejected.get(volume_id, 0) + len(events) - len(good)
        return fates


def _check_outcome(outcome: RecordOutcome, groups: list[Group], fates: list[str] | None,
                   payload: bytes) -> None:
    """The outcome says what the model says, with one rejection listing the first ones."""
    order = record_order(groups)
    if fates is None or all(f == REJECTED for f in fates):
        assert not outcome.volumes and outcome.counted == 0
        [rejection] = outcome.rejections
        assert rejection.whole and rejection.events == len(order)
        return
    accepted = [(g, f) for g, f in zip(groups, fates, strict=True) if f != REJECTED]
    assert [(v.volume_id, v.replay) for v in outcome.volumes] == [
        (g[0], f == REPLAY) for g, f in accepted]
    for v, (group, fate) in zip(outcome.volumes, accepted, strict=True):
        good = [e for e in group[2] if oracle_reject_reason(e, NOW) is None]
        assert v.counted == (len(good) if fate == COUNTED else 0)
        assert (v.state is None) == (fate == REPLAY) and v.producer[1] >= 0
        batch = legacy_event_batch(v)
        assert list(batch.nbytes) == [e["bytes"] for e in good]
        assert all(type(x) is int for x in batch.complete_ns)  # never numpy scalars
    rejected = [i for i, (g, e) in enumerate(order)
                if fates[g] == REJECTED or (fates[g] == COUNTED
                                            and oracle_reject_reason(e, NOW) is not None)]
    if not rejected:
        assert outcome.rejection is None
        return
    [rejection] = outcome.rejections
    assert rejection.events == len(rejected) and not rejection.whole
    assert rejection.event_indexes == rejected[:MAX_LISTED_EVENTS]
    for i, reason in zip(rejection.event_indexes, rejection.event_reasons, strict=True):
        volume_id = groups[order[i][0]][0]
        assert reason.startswith(f"volume {volume_id!r}: ") == (fates[order[i][0]] == REJECTED)
    first_volume = groups[order[rejected[0]][0]][0]
    assert rejection.volume_id == first_volume and rejection.payload == payload
    record = dead_letter_record(rejection, "raw", HOME, 5, NOW)
    assert SCHEMAS.decode(SCHEMAS.encode("DeadLetter", record))[1] == record
    assert record["volume_id"] == first_volume and record["seq"] is not None
    assert dead_letter_key(rejection) == (None if first_volume in BAD_VOLUMES
                                          else first_volume.encode())


@st.composite
def steps(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """New records of two producers, exact replays of earlier ones, conflicts (the last
    seq of a producer again, every volume's events changed)."""
    return draw(st.lists(st.one_of(
        st.tuples(st.just("new"), st.tuples(groups_of(), st.sampled_from(("p-0", "p-1")))),
        st.tuples(st.just("replay"), st.integers(0, 100)),
        st.tuples(st.just("conflict"), st.integers(0, 100))), min_size=1, max_size=12))


def _records(plan: list[tuple[str, Any]]) -> list[tuple[list[Group], str, int]]:
    """The plan's records: (groups, producer, seq)."""
    sent: list[tuple[list[Group], str, int]] = []
    next_seq = {"p-0": 0, "p-1": 0}
    for kind, arg in plan:
        if kind == "new":
            groups, producer = arg
            sent.append((groups, producer, next_seq[producer]))
            next_seq[producer] += 1
        elif sent and kind == "replay":
            sent.append(sent[arg % len(sent)])
        elif sent:
            groups, producer, seq = sent[arg % len(sent)]
            extra = ev(nbytes=777)
            sent.append(([(v, t, [*events, {**extra, "volume_id": v, "tenant_id": t}])
                          for v, t, events in groups], producer, seq))
    return sent


@settings(max_examples=80, deadline=None)
@given(steps())
def test_layout2_records_follow_the_model_and_count_like_the_oracle(
    plan: list[tuple[str, Any]],
) -> None:
    table, model = Table(), Model()
    for groups, producer, seq in _records(plan):
        payload = layout2(groups, producer, seq)
        before = dict(table.snapshots)
        fates = model.apply(groups, producer, seq, payload)
        outcome = table.apply(payload, placement=home_placement(groups[0][0]))
        _check_outcome(outcome, groups, fates, payload)
        for (volume_id, _, _), fate in zip(groups, fates or [REJECTED] * len(groups),
                                           strict=True):
            if fate != COUNTED:  # a rejected volume or a replay: byte-identical
                assert table.snapshots.get(volume_id) == before.get(volume_id)
    assert table.counters() == counters_oracle(model.counted_events, now_ns=NOW)
    assert table.histograms() == latency_histogram_oracle(model.counted_events, now_ns=NOW)
    for volume_id in set(table.snapshots) | set(model.owner):
        state = table.load(volume_id)
        assert state is not None and state.tenant_id == model.owner[volume_id]
        assert state.rejected == model.rejected[volume_id]
        assert state.producer_seqs == model.seqs[volume_id]


def _semantic(table: Table) -> dict[str, Any]:
    """What a volume's state says, without the record digests (they differ by layout)."""
    out = {}
    for volume_id in table.snapshots:
        state = table.load(volume_id)
        assert state is not None
        out[volume_id] = (state.counters_json(volume_id, NOW), state.producer_seqs)
    return out


@settings(max_examples=60, deadline=None)
@given(steps())
def test_layout2_equals_one_layout1_record_per_volume(plan: list[tuple[str, Any]]) -> None:
    two, one = Table(), Table()
    for groups, producer, seq in _records(plan):
        if kafka_partition(groups[0][0]) != HOME:
            continue  # misplaced whole in layout 2; its twins would not all be
        outcome = two.apply(layout2(groups, producer, seq),
                            placement=home_placement(groups[0][0]))
        twins = [one.apply(p, placement=at) for p, at in twin_payloads(groups, producer, seq)]
        accepted = [t.volumes[0] for t in twins if t.volumes]
        assert [(v.volume_id, v.counted, v.replay) for v in outcome.volumes] == [
            (v.volume_id, v.counted, v.replay) for v in accepted]
        for mine, twin in zip(outcome.volumes, accepted, strict=True):
            a, b = legacy_event_batch(mine), legacy_event_batch(twin)
            assert (a.ops, a.statuses, a.nbytes, a.submit_ns, a.complete_ns) == (
                b.ops, b.statuses, b.nbytes, b.submit_ns, b.complete_ns)
        assert outcome.counted == sum(t.counted for t in twins)
        assert (outcome.rejection.events if outcome.rejection else 0) == sum(
            t.rejection.events for t in twins if t.rejection)
    assert _semantic(two) == _semantic(one)


# --- one dead letter per record, whatever it holds ---------------------------------------------

@settings(max_examples=40, deadline=None)
@given(groups_of(), st.integers(0, 2000), st.integers(0, 2**63 - 1))
def test_one_dead_letter_per_record_whatever_it_holds(
    groups: list[Group], bad_events: int, seq: int,
) -> None:
    """Bad volumes, misplaced ones, thousands of bad events: never more than one."""
    groups = [*groups, (HOME_VOLUMES[0] + "x", "t-1", [ev(nbytes=-1)] * bad_events)]
    table = Table()
    outcome = account_record(layout2(groups, "p-1", seq), home_placement(groups[0][0]),
                             table.load, SCHEMAS, NOW)
    assert len(outcome.rejections) <= 1
    for rejection in outcome.rejections:
        assert len(rejection.event_indexes) <= MAX_LISTED_EVENTS
        assert len(rejection.event_reasons) == len(rejection.event_indexes)


def test_three_volumes_one_misplaced_two_counted_one_dead_letter() -> None:
    a, b = HOME_VOLUMES[:2]
    away = AWAY_VOLUMES[0]
    groups: list[Group] = [(a, "t-1", [ev()] * 2), (away, "t-1", [ev()] * 3),
                           (b, "t-2", [ev("write"), ev(nbytes=-4)])]
    table = Table()
    outcome = table.apply(layout2(groups), placement=home_placement(a))
    assert [(v.volume_id, v.counted) for v in outcome.volumes] == [(a, 2), (b, 1)]
    [rejection] = outcome.rejections
    # record order, round-robin: a away b | a away b(bad) | away
    assert rejection.events == 4 and rejection.event_indexes == [1, 4, 5, 6]
    assert rejection.event_reasons[0].startswith(f"volume {away!r}: partition 0 is not")
    assert rejection.event_reasons[2] == "bytes -4 is negative"
    assert "1 volume(s) rejected" in rejection.reason and away in rejection.reason
    assert set(table.snapshots) == {a, b}  # nothing of the misplaced volume
    assert table.counters()[b]["write_ios"] == 1 and table.load(b).rejected == 1


@pytest.mark.parametrize(("key", "words"), [
    (AWAY_VOLUMES[0], "partition 0 is not the default partition"),  # its first volume's
    (HOME_VOLUMES[1], "is not the first volume's id"),  # another volume's id
    (None, "key none is not the first volume's id"),
])
def test_a_layout2_key_that_is_not_the_first_volume_or_places_elsewhere_is_whole(
    key: str | None, words: str,
) -> None:
    first = key if key == AWAY_VOLUMES[0] else HOME_VOLUMES[0]
    groups: list[Group] = [(first, "t-1", [ev()]), (HOME_VOLUMES[2], "t-1", [ev()])]
    placement = home_placement(first)
    if key != first:
        placement = type(placement)(None if key is None else key.encode(), HOME,
                                    placement.partitions)
    table = Table()
    outcome = table.apply(layout2(groups), placement=placement)
    [rejection] = outcome.rejections
    assert rejection.whole and words in rejection.reason and rejection.events == 2
    assert not outcome.volumes and table.snapshots == {}


def test_a_volume_without_events_is_not_claimed() -> None:
    """A volume in the table that no event points at is left alone (no state, no mark)."""
    from streams.core.raw import layout2_record

    a, b = HOME_VOLUMES[:2]
    record = layout2_record("p-1", 0, None, [a, b], ["t-1", "t-1"], {
        "volume": [0], "op": [0], "status": [0], "offset": [0], "bytes": [512],
        "submit_ns": [NOW - 10], "complete_ns": [NOW]})
    table = Table()
    outcome = table.apply(SCHEMAS.encode("IoBatch2", record), placement=home_placement(a))
    assert outcome.counted == 1 and not outcome.rejections and set(table.snapshots) == {a}


@pytest.mark.parametrize(("change", "words"), [
    ({"volume": b"\x05\x00\x00\x00"}, "volume index 5 is beyond the volume table of 1"),
    ({"bytes": b"\x00" * 7}, "column bytes holds 7 bytes, not a multiple of 8"),
    ({"submit_ns": b""}, "columns of unequal length"),
])
def test_a_bad_layout_is_rejected_whole(change: dict[str, bytes], words: str) -> None:
    from streams.core.raw import layout2_record

    a = HOME_VOLUMES[0]
    record = layout2_record("p-1", 0, None, [a], ["t-1"], {
        "volume": [0], "op": [0], "status": [0], "offset": [0], "bytes": [512],
        "submit_ns": [NOW - 10], "complete_ns": [NOW]})
    table = Table()
    outcome = table.apply(SCHEMAS.encode("IoBatch2", {**record, **change}),
                          placement=home_placement(a))
    [rejection] = outcome.rejections
    assert rejection.whole and words in rejection.reason and table.snapshots == {}
    assert rejection.volume_id == a


def test_layout1_ids_are_judged_before_its_key_as_before_layout2() -> None:
    """A layout 1 record of an invalid id under another volume's key keeps its reason."""
    from tests.unit.core.ingest_records import batch, encode

    payload = encode(batch([ev()], volume_id="vol/../etc"))
    outcome = Table().apply(payload, placement=home_placement(HOME_VOLUMES[0]))
    [rejection] = outcome.rejections
    assert rejection.whole and "volume_id 'vol/../etc' has characters outside" in rejection.reason
