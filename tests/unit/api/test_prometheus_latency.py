"""ioacct_volume_latency_seconds, the per-volume, per-op cumulative latency histogram of
/metrics: what prometheus_client's parser reads equals the brute-force oracle, exactly."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from streams.api.prometheus import LATENCY_LE, latency_text
from streams.core.batch import EventBatch
from streams.core.counters import LATENCY_BINS, VolumeState
from streams.core.events import OP_CODE, OPS, STATUS_CODE, STATUSES
from tests.oracles.counters import LATENCY_LE_NS, latency_histogram_oracle

FAMILY = "ioacct_volume_latency_seconds"


def test_le_labels_are_the_bounds_in_seconds_exactly() -> None:
    assert LATENCY_LE[-1] == "+Inf" and len(LATENCY_LE) == LATENCY_BINS
    assert [Decimal(le) * 10**9 for le in LATENCY_LE[:-1]] == list(LATENCY_LE_NS)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    latency = draw(st.sampled_from(LATENCY_LE_NS).flatmap(lambda b: st.integers(b - 1, b + 1))
                   | st.integers(0, 2**62))
    volume_id = draw(st.sampled_from(["vol-a", "vol-b", "vol-c"]))
    return {"volume_id": volume_id, "tenant_id": "t-" + volume_id,
            "op": draw(st.sampled_from(OPS)), "status": draw(st.sampled_from(STATUSES)),
            "offset": 0, "bytes": 0, "submit_ns": 0, "complete_ns": latency}


def states_of(items: list[dict[str, Any]]) -> dict[str, VolumeState]:
    states: dict[str, VolumeState] = {}
    for e in items:
        state = states.setdefault(e["volume_id"], VolumeState(e["tenant_id"]))
        state.add_events(EventBatch(e["volume_id"], e["tenant_id"], bytes([OP_CODE[e["op"]]]),
                                    bytes([STATUS_CODE[e["status"]]]), [0], [0],
                                    [e["complete_ns"]], [0]))
    return states


def exposition(states: dict[str, VolumeState]) -> str:
    return latency_text((vid, s.tenant_id, s.latency_histograms()) for vid, s in states.items())


def parsed(text: str) -> dict[str, dict[str, dict[str, Any]]]:
    """What the parser reads, in the oracle's form (sums as exact ns from the text)."""
    families = list(text_string_to_metric_families(text))
    assert [(f.name, f.type) for f in families] == [(FAMILY, "histogram")]
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for sample in families[0].samples:
        labels = dict(sample.labels)
        le = labels.pop("le", None)
        volume_id, op = labels.pop("volume_id"), labels.pop("op")
        assert labels == {"tenant_id": "t-" + volume_id}
        row = out.setdefault(volume_id, {}).setdefault(
            op, {"buckets": [None] * LATENCY_BINS, "count": None, "sum_ns": None})
        if sample.name == FAMILY + "_bucket":
            assert type(sample.value) is int
            row["buckets"][LATENCY_LE.index(le)] = sample.value
        elif sample.name == FAMILY + "_count":
            row["count"] = sample.value
    for line in text.splitlines():  # the sum by hand: the parser reads it as a float
        match = re.fullmatch(rf'{FAMILY}_sum\{{volume_id="(.*)",tenant_id=".*",'
                             r'op="(\w+)"\} (\S+)', line)
        if match:
            volume_id = re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m[1], m[1]), match[1])
            out[volume_id][match[2]]["sum_ns"] = Decimal(match[3]) * 10**9
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(events(), max_size=60))
def test_the_parsed_exposition_equals_the_oracle(items: list[dict[str, Any]]) -> None:
    assert parsed(exposition(states_of(items))) == latency_histogram_oracle(items)


def test_a_hand_example_and_the_metadata() -> None:
    items = [{"volume_id": "vol-1", "tenant_id": "t-vol-1", "op": "read", "status": s,
              "offset": 0, "bytes": 0, "submit_ns": 0, "complete_ns": latency}
             for s, latency in (("ok", 100_000_000), ("failed", 100_000_001), ("invalid", 5))]
    text = exposition(states_of(items))
    assert text.startswith(f"# HELP {FAMILY} ") and f"# TYPE {FAMILY} histogram\n" in text
    labels = 'volume_id="vol-1",tenant_id="t-vol-1",op="read"'
    assert f'{FAMILY}_bucket{{{labels},le="0.05"}} 0\n' in text
    assert f'{FAMILY}_bucket{{{labels},le="0.1"}} 1\n' in text  # le is inclusive
    assert f'{FAMILY}_bucket{{{labels},le="0.2"}} 2\n' in text
    assert f'{FAMILY}_bucket{{{labels},le="+Inf"}} 2\n' in text
    assert f"{FAMILY}_sum{{{labels}}} 0.200000001\n" in text
    assert f"{FAMILY}_count{{{labels}}} 2\n" in text
    assert 'op="write"' not in text  # an op without latencies has no series


def test_no_volumes_and_volumes_without_latencies_are_metadata_only() -> None:
    assert latency_text([]) == exposition(states_of([
        {"volume_id": "vol-1", "tenant_id": "t", "op": "flush", "status": "invalid",
         "offset": 0, "bytes": 0, "submit_ns": 0, "complete_ns": 0}]))
    assert [f.samples for f in text_string_to_metric_families(latency_text([]))] == [[]]


def test_sorted_by_volume_and_a_volume_given_twice_is_an_error() -> None:
    states = states_of([{"volume_id": v, "tenant_id": "t-" + v, "op": "read", "status": "ok",
                         "offset": 0, "bytes": 0, "submit_ns": 0, "complete_ns": 7}
                        for v in ("vol-3", "vol-1", "vol-2")])
    text = exposition(states)
    order = re.findall(r'_count\{volume_id="([^"]+)"', text)
    assert order == ["vol-1", "vol-2", "vol-3"]
    state = states["vol-1"]
    with pytest.raises(ValueError, match="given twice"):
        latency_text([("vol-1", "t", state.latency_histograms())] * 2)
    odd = latency_text([('vol "x"\\\n', 't"\\', {"read": ([0] * 19 + [3], 30 * 10**9)})])
    [family] = text_string_to_metric_families(odd)
    assert {tuple(sorted(s.labels.items())) for s in family.samples if s.name.endswith("_count")
            } == {(("op", "read"), ("tenant_id", 't"\\'), ("volume_id", 'vol "x"\\\n'))}
    with pytest.raises(ValueError, match="latency bins"):
        latency_text([("vol-1", "t", {"read": ([1] * 19, 5)})])


def test_the_latency_histograms_can_be_left_out_of_the_page() -> None:
    """IOACCT_METRICS_LATENCY_HISTOGRAMS=0: the counters alone, exactly as with them."""
    from streams.api.views import volume_metrics

    items = [{"volume_id": v, "tenant_id": "t-" + v, "op": op, "status": "ok", "offset": 0,
              "bytes": 0, "submit_ns": 0, "complete_ns": 1_000 * n}
             for n, (v, op) in enumerate([("vol-a", "read"), ("vol-b", "write"),
                                          ("vol-a", "flush")])]
    owned = sorted(states_of(items).items())
    without = volume_metrics(owned, 0, histograms=False)
    names = {f.name for f in text_string_to_metric_families(without)}
    assert FAMILY not in names and "ioacct_volume_read_ios" in names
    assert volume_metrics(owned, 0, histograms=True) == without + exposition(dict(owned))
