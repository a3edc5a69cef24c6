"""A step judged per volume at once (core/step.py) against the same records judged one by
one (account_record, the windows' on_records): identical states, dead letters, windows,
billing, for steps that mix volumes, producers, replays (within the step and of the
state), bad events, whole-rejected records and records whose volumes are rejected."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.core.counters import BYTES, SLOTS_PER_OP, VolumeState
from streams.core.dead_letters import Rejection
from streams.core.events import INT64_MAX
from streams.core.ingest import Limits, Placement, account_record
from streams.core.marks import judge_marks
from streams.core.step import _added, account_step
from streams.core.windows.book import Emission, ProducedColumns, WindowSettings
from streams.state.stages import open_partition_windows
from tests.unit.core.ingest_records import NOW, SCHEMAS, ev
from tests.unit.core.layout2_records import (
    AWAY_VOLUMES,
    HOME_VOLUMES,
    home_placement,
    layout2,
    twin_payloads,
)

LIMITS = Limits()
MAX_EVENTS = 7  # the windows take a unit every this many events, as the agent does
TENANT = {v: f"t-{i % 2}" for i, v in enumerate(HOME_VOLUMES + AWAY_VOLUMES)}


@dataclass
class Run:
    """One way of judging the steps: counters table, windows stage, what came out."""

    snapshots: dict[str, bytes] = field(default_factory=dict)
    table: dict[bytes, bytes] = field(default_factory=dict)
    records: list[tuple[int, int, tuple[Any, ...] | None]] = field(default_factory=list)
    emissions: list[Emission] = field(default_factory=list)
    billing: list[Any] = field(default_factory=list)
    fast_steps: int = 0

    def __post_init__(self) -> None:
        self.windows = open_partition_windows(0, self.table, WindowSettings())

    def load(self, volume_id: str) -> VolumeState | None:
        data = self.snapshots.get(volume_id)
        return None if data is None else VolumeState.from_snapshot(data)


def _rejection(r: Rejection | None) -> tuple[Any, ...] | None:
    if r is None:
        return None
    return (r.reason, r.events, r.event_indexes, r.event_reasons, r.event_json, r.volume_id,
            r.tenant_id, r.whole, r.payload)


def _loader(run: Run, states: dict[str, VolumeState | None]) -> Any:
    def load(volume_id: str) -> VolumeState | None:
        if volume_id not in states:
            states[volume_id] = run.load(volume_id)
        return states[volume_id]
    return load


def one_by_one(run: Run, step: list[tuple[bytes, Placement]], wall_ns: int) -> None:
    """The agent's record-by-record path."""
    states: dict[str, VolumeState | None] = {}
    load = _loader(run, states)
    changed: list[str] = []
    parts: list[ProducedColumns] = []
    events = 0
    for offset, (payload, placement) in enumerate(step):
        out = account_record(payload, placement, load, SCHEMAS, NOW, LIMITS)
        for volume in out.volumes:
            if volume.state is not None:
                states[volume.volume_id] = volume.state
                changed.append(volume.volume_id)
            parts.append((volume.events, volume.producer))
            events += len(volume.events)
        run.records.append((out.counted, out.replays, _rejection(out.rejection)))
        if events >= MAX_EVENTS or offset == len(step) - 1:
            if parts:
                run.emissions += run.windows.on_records(parts, wall_ns, offset)
            parts, events = [], 0
    _store(run, states, changed)


def at_once(run: Run, step: list[tuple[bytes, Placement]], wall_ns: int) -> None:
    """The agent's path through account_step (record by record when it declines)."""
    states: dict[str, VolumeState | None] = {}
    outcome = account_step(step, _loader(run, states), SCHEMAS, NOW, LIMITS)
    if outcome is None:
        one_by_one(run, step, wall_ns)
        return
    run.fast_steps += 1
    lo, events = 0, 0
    for offset, record in enumerate(outcome.records):
        run.records.append((record.counted, record.replays, _rejection(record.rejection)))
        events += record.valid
        if events >= MAX_EVENTS or offset == len(step) - 1:
            parts = outcome.parts(lo, offset + 1)
            if parts is not None:
                run.emissions += run.windows.on_parts(parts, wall_ns, offset)
            lo, events = offset + 1, 0
    _store(run, {**states, **outcome.states}, list(outcome.states))


