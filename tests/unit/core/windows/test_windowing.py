"""Windows, watermarks, revisions and rollups against the brute-force window oracle.

Events arrive out of order (within and beyond grace), requests span many
windows, volumes go idle; whatever the arrival, the latest revision of every
emitted window equals the oracle computed from the raw events directly, at
1 s, 1 m and 1 h alike.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.core.batch import EventBatch
from streams.core.events import OP_CODE, STATUS_CODE
from streams.core.times import NS_PER_S
from streams.core.windows.acc import WindowAcc, window_stats
from streams.core.windows.book import Emission, WindowBook, WindowSettings
from streams.state.stages import open_partition_windows
from tests.oracles.windows import windows_oracle
from tests.unit.core.windows import scalar_twin

T0 = 1_700_000_000 * NS_PER_S
MINUTE, HOUR = 60 * NS_PER_S, 3600 * NS_PER_S


class Pipeline:
    """One partition's windowing as the worker drives it, on a dict for a table."""

    def __init__(self, window_settings: WindowSettings | None = None) -> None:
        self.table: dict[bytes, bytes] = {}
        self.windows = open_partition_windows(0, self.table, window_settings or WindowSettings())
        self.latest: dict[tuple[int, str, int], Emission] = {}
        self.emissions: list[Emission] = []

    @property
    def books(self) -> list[WindowBook]:
        return self.windows.books

    def feed(self, batch: list[dict[str, Any]], wall_ns: int) -> None:
        """One raw record: events of one volume."""
        first = batch[0]
        self._publish(self.windows.on_events(EventBatch(
            first["volume_id"], first["tenant_id"],
            ops=bytes(OP_CODE[e["op"]] for e in batch),
            statuses=bytes(STATUS_CODE[e["status"]] for e in batch),
            nbytes=[e["bytes"] for e in batch], submit_ns=[e["submit_ns"] for e in batch],
            complete_ns=[e["complete_ns"] for e in batch], indexes=range(len(batch)),
        ), wall_ns=wall_ns))

    def tick(self, wall_ns: int) -> None:
        self._publish(self.windows.on_tick(wall_ns))

    def _publish(self, emissions: Iterable[Emission]) -> None:
        for emission in emissions:
            self.emissions.append(emission)
            key = (emission.acc.window_len_ns, emission.volume_id, emission.acc.window_start_ns)
            previous = self.latest.get(key)
            assert previous is None or emission.revision == previous.revision + 1
            assert previous is not None or emission.revision == 0
            self.latest[key] = emission

    def recover(self) -> None:
        """A new owner of the partition: rebuild everything from the table alone."""
        self.windows = open_partition_windows(0, self.table, self.windows.books[0].settings)

    def finish(self) -> None:
        """Let the wall clock run far ahead: every window closes."""
        self.tick(10**19)

    def published(self, length: int) -> dict[tuple[str, int], dict[str, Any]]:
        return {(v, s): window_stats(e.volume_id, e.tenant_id, e.acc)
                for (n, v, s), e in self.latest.items() if n == length}


def make_event(volume: int, op: str, status: str, complete_ns: int, latency_ns: int,
               nbytes: int = 4096) -> dict[str, Any]:
    return {"volume_id": f"vol-{volume}", "tenant_id": f"tenant-{volume % 2}", "op": op,
            "status": status, "offset": 0, "bytes": 0 if op == "flush" else nbytes,
            "submit_ns": complete_ns - latency_ns, "complete_ns": complete_ns}


latencies = st.one_of(
    st.integers(0, 50_000),                         # fast
    st.integers(50_000, 20_000_000),                # ms-scale
    st.integers(NS_PER_S, 8 * NS_PER_S),            # spans several 1 s windows, beyond grace
    st.sampled_from([0, 9_999, 10_000, 10 * NS_PER_S, 10 * NS_PER_S + 1]),  # bin edges
)
events_strategy = st.lists(
    st.builds(make_event, volume=st.integers(0, 2),
              op=st.sampled_from(["read", "write", "flush", "discard"]),
              status=st.sampled_from(["ok", "ok", "ok", "failed", "invalid"]),
              complete_ns=st.integers(T0, T0 + 150 * NS_PER_S), latency_ns=latencies,
              nbytes=st.integers(0, 1 << 20)),
    min_size=1, max_size=120,
)


