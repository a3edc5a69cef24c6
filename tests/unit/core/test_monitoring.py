"""Monitoring outputs: the CloudWatch-style 1 m record, the Prometheus text, the /metrics view.

The 1 m windows are built by the pipeline's own window code (WindowBook's 1 s windows
rolled up into the minute); every expected value is computed here from the raw events
with plain loops and exact fractions, not from the window fields. The Prometheus text is
read back with prometheus_client's parser, and its numbers once more by hand, exactly.
"""

from __future__ import annotations

import asyncio
import json
import re
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from streams.api.prometheus import PROMETHEUS_CONTENT_TYPE, prometheus_text
from streams.config import Settings
from streams.core.batch import EventBatch
from streams.core.codec import default_schemas
from streams.core.counters import COUNTER_NAMES, VolumeState
from streams.core.events import OP_CODE, STATUS_CODE
from streams.core.monitoring import (
    CLOSE_DELAY_BUCKETS_S,
    CloseDelays,
    monitoring_key,
    monitoring_record,
)
from streams.core.times import NS_PER_S
from streams.core.windows.acc import WindowAcc, rollup, window_stats
from streams.core.windows.book import WindowBook, WindowSettings
from streams.pipeline.app import WorkerStats
from tests.oracles.windows import exp_bucket, exp_representative
from tests.unit.core.windows import scalar_twin

MINUTE = 60 * NS_PER_S
T0 = 1_700_000_040 * NS_PER_S  # a minute boundary
assert T0 % MINUTE == 0
OPS = ("read", "write", "flush", "discard")
SCHEMA_PATH = Path(__file__).resolve().parents[3] / "schemas" / "monitoring_1m.avsc"


# --- building a 1 m window with the pipeline's window code ----------------------------------

def minute_window(events: list[dict[str, Any]], minute_start: int = T0) -> WindowAcc:
    """The 1 m window at ``minute_start``: 1 s windows of a WindowBook, rolled up."""
    store: dict[tuple[str, int], Any] = {}
    book = WindowBook(WindowSettings(), store)
    book.add_events(EventBatch(
        "vol-1", "tenant-1",
        ops=bytes(OP_CODE[e["op"]] for e in events),
        statuses=bytes(STATUS_CODE[e["status"]] for e in events),
        nbytes=[e["bytes"] for e in events], submit_ns=[e["submit_ns"] for e in events],
        complete_ns=[e["complete_ns"] for e in events], indexes=range(len(events)),
    ), watermark_ns=None)
    parts = [entry.acc for (_, start), entry in sorted(store.items())
             if minute_start <= start < minute_start + MINUTE]
    return rollup(parts, MINUTE)


def stats_of(events: list[dict[str, Any]], revision: int = 0) -> dict[str, Any]:
    return {**window_stats("vol-1", "tenant-1", minute_window(events)), "revision": revision}


def ev(op: str, status: str, submit_ns: int, complete_ns: int, nbytes: int = 0) -> dict[str, Any]:
    return {"volume_id": "vol-1", "tenant_id": "tenant-1", "op": op, "status": status,
            "offset": 0, "bytes": 0 if op == "flush" else nbytes,
            "submit_ns": submit_ns, "complete_ns": complete_ns}


# --- expected values, straight from the raw events ------------------------------------------

def seconds(ns: int | Fraction) -> float:
    """The double nearest to ns / 1e9."""
    return float(Fraction(ns) / NS_PER_S)


def union_ns(intervals: list[tuple[int, int]]) -> int:
    """Length covered by at least one interval: a sweep over +1/-1 edges."""
    edges = sorted([(a, 1) for a, b in intervals if b > a] + [(b, -1) for a, b in intervals
                                                            if b > a])
    covered, depth, since = 0, 0, 0
    for t, step in edges:
        if depth == 0 and step == 1:
            since = t
        depth += step
        if depth == 0:
            covered += t - since
    return covered