def _store(run: Run, states: dict[str, VolumeState | None], changed: list[str]) -> None:
    for volume_id in changed:
        state = states[volume_id]
        assert state is not None
        run.snapshots[volume_id] = state.snapshot()
    run.billing += run.windows.take_billing()


EVENT = st.builds(
    lambda status, t, n, future: ev(status=status, nbytes=n, submit_ns=t - 500,
                                    complete_ns=t + (3600 * 10**9 if future else 0)),
    st.sampled_from(["ok", "ok", "ok", "failed", 7]), st.integers(NOW - 5 * 10**9, NOW),
    st.sampled_from([0, 512, 4096]), st.sampled_from([False] * 6 + [True]))


@st.composite
def records(draw: st.DrawFn, odd: bool) -> tuple[bytes, Placement]:
    """A layout-2 record of some HOME volumes, or a layout 1 one of one (an older SDK's);
    with ``odd``, sometimes a misplaced volume, another tenant, an undecodable, empty or
    broken record (volume index past the table, ragged columns, a volume listed twice, a
    key that is not its first volume, events and no volume table)."""
    kind = draw(st.sampled_from(["ok"] * 6 + ["legacy"] + (
        ["away", "tenant", "junk", "empty", "broken"] if odd else [])))
    if kind == "junk":
        return b"\x00junk", home_placement(HOME_VOLUMES[0])
    volumes = draw(st.lists(st.sampled_from(HOME_VOLUMES), min_size=1, max_size=4, unique=True))
    groups = []
    for v in volumes:
        tenant = TENANT[v] if kind != "tenant" or v != volumes[0] else "t-other"
        events = draw(st.lists(EVENT, min_size=0 if kind == "empty" else 1, max_size=4))
        groups.append((v, tenant, [dict(e, volume_id=v, tenant_id=tenant) for e in events]))
    if kind == "away":
        groups.append((AWAY_VOLUMES[0], "t-0", [ev(volume_id=AWAY_VOLUMES[0], tenant_id="t-0")]))
    if kind == "empty":
        groups = [(v, t, []) for v, t, _ in groups]
    producer = draw(st.sampled_from(["p-1", "p-2"]))
    seq = draw(st.integers(0, 6))
    if kind == "legacy":
        return twin_payloads(groups[:1], producer, seq)[0]
    by_volume = draw(st.booleans())  # as the SDK sends them (no sort), or mixed
    payload = layout2(groups, producer, seq, by_volume)
    if kind == "broken":
        return _broken(payload, draw(st.sampled_from(["beyond", "ragged", "twice", "key",
                                                      "no table"])))
    return payload, home_placement(volumes[0])


def _broken(payload: bytes, fault: str) -> tuple[bytes, Placement]:
    """The record of ``payload`` with one fault its layout's rules reject it for."""
    _, record = SCHEMAS.decode(payload)
    first = record["volumes"][0]["volume_id"]
    if fault == "key":
        return payload, home_placement(HOME_VOLUMES[-1] if first != HOME_VOLUMES[-1]
                                       else HOME_VOLUMES[0])
    if fault == "beyond":
        volume = bytearray(record["volume"])
        volume[-4:] = len(record["volumes"]).to_bytes(4, "little")
        record["volume"] = bytes(volume)
    elif fault == "no table":
        record["volumes"] = []
    elif fault == "ragged":
        record["offset"] = record["offset"][:-8]
    else:
        record["volumes"] = record["volumes"] + record["volumes"][:1]
    return SCHEMAS.encode("IoBatch2", record), home_placement(first)


def _bad_time(e: dict[str, Any]) -> dict[str, Any]:
    return dict(e, complete_ns=NOW + 3600 * 10**9)  # past the future tolerance


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(records(odd=False), min_size=1, max_size=8), min_size=1, max_size=4))
def test_a_step_judged_at_once_equals_record_by_record(steps: list[list[Any]]) -> None:
    _same(steps)  # conflicting repeats (same seq, other events) go record by record


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(records(odd=True), min_size=1, max_size=8), min_size=1, max_size=4))
def test_steps_with_rejected_volumes_and_records_equal_record_by_record(
        steps: list[list[Any]]) -> None:
    _same(steps)