def arrive(events: list[dict[str, Any]], jitter_ns: int, seed: int) -> list[list[dict[str, Any]]]:
    """Arrival order: by completion, perturbed by up to ``jitter_ns``, cut into records."""
    rng = random.Random(seed)
    order = sorted(events, key=lambda e: e["complete_ns"] + rng.randrange(jitter_ns + 1))
    records: list[list[dict[str, Any]]] = []
    for event in order:
        if records and records[-1][0]["volume_id"] == event["volume_id"] and rng.random() < 0.6:
            records[-1].append(event)
        else:
            records.append([event])
    return records


def run(records: list[list[dict[str, Any]]], idle_gaps: bool = False,
        crash_every: int = 0) -> Pipeline:
    pipeline = Pipeline()
    for n, record in enumerate(records):
        wall_ns = max(e["complete_ns"] for e in record) + NS_PER_S // 10
        if idle_gaps and n % 7 == 6:
            pipeline.tick(wall_ns + 6 * NS_PER_S)  # a quiet spell: idle advance
        if crash_every and n % crash_every == crash_every - 1:
            pipeline.recover()
        pipeline.feed(record, wall_ns)
    pipeline.finish()
    return pipeline


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=events_strategy, jitter_s=st.sampled_from([0, 1, 3, 30]),
       seed=st.integers(0, 1000), idle_gaps=st.booleans(), crash_every=st.sampled_from([0, 3]))
def test_latest_revisions_equal_the_oracle_at_every_length(
    events: list[dict[str, Any]], jitter_s: int, seed: int, idle_gaps: bool, crash_every: int,
) -> None:
    """crash_every: rebuild the partition's windows from the table alone now and then."""
    pipeline = run(arrive(events, jitter_s * NS_PER_S, seed), idle_gaps, crash_every)
    for length in (NS_PER_S, MINUTE, HOUR):
        assert pipeline.published(length) == windows_oracle(events, length), length


def test_simulated_fleet_equals_the_oracle() -> None:
    from streams.sources.simulator import FleetConfig, FleetSimulator

    sim = FleetSimulator(FleetConfig(seed=3, volumes=30, start_ns=T0, events_per_s=400))
    events = [e.to_json() for e in sim.events(20_000)]
    pipeline = run(arrive(events, 3 * NS_PER_S, seed=1), idle_gaps=True)
    for length in (NS_PER_S, MINUTE, HOUR):
        assert pipeline.published(length) == windows_oracle(events, length), length
    assert any(e.revision > 0 for e in pipeline.emissions)  # late events did revise


def test_replaying_records_changes_no_window_value() -> None:
    """Replays are dropped before windowing (the producer seq check), so this holds by
    construction in the worker; here: re-closing with no new input emits nothing."""
    events = [make_event(0, "read", "ok", T0 + i * 300_000_000, 5_000_000) for i in range(20)]
    pipeline = run(arrive(events, 0, 0))
    before = len(pipeline.emissions)
    pipeline.finish()
    assert len(pipeline.emissions) == before


