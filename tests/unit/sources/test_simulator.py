"""The fleet simulator: reproducible, valid by the oracle, and realistic enough to test with."""

from __future__ import annotations

import io
from collections import Counter, defaultdict

import orjson
import pytest

from streams.core.events import OPS, STATUSES, IoEvent
from streams.sources.simulator import MIB, FleetConfig, FleetSimulator, write_jsonl
from tests.oracles.counters import counters_oracle, oracle_reject_reason

START_NS = 1_700_000_000 * 10**9
BIG = FleetConfig(seed=7, volumes=1000, tenants=50, hosts=16, start_ns=START_NS)


@pytest.fixture(scope="module")
def big() -> tuple[FleetSimulator, list[IoEvent]]:
    """100,000 events over 1,000 volumes, generated once for the whole module."""
    sim = FleetSimulator(BIG)
    return sim, list(sim.events(100_000))


def test_same_seed_same_stream() -> None:
    cfg = FleetConfig(seed=3, start_ns=START_NS)
    assert list(FleetSimulator(cfg).events(5000)) == list(FleetSimulator(cfg).events(5000))


def test_different_seeds_differ() -> None:
    a = list(FleetSimulator(FleetConfig(seed=1)).events(1000))
    b = list(FleetSimulator(FleetConfig(seed=2)).events(1000))
    assert a != b


def test_successive_calls_continue_the_stream() -> None:
    cfg = FleetConfig(seed=4, start_ns=START_NS)
    whole = list(FleetSimulator(cfg).events(6000))
    sim = FleetSimulator(cfg)
    parts = list(sim.events(1000)) + list(sim.events_until(START_NS + 10**9))
    parts += list(sim.events(6000 - len(parts)))
    assert parts == whole


def test_events_until_respects_the_clock() -> None:
    sim = FleetSimulator(FleetConfig(seed=5, start_ns=START_NS))
    assert sim.now_ns == START_NS
    end = START_NS + 2 * 10**9
    batch = list(sim.events_until(end))
    assert sim.now_ns == end
    assert 5000 < len(batch) < 15000  # about 5000 events per virtual second
    assert all(START_NS <= e.submit_ns and e.complete_ns <= end for e in batch)
    assert list(sim.events_until(end)) == []  # nothing more is due yet


def test_ownership_is_fixed(big: tuple[FleetSimulator, list[IoEvent]]) -> None:
    sim, events = big
    owners = {v.volume_id: (v.tenant_id, v.host_id) for v in sim.volumes}
    assert len(owners) == 1000 and len({t for t, _ in owners.values()}) == 50
    assert all(owners[e.volume_id] == (e.tenant_id, e.host_id) for e in events)
    assert sim.volumes[42].volume_id == "vol-000042"
    assert sim.volumes[0].tenant_id.startswith("tenant-") and len(sim.volumes[0].tenant_id) == 10
    assert sim.volumes[0].host_id.startswith("host-") and len(sim.volumes[0].host_id) == 7


def test_every_op_and_status_occurs(big: tuple[FleetSimulator, list[IoEvent]]) -> None:
    _, events = big
    ops = Counter(e.op for e in events)
    assert set(ops) == set(OPS) and set(Counter(e.status for e in events)) == set(STATUSES)
    share = {op: n / len(events) for op, n in ops.items()}
    assert 0.55 < share["read"] < 0.65 and 0.25 < share["write"] < 0.35
    assert 0.03 < share["flush"] < 0.07 and 0.03 < share["discard"] < 0.07


def test_all_events_pass_the_oracle(big: tuple[FleetSimulator, list[IoEvent]]) -> None:
    sim, events = big
    dicts = [e.to_json() for e in events]
    assert [oracle_reject_reason(d, sim.now_ns) for d in dicts] == [None] * len(dicts)
    assert sum(r["read_ios"] for r in counters_oracle(dicts, now_ns=sim.now_ns).values()) > 0


def test_activity_is_skewed(big: tuple[FleetSimulator, list[IoEvent]]) -> None:
    _, events = big
    per_volume = Counter(e.volume_id for e in events)
    top = sum(n for _, n in per_volume.most_common(100))  # top 10% of the 1,000 volumes
    assert top > 0.4 * len(events)


def test_requests_overlap(big: tuple[FleetSimulator, list[IoEvent]]) -> None:
    _, events = big
    by_volume: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for e in events:
        if e.status != "invalid":
            by_volume[e.volume_id].append((e.submit_ns, e.complete_ns))
    overlapping = 0
    for intervals in by_volume.values():
        intervals.sort()
        busy_until = intervals[0][1]
        for submit, complete in intervals[1:]:
            overlapping += submit < busy_until  # queue depth > 1 at this submit
            busy_until = max(busy_until, complete)
    assert overlapping > 0.2 * len(events)  # about 0.6 with the defaults


def test_sizes_and_offsets(big: tuple[FleetSimulator, list[IoEvent]]) -> None:
    sim, events = big
    size_of = {v.volume_id: v.size_bytes for v in sim.volumes}
    for e in events:
        if e.op == "flush":
            assert (e.offset, e.bytes) == (0, 0)
            continue
        assert 512 <= e.bytes <= MIB and e.bytes % 512 == 0
        if e.status != "invalid":  # invalid ones are out of range or misaligned on purpose
            assert e.offset % 512 == 0 and e.offset + e.bytes <= size_of[e.volume_id]
    typical = sum(4096 <= e.bytes <= 128 * 1024 for e in events if e.op in ("read", "write"))
    assert typical > 0.8 * sum(e.op in ("read", "write") for e in events)


def test_latencies_are_heavy_tailed(big: tuple[FleetSimulator, list[IoEvent]]) -> None:
    _, events = big
    reads = sorted(e.latency_ns for e in events if e.op == "read" and e.status == "ok")
    assert 100_000 < reads[len(reads) // 2] < 400_000  # median about 200 us
    assert reads[-1] > 50 * reads[len(reads) // 2]  # rare outliers far out
    assert max(e.latency_ns for e in events) <= BIG.max_latency_ns
    assert all(e.latency_ns <= 10_000 for e in events if e.status == "invalid")


def test_nearly_completion_ordered(big: tuple[FleetSimulator, list[IoEvent]]) -> None:
    sim, events = big
    latest, worst = events[0].complete_ns, 0
    for e in events:
        worst = max(worst, latest - e.complete_ns)
        latest = max(latest, e.complete_ns)
    assert 0 < worst <= BIG.max_report_delay_ns
    assert START_NS <= events[0].submit_ns and latest <= sim.now_ns
    assert 10 * 10**9 < sim.now_ns - START_NS < 40 * 10**9  # ~20 s at 5000 events/s


@pytest.mark.parametrize("make_file", [io.BytesIO, io.StringIO])
def test_write_jsonl_round_trips(big: tuple[FleetSimulator, list[IoEvent]], make_file) -> None:
    _, events = big
    sample = events[:3000]
    fp = make_file()
    assert write_jsonl(iter(sample), fp) == len(sample)
    lines = fp.getvalue().splitlines()
    assert [orjson.loads(line) for line in lines] == [e.to_json() for e in sample]