def _same(steps: list[list[tuple[bytes, Placement]]]) -> Run:
    a, b = Run(), Run()
    for n, step in enumerate(steps):
        wall_ns = NOW + n * 10**9
        one_by_one(a, step, wall_ns)
        at_once(b, step, wall_ns)
    assert b.records == a.records
    assert b.snapshots == a.snapshots
    assert b.emissions == a.emissions
    assert b.billing == a.billing
    assert b.table == a.table  # windows, marks, billing hours, the clock
    return b


def test_replays_within_the_step_and_of_the_state_are_judged_at_once() -> None:
    """The fast path itself (not its record-by-record fallback) takes replays, repeats
    within one step, bad events and a second producer."""
    v, w = HOME_VOLUMES[0], HOME_VOLUMES[1]

    def rec(seq: int, producer: str = "p-1", bad: bool = False) -> tuple[bytes, Placement]:
        e = ev(volume_id=v, tenant_id=TENANT[v])
        return layout2([(v, TENANT[v], [_bad_time(e) if bad else e, e]),
                        (w, TENANT[w], [ev(volume_id=w, tenant_id=TENANT[w])])],
                       producer, seq), home_placement(v)

    first = [rec(1), rec(2, bad=True), rec(2, bad=True), rec(1), rec(1, "p-2")]
    second = [rec(2, bad=True), rec(3), rec(0, "p-2"), rec(3)]
    run = _same([first, second])
    assert run.fast_steps == 2
    assert [r[:2] for r in run.records] == [(3, 0), (2, 0), (0, 2), (0, 2), (3, 0),
                                            (0, 2), (3, 0), (0, 2), (0, 2)]
    assert run.records[1][2] is not None and run.records[1][2][1] == 1  # the bad event
    state = run.load(v)
    assert state is not None and state.producer_seqs == {"p-1": 3, "p-2": 1}


def test_a_conflicting_record_makes_the_step_go_record_by_record() -> None:
    v = HOME_VOLUMES[0]
    a = layout2([(v, TENANT[v], [ev(volume_id=v, tenant_id=TENANT[v])])], "p-1", 4)
    b = layout2([(v, TENANT[v], [ev(volume_id=v, tenant_id=TENANT[v], nbytes=512)])], "p-1", 4)
    step = [(a, home_placement(v)), (b, home_placement(v))]
    assert account_step(step, lambda _: None, SCHEMAS, NOW, LIMITS) is None
    run = _same([step])
    assert run.records[1][2] is not None and "other content" in run.records[1][2][0]


def test_judge_marks_is_the_sequential_replay_check() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        n, groups = int(rng.integers(1, 30)), int(rng.integers(1, 4))
        group = rng.integers(0, groups, n)
        seq = rng.integers(-3, 6, n).astype(np.int64)
        initial = rng.integers(-3, 6, groups).astype(np.int64)
        has = rng.random(groups) < 0.7
        new, met = judge_marks(group, seq, initial, has)
        marks: dict[int, int | None] = {g: int(initial[g]) if has[g] else None
                                        for g in range(groups)}
        for k in range(n):
            mark = marks[int(group[k])]
            assert new[k] == (mark is None or seq[k] > mark)
            assert met[k] == (mark is not None and seq[k] == mark)
            if new[k]:
                marks[int(group[k])] = int(seq[k])


def test_a_misplaced_volume_makes_the_step_go_record_by_record() -> None:
    """The step's one placement pass (murmur2 of all its volumes at once) finds the volume
    of another partition among the home ones, wherever it comes in the step."""
    home = [layout2([(v, TENANT[v], [ev(volume_id=v, tenant_id=TENANT[v])])], "p-1", 1)
            for v in HOME_VOLUMES]
    away = layout2([(HOME_VOLUMES[0], TENANT[HOME_VOLUMES[0]],
                     [ev(volume_id=HOME_VOLUMES[0], tenant_id=TENANT[HOME_VOLUMES[0]])]),
                    (AWAY_VOLUMES[0], "t-0", [ev(volume_id=AWAY_VOLUMES[0], tenant_id="t-0")])],
                   "p-2", 1)
    placement = home_placement(HOME_VOLUMES[0])
    assert account_step([(r, placement) for r in home], lambda _: None, SCHEMAS, NOW,
                        LIMITS) is not None
    for at in range(len(home) + 1):
        step = [(r, placement) for r in [*home[:at], away, *home[at:]]]
        assert account_step(step, lambda _: None, SCHEMAS, NOW, LIMITS) is None
        run = _same([step])
        rejection = run.records[at][2]
        assert rejection is not None and "is not the default partition" in rejection[0]