def p99_ns(latencies: list[int]) -> int | None:
    """Section 3 p99: the representative of the exponential bucket of the ceil(0.99 n)-th
    smallest latency, clamped to [min, max] (0 for a latency of 0)."""
    if not latencies:
        return None
    ordered = sorted(latencies)
    kth = ordered[-(-len(ordered) * 99 // 100) - 1]
    value = exp_representative(exp_bucket(kth)) if kth else 0
    return min(max(value, ordered[0]), ordered[-1])


def expected_record(events: list[dict[str, Any]], revision: int = 0,
                    start: int = T0) -> dict[str, Any]:
    end = start + MINUTE
    done = [e for e in events if start <= e["complete_ns"] < end]
    timed = [e for e in events if e["status"] in ("ok", "failed")]

    def of(op: str, status: str) -> list[dict[str, Any]]:
        return [e for e in done if e["op"] == op and e["status"] == status]

    def latencies(op: str) -> list[int]:
        return [e["complete_ns"] - e["submit_ns"] for e in of(op, "ok") + of(op, "failed")]

    def avg_s(op: str) -> float | None:
        lat = latencies(op)
        return seconds(Fraction(sum(lat), len(lat))) if lat else None

    clipped = [(max(e["submit_ns"], start), min(e["complete_ns"], end)) for e in timed]
    in_flight_ns = sum(max(0, b - a) for a, b in clipped)
    idle_ns = MINUTE - union_ns(clipped)
    p99 = {op: p99_ns(latencies(op)) for op in ("read", "write")}
    return {
        "volume_id": "vol-1", "tenant_id": "tenant-1", "timestamp_ns": start, "period_s": 60,
        "revision": revision,
        "VolumeReadBytes": sum(e["bytes"] for e in of("read", "ok")),
        "VolumeWriteBytes": sum(e["bytes"] for e in of("write", "ok")),
        "VolumeReadOps": len(of("read", "ok")),
        "VolumeWriteOps": len(of("write", "ok")),
        "VolumeTotalReadTime": seconds(sum(latencies("read"))),
        "VolumeTotalWriteTime": seconds(sum(latencies("write"))),
        "VolumeIdleTime": seconds(idle_ns),
        "VolumeQueueLength": float(Fraction(in_flight_ns, MINUTE)),
        "VolumeAverageReadLatency": avg_s("read"),
        "VolumeAverageWriteLatency": avg_s("write"),
        "VolumeP99ReadLatency": None if p99["read"] is None else seconds(p99["read"]),
        "VolumeP99WriteLatency": None if p99["write"] is None else seconds(p99["write"]),
        "VolumeReadErrors": len(of("read", "failed")),
        "VolumeWriteErrors": len(of("write", "failed")),
        "VolumeFlushErrors": len(of("flush", "failed")),
        "VolumeDiscardErrors": len(of("discard", "failed")),
        "VolumeInvalidOps": sum(len(of(op, "invalid")) for op in OPS),
        "VolumeFlushOps": len(of("flush", "ok")),
        "VolumeDiscardOps": len(of("discard", "ok")),
        "VolumeDiscardBytes": sum(e["bytes"] for e in of("discard", "ok")),
        "total_read_time_ns": sum(latencies("read")),
        "total_write_time_ns": sum(latencies("write")),
        "idle_time_ns": idle_ns,
    }


# --- monitoring_record ----------------------------------------------------------------------

S, MS = NS_PER_S, 1_000_000
HAND_EVENTS = [
    ev("read", "ok", T0 + 1 * S, T0 + 1500 * MS, 4096),          # 0.5 s
    ev("read", "failed", T0 + 2 * S, T0 + 2250 * MS, 4096),      # 0.25 s, failed: no bytes
    ev("write", "ok", T0 - 30 * S, T0 + 30 * S, 8192),           # 60 s, half of it before T0
    ev("flush", "invalid", T0 + 10 * S, T0 + 10 * S),
    ev("discard", "ok", T0 + 40 * S, T0 + 40 * S + 1 * MS, 1 << 20),
    ev("read", "ok", T0 + 59 * S, T0 + 61 * S, 512),             # completes next minute
]


def test_a_hand_computed_minute() -> None:
    """
    busy: [0, 30 s) write, [1, 1.5) and [2, 2.25) reads inside it, [40, 40.001) discard,
          [59, 60) the read completing later -> 31.001 s busy, 28.999 s idle
    in flight: 30 + 0.5 + 0.25 + 0.001 + 1 = 31.751 s over 60 s
    """
    record = monitoring_record(stats_of(HAND_EVENTS, revision=3))
    assert record == {
        "volume_id": "vol-1", "tenant_id": "tenant-1", "timestamp_ns": T0, "period_s": 60,
        "revision": 3,
        "VolumeReadBytes": 4096, "VolumeWriteBytes": 8192,
        "VolumeReadOps": 1, "VolumeWriteOps": 1,
        "VolumeTotalReadTime": 0.75, "VolumeTotalWriteTime": 60.0,
        "VolumeIdleTime": 28.999, "VolumeQueueLength": 31.751 / 60,
        "VolumeAverageReadLatency": 0.375, "VolumeAverageWriteLatency": 60.0,
        # rank 2 of 2: 0.5 s, in bucket 924 (2**924 < 5e8**32 <= 2**925), whose
        # representative 2**(1849/64) = 497,673,731.86 ns lies inside [min, max]
        "VolumeP99ReadLatency": 0.497673732,
        "VolumeP99WriteLatency": 60.0,   # one latency: clamped to [min, max] = itself
        "VolumeReadErrors": 1, "VolumeWriteErrors": 0, "VolumeFlushErrors": 0,
        "VolumeDiscardErrors": 0, "VolumeInvalidOps": 1,
        "VolumeFlushOps": 0, "VolumeDiscardOps": 1, "VolumeDiscardBytes": 1 << 20,
        "total_read_time_ns": 750 * MS, "total_write_time_ns": 60 * S,
        "idle_time_ns": 28_999 * MS,
    }
    assert record == expected_record(HAND_EVENTS, revision=3)


def test_a_minute_with_only_in_flight_requests_has_null_latencies() -> None:
    """A request spanning the whole minute, completing after it: no op completes."""
    events = [ev("write", "ok", T0 - 5 * S, T0 + 65 * S, 4096)]
    record = monitoring_record(stats_of(events))
    assert record == expected_record(events)
    assert record["VolumeWriteOps"] == 0 and record["VolumeIdleTime"] == 0.0
    assert record["VolumeQueueLength"] == 1.0
    for name in ("VolumeAverageReadLatency", "VolumeAverageWriteLatency",
                 "VolumeP99ReadLatency", "VolumeP99WriteLatency"):
        assert record[name] is None


def test_flush_and_discard_count_in_queue_length_and_idle_time() -> None:
    """CloudWatch counts reads and writes only; here every op is in flight (documented)."""
    events = [ev("flush", "ok", T0, T0 + 30 * S),
              ev("discard", "failed", T0 - 30 * S, T0 + 30 * S, 4)]
    record = monitoring_record(stats_of(events))
    assert record["VolumeQueueLength"] == 1.0 and record["VolumeIdleTime"] == 30.0
    assert record["VolumeFlushOps"] == 1 and record["VolumeDiscardErrors"] == 1
    assert record["VolumeDiscardBytes"] == 0  # failed: no bytes
    assert record == expected_record(events)


latency = st.one_of(st.integers(0, 50_000), st.integers(50_000, 2 * S),
                    st.integers(2 * S, 90 * S), st.sampled_from([0, 9_999, 10_000, 10 * S]))


@st.composite
def minute_events(draw: st.DrawFn) -> list[dict[str, Any]]:
    raw = draw(st.lists(st.tuples(
        st.sampled_from(OPS), st.sampled_from(["ok", "ok", "failed", "invalid"]),
        st.integers(T0 - 5 * S, T0 + 65 * S), latency, st.integers(0, 1 << 30)),
        min_size=1, max_size=80))
    return [ev(op, status, complete - lat, complete, nbytes)
            for op, status, complete, lat, nbytes in raw]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=minute_events(), revision=st.integers(0, 5))
def test_records_of_real_windows_equal_values_from_raw_events(
    events: list[dict[str, Any]], revision: int,
) -> None:
    assume(any(T0 <= e["complete_ns"] < T0 + MINUTE or
               (e["status"] != "invalid" and e["submit_ns"] < T0 + MINUTE
                and e["complete_ns"] > T0) for e in events))
    stats = stats_of(events, revision)
    assert monitoring_record(stats) == expected_record(events, revision)
    # the 1 m window made from raw events directly gives the same record
    direct = WindowAcc(T0, MINUTE)
    for e in events:
        op, status = OP_CODE[e["op"]], STATUS_CODE[e["status"]]
        if T0 <= e["complete_ns"] < T0 + MINUTE:
            scalar_twin.add_completion(direct, op, status, e["bytes"],
                                       e["complete_ns"] - e["submit_ns"])
        if e["status"] != "invalid":
            scalar_twin.add_inflight(direct, op, e["submit_ns"], e["complete_ns"])
    direct_stats = {**window_stats("vol-1", "tenant-1", direct), "revision": revision}
    assert monitoring_record(direct_stats) == monitoring_record(stats)


def test_queue_length_is_the_sum_of_the_per_op_queue_depths() -> None:
    stats = stats_of(HAND_EVENTS)
    assert monitoring_record(stats)["VolumeQueueLength"] == pytest.approx(
        sum(stats[f"avg_{op}_queue_depth"] for op in OPS), rel=1e-15)


@pytest.mark.parametrize("length", [NS_PER_S, 3600 * NS_PER_S])
def test_only_1m_windows_make_monitoring_records(length: int) -> None:
    stats = {**window_stats("vol-1", "tenant-1", WindowAcc(T0, length)), "revision": 0}
    with pytest.raises(ValueError, match="1 m windows"):
        monitoring_record(stats)


def test_a_record_needs_its_revision() -> None:
    with pytest.raises(KeyError, match="revision"):
        monitoring_record(window_stats("vol-1", "tenant-1", minute_window(HAND_EVENTS)))


def test_key_is_volume_and_minute_like_the_stats_topics() -> None:
    record = monitoring_record(stats_of(HAND_EVENTS))
    assert monitoring_key(record) == f"vol-1/{T0}".encode()


# --- the Avro record ------------------------------------------------------------------------

def test_schema_fields_are_the_record_fields_in_order_and_documented() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    assert (schema["name"], schema["namespace"]) == ("VolumeMetrics1m", "io.ioacct")
    record = monitoring_record(stats_of(HAND_EVENTS))
    assert [f["name"] for f in schema["fields"]] == list(record)
    for field in schema["fields"]:
        if field["name"] not in ("volume_id", "tenant_id"):
            assert field.get("doc"), field["name"]
        if isinstance(field["type"], list):
            assert field["type"] == ["null", "double"] and field["default"] is None


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=minute_events(), revision=st.integers(0, 2**31 - 1))
def test_records_round_trip_through_avro(events: list[dict[str, Any]], revision: int) -> None:
    assume(any(T0 <= e["complete_ns"] < T0 + MINUTE for e in events))
    record = monitoring_record(stats_of(events, revision))
    payload = default_schemas().encode("VolumeMetrics1m", record)
    assert default_schemas().decode(payload, expect="VolumeMetrics1m") == (
        "VolumeMetrics1m", record)