def test_a_window_closes_at_grace_plus_idle_timeout_after_its_end() -> None:
    r"""
    events:   |x|                       (one event at 0.5 s)
    windows:  [0 s, 1 s)
    wall:           1 s + grace + idle timeout -> the idle partition's watermark passes 1 s
    """
    window_settings = WindowSettings()
    pipeline = Pipeline(window_settings)
    pipeline.feed([make_event(0, "read", "ok", T0 + NS_PER_S // 2, 1_000)], T0 + NS_PER_S // 2)
    deadline = T0 + NS_PER_S + window_settings.grace_ns + window_settings.idle_timeout_ns
    pipeline.tick(deadline - 1)
    assert not pipeline.emissions
    pipeline.tick(deadline)
    assert [(e.acc.window_start_ns, e.revision) for e in pipeline.emissions][:1] == [(T0, 0)]

def test_a_partition_without_input_is_idle_only_once_watched_for_the_idle_timeout() -> None:
    r"""
    wall:   W (first Tick, nothing read yet)    W + 1 s: events of two hours before W
    The first Tick starts the idle clock; it does not declare the partition idle at once,
    which would make every old event late and every record a revision.
    """
    window_settings = WindowSettings()
    wall = T0 + 2 * HOUR
    pipeline = Pipeline(window_settings)
    pipeline.tick(wall)
    assert pipeline.windows.clock.watermark_ns is None
    old = [make_event(0, "read", "ok", T0 + i * 100_000_000, 1_000) for i in range(5)]
    pipeline.feed(old, wall + NS_PER_S)
    assert not pipeline.emissions  # open, not emitted on arrival as late windows would be
    pipeline.tick(wall + NS_PER_S + window_settings.idle_timeout_ns - 1)
    assert not pipeline.emissions
    pipeline.tick(wall + NS_PER_S + window_settings.idle_timeout_ns)
    assert (NS_PER_S, "vol-0", T0) in pipeline.latest
    assert {e.revision for e in pipeline.emissions} == {0}
    # Without any input at all, the idle timeout still runs from the first Tick.
    quiet = Pipeline(window_settings)
    quiet.tick(wall)
    quiet.tick(wall + window_settings.idle_timeout_ns - 1)
    assert quiet.windows.clock.watermark_ns is None
    quiet.tick(wall + window_settings.idle_timeout_ns)
    assert quiet.windows.clock.watermark_ns == (wall - window_settings.grace_ns)



def test_a_late_event_revises_an_emitted_window() -> None:
    r"""
    window [0 s, 1 s) is emitted once the watermark passes 1 s (an event at 3.5 s, grace 2 s);
    then an event completing at 0.7 s arrives: revision 1 replaces revision 0 whole.
    """
    pipeline = Pipeline()
    pipeline.feed([make_event(0, "read", "ok", T0 + NS_PER_S // 2, 1_000)], T0)
    pipeline.feed([make_event(0, "read", "ok", T0 + 3_500_000_000, 1_000)], T0)
    first = [e for e in pipeline.emissions if e.acc.window_start_ns == T0
             and e.acc.window_len_ns == NS_PER_S]
    assert [e.revision for e in first] == [0]
    pipeline.feed([make_event(0, "write", "ok", T0 + 700_000_000, 2_000)], T0)
    revised = [e for e in pipeline.emissions if e.acc.window_start_ns == T0
               and e.acc.window_len_ns == NS_PER_S]
    assert [e.revision for e in revised] == [0, 1]
    assert window_stats("vol-0", "tenant-0", revised[1].acc)["write_ios"] == 1


def test_an_event_beyond_the_revision_horizon_revises_nothing() -> None:
    short = WindowSettings(horizon_ns=10 * NS_PER_S)
    pipeline = Pipeline(short)
    pipeline.feed([make_event(0, "read", "ok", T0 + 100 * NS_PER_S, 1_000)], T0)
    pipeline.feed([make_event(0, "read", "ok", T0 + 50 * NS_PER_S, 1_000)], T0)
    assert pipeline.books[0].late_beyond_horizon == 1
    assert (NS_PER_S, "vol-0", T0 + 50 * NS_PER_S) not in pipeline.latest


@pytest.mark.parametrize(("intervals", "busy_ns"), [
    ([(0, 10), (20, 30)], 20),         # disjoint
    ([(0, 10), (5, 15)], 15),          # overlapping
    ([(0, 10), (10, 20)], 20),         # touching
    ([(5, 15), (0, 30), (40, 50)], 40),  # one inside another
])
def test_busy_time_is_the_union_of_intervals(intervals: list[tuple[int, int]],
                                             busy_ns: int) -> None:
    acc = WindowAcc(0, NS_PER_S)
    for start, end in intervals:
        scalar_twin.add_inflight(acc, 0, start, end)
    assert acc.busy_ns == busy_ns
    assert acc.ops[0].inflight_ns == sum(end - start for start, end in intervals)


def test_queue_depth_equals_the_exact_time_average_of_in_flight_requests() -> None:
    r"""A synthetic workload whose in-flight count is known at every instant:

    time (ms):  0    250   500   750   1000
    request a:  [==========================)      4 in flight 250..500 ms,
    request b:       [==========)                  2 from 500..750,
    request c:       [====)                        1 otherwise
    request d:       [====)
    """
    ms = 1_000_000
    requests = [(0, 1000), (250, 750), (250, 500), (250, 500)]
    events = [make_event(0, "read", "ok", T0 + end * ms, (end - start) * ms)
              for start, end in requests]
    pipeline = run([events])
    window = pipeline.published(NS_PER_S)[("vol-0", T0)]  # a completes in the next window
    instants = [T0 + t * ms // 4 for t in range(4000)]  # the in-flight count every 0.25 ms
    in_flight = [sum(T0 + s * ms <= t < T0 + e * ms for s, e in requests) for t in instants]
    assert window["avg_read_queue_depth"] == sum(in_flight) / len(in_flight) == 2.0
    assert window["util"] == 1.0 and window["idle_time_ns"] == 0


@given(st.lists(st.tuples(st.integers(-50, 1050), st.integers(0, 400)), max_size=60))
def test_busy_time_is_the_measure_of_the_union_whatever_the_order(
    requests: list[tuple[int, int]],
) -> None:
    """The twin's binary-search union and the product's merge against a brute force:
    every ns of the window marked."""
    acc = WindowAcc(0, 1000)
    for submit, length in requests:
        scalar_twin.add_inflight(acc, 0, submit, submit + length)
    marked = [False] * 1000
    for submit, length in requests:
        for t in range(max(0, submit), min(1000, submit + length)):
            marked[t] = True
    assert acc.busy_ns == sum(marked)
    busy = acc.busy.tolist()
    assert all(lo < hi for lo, hi in busy)
    assert all(a[1] < b[0] for a, b in zip(busy, busy[1:], strict=False))
    product = WindowAcc(0, 1000)  # the product's merge (WindowAcc.union_busy), piece by piece
    for submit, length in requests:
        lo, hi = max(0, submit), min(1000, submit + length)
        if lo < hi:
            product.union_busy([[lo, hi]], hi - lo)
    assert (product.busy.tolist(), product.busy_ns) == (busy, acc.busy_ns)


@pytest.mark.parametrize("direct_max", [0, 10_000])
def test_windows_of_looks_up_or_scans_alike(direct_max: int,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The query path: direct look-ups of each start (short ranges) and a scan of the keys
    (long ones) return the same windows, in start order, for [from, to) with any edges."""
    import streams.core.windows.stages as pw

    rng = random.Random(7)
    pipeline = Pipeline()
    events = [make_event(rng.randrange(3), "read", "ok", T0 + rng.randrange(200 * NS_PER_S),
                         rng.randrange(1, 3 * NS_PER_S)) for _ in range(400)]
    for e in sorted(events, key=lambda e: e["complete_ns"]):
        pipeline.feed([e], wall_ns=e["complete_ns"])
    monkeypatch.setattr(pw, "DIRECT_LOOKUPS_MAX", direct_max)
    found = 0
    for length in (NS_PER_S, MINUTE):
        stored = pipeline.books[0 if length == NS_PER_S else 1].store
        for volume_id in ("vol-0", "vol-1", "vol-2", "vol-9"):
            for from_ns, to_ns in ((T0 - MINUTE, T0 + HOUR),
                                   (T0 + 7 * NS_PER_S + 1, T0 + 60 * NS_PER_S),
                                   (T0 + 5 * NS_PER_S, T0 + 5 * NS_PER_S), (T0 + MINUTE, T0)):
                got = pipeline.windows.windows_of(volume_id, length, from_ns, to_ns)
                want = [stored[k] for k in sorted(stored)
                        if k[0] == volume_id and from_ns <= k[1] < to_ns]
                assert got == want
                found += len(got)
    assert found > 100, "the ranges must hold windows, or this checks nothing"


@given(events=events_strategy)
def test_a_published_window_reads_back_as_its_integers(events: list[dict[str, Any]]) -> None:
    """What a reader of a stats topic rolls up (acc_from_stats of window_stats) is the
    window's integers, all but the busy intervals a rollup does not need."""
    from streams.core.windows.acc import acc_from_stats

    pipeline = run(arrive(events, 0, 0))
    for emission in pipeline.emissions:
        record = window_stats(emission.volume_id, emission.tenant_id, emission.acc)
        back = acc_from_stats(record)
        assert back.to_list() == [*emission.acc.to_list()[:3], [], emission.acc.busy_ns]
