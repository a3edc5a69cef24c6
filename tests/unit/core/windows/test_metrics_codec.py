"""The VolumeMetrics1m records encoded many at once (metrics_codec.py) are, byte for byte,
what fastavro makes of :func:`monitoring_record` of :func:`window_stats` (the path each
1 m window took before): on random minutes (int64 extremes, unknown and untrimmed
exponential histograms, sums past int64) and on a simulated fleet's minutes."""

from __future__ import annotations

import copy
import time
from collections import defaultdict
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.codec import default_schemas
from streams.core.counters import ERRORS, INVALID, IOS, TIME
from streams.core.events import INT64_MAX, OPS
from streams.core.monitoring import MONITORING_WINDOW_NS, monitoring_record
from streams.core.times import NS_PER_S
from streams.core.windows.acc import WindowAcc, rollup, window_stats
from streams.core.windows.columns import gather, gather_fitting
from streams.core.windows.exphist import ExpHistogram
from streams.core.windows.metrics_codec import MetricsEncoder, check_layout, metrics_layout
from tests.unit.core.windows.test_stats_codec import (
    IDS,
    columnar_windows,
    fleet_seconds,
    window_accs,
)

MINUTE = MONITORING_WINDOW_NS


def _oracle(volume_id: str, tenant_id: str, acc: WindowAcc, revision: int) -> bytes:
    record = monitoring_record({**window_stats(volume_id, tenant_id, acc), "revision": revision})
    return default_schemas().encode("VolumeMetrics1m", record)


def _encoder() -> MetricsEncoder:
    return MetricsEncoder.of(default_schemas())


def _minute(acc: WindowAcc, busy_share: int) -> WindowAcc:
    """``acc`` as a 1 m window, busy for ``busy_share`` / 4 of it."""
    return replace(acc, window_len_ns=MINUTE, busy_ns=MINUTE * busy_share // 4)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(IDS, IDS, window_accs(), st.integers(0, 4), st.integers(0, 2**31 - 1)),
                min_size=1, max_size=6))
def test_records_are_fastavros_bytes_of_monitoring_record(
        drawn: list[tuple[str, str, WindowAcc, int, int]]) -> None:
    items = [(v, t, _minute(acc, share), revision) for v, t, acc, share, revision in drawn]
    try:
        expected = [_oracle(*item) for item in items]
    except OverflowError:  # a value past int64 (fastavro): the encoder fails as well
        with pytest.raises(OverflowError):
            _encoder().encode(items)
        return
    assert _encoder().encode(items) == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(columnar_windows(), min_size=1, max_size=8), st.integers(0, 4))
def test_minutes_the_columns_hold_are_laid_out_from_them(accs: list[WindowAcc],
                                                          share: int) -> None:
    """Minutes with known histograms and int64 values: none is made one by one."""
    accs = [_minute(acc, share) for acc in accs]
    cols = gather(accs, [(k,) for k in range(len(accs))])
    assert cols is not None
    n = len(accs)
    counts = cols.counts.reshape(n, len(OPS), -1)

    def within(values: np.ndarray, high: int) -> np.ndarray:
        return ((values >= 0) & (values < high)).reshape(n, -1).all(axis=1)

    # counts a request could have (ok + failed, in ns, within int64), sums within int64
    plain = (within(counts[:, :, [IOS, ERRORS]], 2**32) & within(counts[:, :, INVALID], 2**60)
             & within(cols.inflight_ns, 2**60))
    assert not metrics_layout(cols)[1][plain].any()
    items = [("vol", "tenant", acc, k) for k, acc in enumerate(accs)]
    assert _encoder().encode(items) == [_oracle(*item) for item in items]


def test_sums_past_int64_and_odd_histograms_are_made_one_by_one() -> None:
    """Minutes the columns would get wrong, among ones they get right: each record is
    still the oracle's, and the wrong ones are the oracle's own."""
    plain = WindowAcc(0, MINUTE)
    plain.ops[0].counts[IOS], plain.ops[0].min_ns, plain.ops[0].max_ns = 1, 5, 5
    plain.ops[0].counts[TIME] = 5
    plain.ops[0].exp = ExpHistogram(70, [1], 0)
    queue = copy.deepcopy(plain)
    for op in queue.ops:
        op.inflight_ns = INT64_MAX // 2  # their sum leaves int64: Python's sum does not
    invalid = copy.deepcopy(plain)
    invalid.ops[2].counts[INVALID] = INT64_MAX // 2  # past what four could sum in int64
    timed = copy.deepcopy(plain)
    timed.ops[1].counts[IOS] = INT64_MAX // 10**6  # ok + failed, in ns, leaves int64
    unknown = copy.deepcopy(plain)
    unknown.ops[1].counts[IOS], unknown.ops[1].min_ns, unknown.ops[1].max_ns = 2, 3, 900
    unknown.ops[1].exp = None
    unknown.ops[1].histogram[3] = 2
    accs = [plain, queue, invalid, timed, unknown, plain]
    cols, fits = gather_fitting(accs, [(0,)] * len(accs))
    assert cols is not None and fits.all()
    assert metrics_layout(cols)[1].tolist() == [False, True, True, True, True, False]
    items = [(f"vol-{k}", "tenant", acc, k) for k, acc in enumerate(accs)]
    assert _encoder().encode(items) == [_oracle(*item) for item in items]


def test_a_window_not_a_minute_long_is_refused_as_by_monitoring_record() -> None:
    acc = WindowAcc(0, NS_PER_S)
    with pytest.raises(ValueError, match="1 m windows"):
        _encoder().encode([("vol", "tenant", acc, 0)])


def test_a_simulated_fleets_minutes_encode_as_fastavro_does() -> None:
    """Real minutes: 1 s windows of a fleet rolled up (dense exponential histograms,
    every op, busy and idle time), as the 1 m stage makes them. The fleet's events (from
    100 s before ``end_ns`` to 12 s after it) span three minutes whatever the clock says;
    ending at the time of the run, they spanned two about one run in eight (60 windows,
    and the test's premise failed)."""
    end_ns = time.time_ns() // MINUTE * MINUTE + 20 * NS_PER_S
    seconds = fleet_seconds(30, 20_000, 200.0, end_ns)
    tenant = {e.volume_id: e.tenant_id for e in seconds}
    parts: dict[tuple[str, int], list[WindowAcc]] = defaultdict(list)
    for e in seconds:
        parts[(e.volume_id, e.acc.window_start_ns // MINUTE * MINUTE)].append(e.acc)
    items = [(volume_id, tenant[volume_id], rollup(accs, MINUTE), len(accs))
             for (volume_id, _), accs in sorted(parts.items())]
    assert len(items) > 60 and {k for _, _, acc, _ in items for k, op in enumerate(acc.ops)
                                if op.counts[IOS]} == set(range(len(OPS)))
    assert any(0 < acc.busy_ns < MINUTE for _, _, acc, _ in items)
    cols = gather([acc for _, _, acc, _ in items], [(r,) for _, _, _, r in items])
    assert cols is not None and not metrics_layout(cols)[1].any()
    assert _encoder().encode(items) == [_oracle(*item) for item in items]
    assert _encoder().encode([]) == []


def test_a_schema_this_encoder_does_not_write_is_refused() -> None:
    schema = copy.deepcopy(default_schemas().current["VolumeMetrics1m"])
    check_layout(schema)
    schema["fields"][12], schema["fields"][11] = schema["fields"][11], schema["fields"][12]
    with pytest.raises(ValueError, match="monitoring_1m.avsc changed"):
        check_layout(schema)