def test_a_record_with_nulls_round_trips_through_avro() -> None:
    record = monitoring_record(stats_of([ev("flush", "invalid", T0 + S, T0 + S)]))
    assert record["VolumeAverageReadLatency"] is None and record["VolumeP99WriteLatency"] is None
    name, decoded = default_schemas().decode(default_schemas().encode("VolumeMetrics1m", record))
    assert (name, decoded) == ("VolumeMetrics1m", record)


# --- Prometheus text ------------------------------------------------------------------------

def expected_families() -> dict[str, tuple[str, str, bool]]:
    """family name -> (type, counters_json key, in seconds?), written out from section 2."""
    families: dict[str, tuple[str, str, bool]] = {}
    for op in OPS:
        families[f"ioacct_volume_{op}_ios_total"] = ("counter", f"{op}_ios", False)
        if op != "flush":
            families[f"ioacct_volume_{op}_bytes_total"] = ("counter", f"{op}_bytes", False)
        families[f"ioacct_volume_{op}_ios_error_total"] = ("counter", f"{op}_ios_error", False)
        families[f"ioacct_volume_invalid_{op}_ios_total"] = (
            "counter", f"invalid_{op}_ios", False)
        families[f"ioacct_volume_{op}_time_seconds_total"] = (
            "counter", f"total_{op}_time_ns", True)
    families["ioacct_volume_rejected_events_total"] = ("counter", "rejected", False)
    families["ioacct_volume_last_io_seconds"] = ("gauge", "last_io_ns", True)
    return families