def test_a_record_with_a_volume_index_past_its_table_is_rejected_alone() -> None:
    """A record whose events point past its volume table is rejected whole, with
    raw_batch's reason, and the step's other records are still judged at once (one such
    record from a client does not send every step record by record)."""
    home = [(layout2([(v, TENANT[v], [ev(volume_id=v, tenant_id=TENANT[v])])], "p-1", 1),
             home_placement(v)) for v in HOME_VOLUMES]
    bad = _broken(layout2([(v, TENANT[v], [ev(volume_id=v, tenant_id=TENANT[v])])
                           for v in HOME_VOLUMES[:2]], "p-2", 1), "beyond")
    for at in range(len(home) + 1):
        step = [*home[:at], bad, *home[at:]]
        run = _same([step])
        assert run.fast_steps == 1
        rejection = run.records[at][2]
        assert rejection is not None and "beyond the volume table" in rejection[0]
        assert [r[0] for r in run.records] == [0 if k == at else 1 for k in range(len(step))]


_ADD = st.one_of(st.integers(0, 300), st.integers(2**63 - 300, 2**63 + 300))
_STORED = st.one_of(st.integers(0, 300), st.integers(INT64_MAX - 300, INT64_MAX))


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 6).flatmap(lambda width: st.lists(
    st.tuples(st.one_of(st.none(), st.lists(_STORED, min_size=width, max_size=width)),
              st.lists(_ADD, min_size=width, max_size=width)), max_size=5)),
       st.sets(st.integers(0, 5)), st.booleans())
def test_counters_are_added_at_once_as_python_ints(rows: list[Any], bounded: set[int],
                                                  as_array: bool) -> None:
    """step._added (the non-zero adds made in a loop, or Python ints all along when an add
    is past int64) against Python's own sums of stored values (within int64) and
    adds: the same rows, and None exactly when a bounded slot's sum passes int64."""
    bases, adds = [b for b, _ in rows], [a for _, a in rows]
    exact = [[x + y for x, y in zip(b or [0] * len(a), a, strict=True)] for b, a in rows]
    width = len(adds[0]) if adds else 0
    bounded_here = [slot for slot in bounded if slot < width]
    past = any(row[slot] > INT64_MAX for row in exact for slot in bounded_here)
    fits = all(x <= INT64_MAX for a in adds for x in a)
    given_adds = np.array(adds, dtype=np.int64).reshape(len(adds), width) if (
        as_array and fits) else adds
    got = _added(bases, given_adds, bounded_here)
    assert got == (None if past else exact)
    assert got is None or all(type(x) is int for row in got for x in row)
    assert got is None or all(row is not b for row, b in zip(got, bases, strict=True))


def _near_int64(volume_id: str, counter: bool) -> VolumeState:
    """A state of ``volume_id`` one short of int64 in its read bytes (a counter) or in its
    first read latency bin."""
    state = VolumeState(TENANT[volume_id])
    if counter:
        state.counters[0 * SLOTS_PER_OP + BYTES] = INT64_MAX - 1
    else:
        state.latency_bins[0] = INT64_MAX - 1
    return state


def test_a_counter_that_would_pass_int64_makes_the_step_go_record_by_record() -> None:
    v = HOME_VOLUMES[0]
    rec = layout2([(v, TENANT[v], [ev(volume_id=v, tenant_id=TENANT[v], op="read")] * 2)],
                  "p-1", 1)
    step = [(rec, home_placement(v))]
    assert account_step(step, lambda _: _near_int64(v, True), SCHEMAS, NOW, LIMITS) is None
    # a latency bin past int64 is no reason: it is counted at once, exactly
    out = account_step(step, lambda _: _near_int64(v, False), SCHEMAS, NOW, LIMITS)
    assert out is not None
    assert out.states[v].latency_bins[0] == INT64_MAX + 1
    assert out.states[v].counters[0 * SLOTS_PER_OP + BYTES] == 2 * 4096
