"""The cumulative per-volume, per-op latency histogram of a volume's state (/metrics'
ioacct_volume_latency_seconds), against the brute-force oracle: the scalar path, the
vectorised path of the worker, and state stored before the histogram existed."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.batch import Columns, EventBatch
from streams.core.counters import (
    HISTOGRAM_BOUNDS_NS,
    LATENCY_BINS,
    VolumeState,
    latency_bin_counts,
)
from streams.core.events import OP_CODE, OPS, STATUS_CODE, STATUSES
from streams.core.windows import acc
from tests.oracles.counters import LATENCY_LE_NS, latency_histogram_oracle
from tests.unit.core.ingest_records import histograms_of

NOW = 1_700_000_000 * 10**9


def test_bounds_are_the_contracts_and_the_windows() -> None:
    assert HISTOGRAM_BOUNDS_NS == LATENCY_LE_NS and LATENCY_BINS == 20
    assert acc.HISTOGRAM_BOUNDS_NS is HISTOGRAM_BOUNDS_NS


# Latencies at, just under and just over every bound (le is inclusive), and far past them.
latencies = (st.sampled_from(LATENCY_LE_NS).flatmap(lambda b: st.integers(b - 1, b + 1))
             | st.integers(0, 11 * 10**9) | st.integers(0, 2**63 - 1))


@st.composite
def events(draw: st.DrawFn, volumes: tuple[str, ...] = ("vol-1",)) -> dict[str, Any]:
    op, status = draw(st.sampled_from(OPS)), draw(st.sampled_from(STATUSES))
    latency = draw(latencies)
    complete_ns = draw(st.integers(latency - 2**63, 2**63 - 1))
    volume_id = draw(st.sampled_from(volumes))
    return {"volume_id": volume_id, "tenant_id": "t-" + volume_id, "op": op, "status": status,
            "offset": 0, "bytes": 0 if op == "flush" else 512,
            "submit_ns": complete_ns - latency, "complete_ns": complete_ns}


def event_batch(items: list[dict[str, Any]]) -> EventBatch:
    return EventBatch(
        "vol-1", "t-1", bytes(OP_CODE[e["op"]] for e in items),
        bytes(STATUS_CODE[e["status"]] for e in items), [e["bytes"] for e in items],
        [e["submit_ns"] for e in items], [e["complete_ns"] for e in items], range(len(items)))


def columns(items: list[dict[str, Any]]) -> Columns:
    volumes = tuple(sorted({e["volume_id"] for e in items}))
    return Columns(
        volumes, tuple("t-" + v for v in volumes),
        np.array([volumes.index(e["volume_id"]) for e in items], dtype=np.intp),
        np.array([OP_CODE[e["op"]] for e in items], dtype=np.uint8),
        np.array([STATUS_CODE[e["status"]] for e in items], dtype=np.uint8),
        np.array([e["bytes"] for e in items], dtype=np.int64),
        np.array([e["submit_ns"] for e in items], dtype=np.int64),
        np.array([e["complete_ns"] for e in items], dtype=np.int64))


@given(st.lists(events(), max_size=60), st.lists(st.integers(1, 20), min_size=1))
def test_scalar_path_in_any_batching_gives_the_oracle_histogram(
    items: list[dict[str, Any]], sizes: list[int],
) -> None:
    state = VolumeState("t-1")
    start, k = 0, 0
    while start < len(items):
        state.add_events(event_batch(items[start:start + sizes[k % len(sizes)]]))
        start, k = start + sizes[k % len(sizes)], k + 1
    assert histograms_of(state) == latency_histogram_oracle(items).get("vol-1", {})


@settings(max_examples=200)
@given(st.lists(events(("vol-a", "vol-b", "vol-c")), max_size=80))
def test_vectorised_bins_equal_the_scalar_bins_and_the_oracle(
    items: list[dict[str, Any]],
) -> None:
    cols = columns(items)
    vectorised = latency_bin_counts(cols)
    assert len(vectorised) == len(cols.volumes)
    want = latency_histogram_oracle(items)
    for v, volume_id in enumerate(cols.volumes):
        scalar = VolumeState(cols.tenants[v])
        scalar.add_events(event_batch([e for e in items if e["volume_id"] == volume_id]))
        assert vectorised[v] == scalar.latency_bins
        state = VolumeState(cols.tenants[v])
        state.add_sums(scalar.counters, None, vectorised[v])
        assert histograms_of(state) == want.get(volume_id, {})


def test_a_latency_on_a_bound_counts_at_that_bound() -> None:
    items = [{"volume_id": "vol-1", "tenant_id": "t-1", "op": "write", "status": "failed",
              "offset": 0, "bytes": 0, "submit_ns": NOW, "complete_ns": NOW + bound}
             for bound in (10_000, 10_001, 100_000_000, 10 * 10**9, 10 * 10**9 + 1)]
    state = VolumeState("t-1")
    state.add_events(event_batch(items))
    bins = state.latency_histograms()["write"][0]
    # 10 us; 10 us + 1 ns in (10 us, 20 us]; 100 ms; 10 s; past 10 s: the open bin
    assert [i for i, n in enumerate(bins) for _ in range(n)] == [0, 1, 12, 18, 19]
    assert latency_bin_counts(columns(items))[0] == state.latency_bins


# --- state stored before the histogram --------------------------------------------------------

OLD_COUNTERS = [3, 4096, 1, 0, 1_500, 2, 8192, 0, 1, 700, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0]
OLD_V2 = (b'[2,"t-1",[' + b",".join(b"%d" % c for c in OLD_COUNTERS) + b'],' +
          b'1700000000000000000,7,{"p-1":41},{"p-1":"0011223344556677"}]')


def test_a_version_2_snapshot_loads_with_an_empty_histogram() -> None:
    """What a worker before the histogram stored (written out by hand, not by this code):
    its counters carry on; the histogram starts empty and its sum leaves the old time out,
    so that _sum stays the sum of what _count counts."""
    state = VolumeState.from_snapshot(OLD_V2)
    assert state.counters == OLD_COUNTERS and state.producer_digests == {
        "p-1": "0011223344556677"}
    assert all(bins == [0] * LATENCY_BINS and sum_ns == 0
               for bins, sum_ns in state.latency_histograms().values())
    new = [{"volume_id": "vol-1", "tenant_id": "t-1", "op": "read", "status": "ok",
            "offset": 0, "bytes": 512, "submit_ns": NOW, "complete_ns": NOW + latency}
           for latency in (5_000, 150_000_000)]
    state.add_events(event_batch(new))
    assert histograms_of(state) == latency_histogram_oracle(new)["vol-1"]
    assert state.counters[4] == 1_500 + 5_000 + 150_000_000  # total_read_time_ns carries on
    again = VolumeState.from_snapshot(state.snapshot())
    assert state.snapshot().startswith(b"[3,") and again == state
    assert histograms_of(again) == latency_histogram_oracle(new)["vol-1"]


def test_a_version_1_snapshot_loads_with_an_empty_histogram() -> None:
    data = (b'[1,"t-1",[' + b",".join(b"%d" % c for c in OLD_COUNTERS) + b'],null,0,{}]')
    state = VolumeState.from_snapshot(data)
    assert state.counters == OLD_COUNTERS and state.unbinned_time_ns == [1_500, 700, 0, 0]
    assert histograms_of(state) == {}


def test_a_fresh_state_round_trips_its_histogram_past_64_bits() -> None:
    state = VolumeState("t-1")
    state.add_events(event_batch([{"op": "read", "status": "ok", "bytes": 1,
                                   "submit_ns": 0, "complete_ns": 2**63 - 1}] * 3))
    assert state.latency_histograms()["read"][1] == 3 * (2**63 - 1)  # sum past int64, exact
    state.latency_bins[0] = 2**64  # absurd, but the stored form must not round it
    again = VolumeState.from_snapshot(state.snapshot())
    assert again == state and again.latency_bins[0] == 2**64