FAMILIES = expected_families()
SAMPLE_LINE = re.compile(
    r'^(\w+)\{volume_id="((?:[^"\\]|\\.)*)",tenant_id="((?:[^"\\]|\\.)*)"\} (\S+)$')


def unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)


def volume(tenant: str, values: list[int], last_io_ns: int | None,
           rejected: int = 0) -> VolumeState:
    return VolumeState(tenant, list(values), last_io_ns, rejected)


def exposition_of(states: dict[str, VolumeState]) -> str:
    return prometheus_text((vid, s.counters_json(vid, 0)) for vid, s in states.items())


def check_exposition(text: str, states: dict[str, VolumeState]) -> None:
    """Every family, type, label and value, against the states; nothing else."""
    expected: dict[tuple[str, str], int | None] = {}
    for vid, state in states.items():
        counters = state.counters_json(vid, 0)
        for name, (_kind, key, _seconds) in FAMILIES.items():
            if counters[key] is not None:
                expected[(name, vid)] = counters[key]

    # 1. prometheus_client's parser: names, types, HELP, labels, values
    seen: dict[tuple[str, str], float] = {}
    families = list(text_string_to_metric_families(text))
    assert len(families) == len(FAMILIES)
    for family in families:
        assert family.documentation
        for sample in family.samples:
            kind, key, in_seconds = FAMILIES[sample.name]
            assert family.type == kind
            vid = sample.labels["volume_id"]
            assert sample.labels == {"volume_id": vid, "tenant_id": states[vid].tenant_id}
            assert (sample.name, vid) not in seen
            seen[(sample.name, vid)] = sample.value
    assert set(seen) == set(expected)
    for (name, vid), value in seen.items():
        exact = expected[(name, vid)]
        assert exact is not None
        if FAMILIES[name][2]:
            assert value == seconds(exact)
        else:  # this parser reads an integer text as a Python int: exact past 2**53
            assert type(value) is int and value == exact

    # 2. by hand: the text holds the exact integers and exact decimal seconds
    lines = [line for line in text.split("\n")[:-1] if not line.startswith("#")]
    assert len(lines) == len(expected)
    for line in lines:
        match = SAMPLE_LINE.match(line)
        assert match, line
        name, vid, tenant, value_text = match.groups()
        vid, tenant = unescape(vid), unescape(tenant)
        assert tenant == states[vid].tenant_id
        exact = expected[(name, vid)]
        if FAMILIES[name][2]:
            assert Decimal(value_text) * NS_PER_S == exact, line
        else:
            assert re.fullmatch(r"-?\d+", value_text) and int(value_text) == exact, line
    assert text.endswith("\n")


BIG = 2**53 + 1  # the first integer a float64 cannot hold
HUGE_NS = (2**70 // NS_PER_S) * NS_PER_S + 123_456_789  # 1180591620717.123456789 s


def test_every_family_type_label_and_value_equals_the_counters() -> None:
    assert sorted(key for _k, key, _s in FAMILIES.values() if key not in (
        "rejected", "last_io_ns")) == sorted(name for name, _slot in COUNTER_NAMES)
    n = len(VolumeState("t").counters)
    states = {
        "vol-b": volume('ten"ant\\x\ny', [BIG + i for i in range(n)], 1_700_000_000_123_456_789,
                        rejected=2**64 + 5),
        "vol-a": volume("tenant-1", [i * 7 for i in range(n)], None),
        "vol-c": volume("tenant-1", [HUGE_NS] * n, -1, rejected=1),
    }
    text = exposition_of(states)
    check_exposition(text, states)
    assert f'ioacct_volume_read_ios_total{{volume_id="vol-b",tenant_id="ten\\"ant\\\\x\\ny"}} ' \
           f"{BIG}\n" in text
    assert ('ioacct_volume_read_time_seconds_total{volume_id="vol-c",tenant_id="tenant-1"} '
            "1180591620717.123456789\n") in text
    assert 'ioacct_volume_last_io_seconds{volume_id="vol-c",tenant_id="tenant-1"} -0.000000001' \
        in text
    assert "# TYPE ioacct_volume_read_ios_total counter\n" in text
    assert "# TYPE ioacct_volume_last_io_seconds gauge\n" in text
    assert "vol-a" not in "".join(line for line in text.splitlines()
                                  if line.startswith("ioacct_volume_last_io_seconds"))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(
    st.text(min_size=1, max_size=12),
    st.tuples(st.text(min_size=1, max_size=12),
              st.lists(st.integers(0, 2**80), min_size=20, max_size=20),
              st.none() | st.integers(0, 2**63 - 1), st.integers(0, 2**70)),
    max_size=6))
def test_any_counters_and_labels_survive_the_parser(
    raw: dict[str, tuple[str, list[int], int | None, int]],
) -> None:
    states = {vid: volume(tenant, values, last_io, rejected)
              for vid, (tenant, values, last_io, rejected) in raw.items()}
    check_exposition(exposition_of(states), states)


def test_output_is_sorted_by_volume_and_independent_of_input_order() -> None:
    states = {f"vol-{i}": volume("t", [i] * 20, i) for i in (3, 1, 2)}
    pairs = [(vid, s.counters_json(vid, 0)) for vid, s in states.items()]
    text = prometheus_text(pairs)
    assert text == prometheus_text(reversed(pairs))
    first = [line for line in text.splitlines() if line.startswith("ioacct_volume_read_ios_total")]
    assert [line.split('"')[1] for line in first] == ["vol-1", "vol-2", "vol-3"]


def test_no_volumes_is_metadata_only() -> None:
    text = prometheus_text([])
    families = list(text_string_to_metric_families(text))
    assert [f.samples for f in families] == [[]] * len(FAMILIES)


def test_a_volume_given_twice_is_an_error() -> None:
    counters = volume("t", [0] * 20, None).counters_json("vol-1", 0)
    with pytest.raises(ValueError, match="given twice"):
        prometheus_text([("vol-1", counters), ("vol-1", counters)])


@pytest.mark.parametrize("bad", [1.0, True, "1"])
def test_a_counter_that_is_not_an_integer_is_an_error(bad: Any) -> None:
    counters = {**volume("t", [0] * 20, None).counters_json("vol-1", 0), "read_ios": bad}
    with pytest.raises(TypeError, match="integers"):
        prometheus_text([("vol-1", counters)])


# --- the /metrics view ----------------------------------------------------------------------

RAW = "ioacct.io.raw"


def fake_pipeline(owned: list[int], volumes: dict[str, VolumeState]) -> Any:
    """Just what the view touches: settings, consumer assignment, partitioner, table."""
    def key_partition(topic: str, key: bytes) -> Any:
        assert topic == RAW
        return SimpleNamespace(partition=int(key.decode().rsplit("-", 1)[1]) % 4)

    assignment = [SimpleNamespace(topic=RAW, partition=n) for n in owned]
    assignment += [SimpleNamespace(topic="ioacct-counters-changelog", partition=n)
                   for n in range(4)]  # standby changelogs: not the raw topic
    pages: dict[str, Any] = {}

    def page(path: str) -> Any:
        def register(fn: Any) -> Any:
            pages[path] = fn
            return fn
        return register

    app = SimpleNamespace(
        consumer=SimpleNamespace(assignment=lambda: assignment),
        producer=SimpleNamespace(key_partition=key_partition),
        page=page, table_route=lambda **_kw: (lambda fn: fn), pages=pages,
        # the access gate and the security headers go here
        web=SimpleNamespace(web_app=SimpleNamespace(middlewares=[], on_response_prepare=[])),
    )
    table: dict[bytes, bytes | None] = {vid.encode(): s.snapshot() for vid, s in volumes.items()}
    table[b"vol-9"] = None  # a deleted entry
    settings = Settings()
    assert settings.raw_topic == RAW
    positions = [(RAW, n, 100 + n, 90, 80) for n in owned]
    return SimpleNamespace(settings=settings, app=app, counters=table, stats=WorkerStats(),
                           input_positions=lambda: positions)


def volume_part(body: str) -> str:
    """The per-volume counter families of a /metrics body (the latency histograms, then
    the worker's health follow them)."""
    return body.split("# HELP ioacct_volume_latency_seconds ", 1)[0]


def test_metrics_view_serves_only_volumes_of_actively_assigned_partitions() -> None:
    from streams.api.views import register_views

    volumes = {f"vol-{i}": volume(f"tenant-{i}", [i + BIG] * 20, i) for i in range(8)}
    for i in (1, 2, 4):  # latencies of an owned volume show, of another not
        volumes[f"vol-{i}"].latency_bins[i] = i
    p = fake_pipeline(owned=[0, 2], volumes=volumes)
    register_views(p, SimpleNamespace())  # no token feed: /metrics is called past the gate

    class Web:
        def text(self, value: str, *, status: int = 200,
                 headers: dict[str, str] | None = None) -> Any:
            from aiohttp.web import Response  # as faust's aiohttp driver makes it

            return Response(text=value, status=status, headers=headers)

    response = asyncio.run(p.app.pages["/metrics"](Web(), None))
    assert response.status == 200
    assert response.headers["Content-Type"] == PROMETHEUS_CONTENT_TYPE
    assert response.compression  # gzip if the scraper accepts it (aiohttp decides)
    body = response.text
    mine = {vid: s for vid, s in volumes.items() if int(vid[-1]) % 4 in (0, 2)}
    assert sorted(mine) == ["vol-0", "vol-2", "vol-4", "vol-6"]
    check_exposition(volume_part(body), mine)
    latency = body.split("# HELP ioacct_volume_latency_seconds ", 1)[1]
    latency = latency.split("# HELP ioacct_worker_", 1)[0]
    assert sorted(set(re.findall(r'volume_id="([^"]+)"', latency))) == ["vol-2", "vol-4"]
    assert 'ioacct_worker_consumer_lag_records{topic="ioacct.io.raw",partition="2"} 12' \
        in body


def test_metrics_route_of_a_real_worker_app(tmp_path: Path, monkeypatch: Any) -> None:
    """The faust app of build_app (no broker needed) serves /metrics through aiohttp and
    its access gate: 503 while the token store is not read; then 401 without a token,
    403 for a tenant's; for the operator 503 while its consumer is not started, then the
    exposition with the 0.0.4 header."""
    from aiohttp.test_utils import TestClient, TestServer

    from streams.api.auth import OPERATOR, TENANT, new_token
    from streams.config import Settings
    from streams.worker import build_worker

    # No broker here (the app is never started): nothing to log in to.
    p, token_feed = build_worker(Settings.from_env(state_dir=tmp_path,
                                                   kafka_security="PLAINTEXT"))
    operator, operator_record = new_token(OPERATOR, None, 1)
    tenant, tenant_record = new_token(TENANT, "tenant-1", 1)
    for record in (operator_record, tenant_record):  # as the token store's reader would
        token_feed.book.apply(record)

    driver: Any = p.app.web  # faust's aiohttp driver

    async def scrapes() -> list[tuple[int, str | None, str]]:
        results = []

        async def get(token: str | None) -> None:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            response = await client.get("/metrics", headers=headers)
            results.append((response.status, response.headers.get("Content-Type"),
                            await response.text()))

        async with TestClient(TestServer(driver.web_app)) as client:
            await get(operator)  # the store not read yet
            token_feed.ready.set()
            for token in (None, tenant, operator):
                await get(token)
            monkeypatch.setattr(p.app.consumer, "assignment", lambda: set())
            await get(operator)
        return results

    unread, anonymous, as_tenant, before, after = asyncio.run(scrapes())
    assert unread[0] == 503 and "token store" in unread[2]
    assert anonymous[0] == 401 and '"unauthorized"' in anonymous[2]
    assert as_tenant[0] == 403 and '"forbidden"' in as_tenant[2]
    assert (before[0], before[2]) == (503, "consumer not started yet\n")
    assert after[:2] == (200, "text/plain; version=0.0.4; charset=utf-8")
    assert volume_part(after[2]) == prometheus_text([])
    assert "\nioacct_worker_records_total 0\n" in after[2]


_BOUNDS_NS = [int(bound * NS_PER_S) for bound in CLOSE_DELAY_BUCKETS_S]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.integers(-10**12, 200 * NS_PER_S),
                          st.sampled_from(_BOUNDS_NS), st.sampled_from(_BOUNDS_NS).map(
                              lambda b: b + 1), st.integers(-2**63, 2**63 - 1)),
                max_size=60),
       st.integers(0, 60))
def test_close_delays_observed_at_once_are_those_observed_one_by_one(
        delays: list[int], cut: int) -> None:
    """A unit's close delays at once (numpy) land in the buckets one at a time puts them
    in, on the bounds and one past them too; the count and sum are the same."""
    at_once, one_by_one = CloseDelays(), CloseDelays()
    at_once.observe_many(delays[:cut])
    at_once.observe_many(delays[cut:])
    for delay in delays:
        one_by_one.observe(delay)
    assert (at_once.counts, at_once.total, at_once.sum_ns) == (
        one_by_one.counts, one_by_one.total, one_by_one.sum_ns)
