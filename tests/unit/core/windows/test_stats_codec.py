"""The WindowStats records encoded many at once (stats_codec.py) are, byte for byte, what
fastavro makes of :func:`window_stats`: on random windows (int64 extremes, unknown and
untrimmed exponential histograms, odd legacy histograms) and on a simulated fleet's."""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.batch import Columns
from streams.core.codec import default_schemas
from streams.core.counters import SLOTS_PER_OP
from streams.core.events import INT64_MAX, INT64_MIN, OP_CODE, OPS, STATUS_CODE
from streams.core.times import NS_PER_S
from streams.core.windows import stats_codec
from streams.core.windows.acc import N_BINS, PERCENTILES, OpAcc, WindowAcc, window_stats
from streams.core.windows.book import Emission, WindowBook, WindowSettings
from streams.core.windows.columns import gather, gather_fitting
from streams.core.windows.exphist import MAX_INDEX, MIN_INDEX, ExpHistogram
from streams.core.windows.stats_codec import WindowStatsEncoder, check_layout, stats_layout
from streams.tools.bench.workloads import simulated_events

LONG = st.one_of(st.just(0), st.integers(-3, 300), st.integers(0, 2**40),
                 st.integers(INT64_MIN, INT64_MAX), st.sampled_from([INT64_MIN, INT64_MAX]))
POSITIVE = st.one_of(st.integers(1, 300), st.integers(1, 2**50), st.just(INT64_MAX))
MAYBE = st.one_of(st.none(), LONG)
COUNT = st.one_of(st.integers(0, 3), st.integers(0, 2**40))
IDS = st.text(min_size=1, max_size=20)  # any text: the encoding is UTF-8


@st.composite
def exp_histograms(draw: st.DrawFn) -> ExpHistogram | None:
    """Unknown (None), empty, or any counts: zeros at either end (untrimmed) too."""
    if draw(st.integers(0, 5)) == 0:
        return None
    counts = draw(st.lists(COUNT, max_size=80))
    return ExpHistogram(draw(st.integers(MIN_INDEX, MAX_INDEX + 1 - max(1, len(counts)))),
                        counts, draw(COUNT))


@st.composite
def op_accs(draw: st.DrawFn, bins: int) -> OpAcc:
    """As acc.OpAcc holds them: a latency (min and max) exactly when the exponential
    histogram counts one; with it unknown, anything."""
    exp = draw(exp_histograms())
    timed = st.none() if exp is not None and exp.total == 0 else LONG
    return OpAcc(draw(st.lists(LONG, min_size=SLOTS_PER_OP, max_size=SLOTS_PER_OP)),
                 draw(MAYBE if exp is None else timed), draw(MAYBE if exp is None else timed),
                 draw(st.lists(COUNT, min_size=bins, max_size=bins)), draw(LONG), exp)


@st.composite
def window_accs(draw: st.DrawFn) -> WindowAcc:
    bins = draw(st.sampled_from([N_BINS, N_BINS, 0, 3]))
    ops = draw(st.lists(op_accs(bins), min_size=len(OPS), max_size=len(OPS)))
    for at in draw(st.sets(st.integers(0, len(OPS) - 1))):  # quiet: a constant run
        ops[at] = OpAcc([0] * SLOTS_PER_OP, None, None, [0] * bins, 0,
                        draw(st.sampled_from([None, ExpHistogram()])))
    length = draw(POSITIVE)
    busy = draw(st.one_of(st.just(0), st.just(length), st.integers(0, length)))
    return WindowAcc(draw(LONG), length, ops, [], busy)  # idle = length - busy: an int64


def _oracle(volume_id: str, tenant_id: str, acc: WindowAcc, revision: int) -> bytes:
    record = window_stats(volume_id, tenant_id, acc)
    record["revision"] = revision
    return default_schemas().encode("WindowStats", record)


def _encoder() -> WindowStatsEncoder:
    return WindowStatsEncoder.of(default_schemas())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(IDS, IDS, window_accs(), st.integers(0, 2**31 - 1)), min_size=1,
                max_size=6))
def test_records_are_fastavros_bytes_of_window_stats(
        items: list[tuple[str, str, WindowAcc, int]]) -> None:
    assert _encoder().encode(items) == [_oracle(*item) for item in items]


# What the columns hold: int64 values, known histograms of counts below 2**32.
SMALL_COUNT = st.one_of(st.integers(0, 3), st.integers(0, 2**31))
INT64_LONG = st.one_of(st.just(0), st.integers(-3, 300), st.integers(INT64_MIN // 4,
                                                                     INT64_MAX // 4))


@st.composite
def columnar_ops(draw: st.DrawFn) -> OpAcc:
    """An op as the columns hold it: a known exponential histogram, int64 values."""
    counts = draw(st.lists(SMALL_COUNT, max_size=60))
    # buckets up to 2015: their representatives (2**((2i + 1) / 64)) are within int64
    exp = ExpHistogram(draw(st.integers(MIN_INDEX, 2016 - max(1, len(counts)))),
                       counts, draw(SMALL_COUNT))
    timed = st.none() if exp.total == 0 else st.one_of(st.none(), INT64_LONG)
    return OpAcc(draw(st.lists(INT64_LONG, min_size=SLOTS_PER_OP, max_size=SLOTS_PER_OP)),
                 draw(timed), draw(timed),
                 draw(st.lists(SMALL_COUNT, min_size=N_BINS, max_size=N_BINS)),
                 draw(INT64_LONG), exp)


@st.composite
def columnar_windows(draw: st.DrawFn) -> WindowAcc:
    ops = draw(st.lists(columnar_ops(), min_size=len(OPS), max_size=len(OPS)))
    for at in draw(st.sets(st.integers(0, len(OPS) - 1))):
        ops[at] = WindowAcc.empty(0, 1).ops[at]
    length = draw(st.one_of(st.just(NS_PER_S), POSITIVE))
    busy = draw(st.one_of(st.just(0), st.just(length), st.integers(0, length)))
    return WindowAcc(draw(INT64_LONG), length, ops, [], busy)


@settings(max_examples=300, deadline=None)
@given(st.lists(columnar_windows(), min_size=1, max_size=8))
def test_percentiles_of_columns_are_each_percentiles(accs: list[WindowAcc]) -> None:
    """Every window here is laid out by the columns (none odd), and their percentiles
    are ExpHistogram.percentile_ns's, one by one."""
    cols = gather(accs, [(0,)] * len(accs))
    assert cols is not None
    _, odd = stats_layout(cols)
    assert not odd.any()
    items = [("v", "t", acc, k) for k, acc in enumerate(accs)]
    assert _encoder().encode(items) == [_oracle(*item) for item in items]
    for acc in accs:
        for op in acc.ops:
            assert op.exp is not None
            record = window_stats("v", "t", acc)
            assert [record[f"{name}_{OPS[acc.ops.index(op)]}_latency_ns"]
                    for name, _, _ in PERCENTILES] == [
                op.exp.percentile_ns(num, den, op.min_ns, op.max_ns)
                for _, num, den in PERCENTILES]


def test_windows_the_columns_cannot_hold_are_made_one_by_one() -> None:
    """A window with an unknown histogram, or counts past 2**32, among columnar ones: each
    record is still fastavro's, and the others are made from the columns."""
    plain = WindowAcc(0, NS_PER_S)
    plain.ops[0].counts[0], plain.ops[0].min_ns, plain.ops[0].max_ns = 1, 5, 5
    plain.ops[0].exp = ExpHistogram(70, [1], 0)
    unknown = WindowAcc(NS_PER_S, NS_PER_S)
    unknown.ops[1].counts[0], unknown.ops[1].min_ns, unknown.ops[1].max_ns = 2, 3, 900
    unknown.ops[1].exp = None
    unknown.ops[1].histogram[3] = 2
    huge = WindowAcc(2 * NS_PER_S, NS_PER_S)
    huge.ops[0].counts[0], huge.ops[0].min_ns, huge.ops[0].max_ns = 1, 5, 5
    huge.ops[0].exp = ExpHistogram(70, [2**40], 0)
    beyond = WindowAcc(3 * NS_PER_S, NS_PER_S)
    beyond.ops[0].counts[1] = 2**64  # outside int64: not gathered; fastavro raises
    accs = [plain, unknown, huge, plain]
    cols, fits = gather_fitting(accs, [(0,)] * len(accs))
    assert cols is not None and fits.all()
    assert stats_layout(cols)[1].tolist() == [False, True, True, False]
    items = [("v", "t", acc, 1) for acc in accs]
    assert _encoder().encode(items) == [_oracle(*item) for item in items]
    cols, fits = gather_fitting([plain, beyond], [(0,), (0,)])
    assert cols is not None and fits.tolist() == [True, False]


def fleet_seconds(volumes: int, count: int, rate: float, end_ns: int | None = None
                  ) -> list[Emission]:
    """The closed 1 s windows of ``count`` events of a simulated fleet of ``volumes`` at
    ``rate`` events/s ending about ``end_ns`` (None: now), made by a WindowBook."""
    events = simulated_events(volumes, count, rate, time.time_ns() if end_ns is None else end_ns)
    names = sorted({e.volume_id for e in events})
    index = {v: i for i, v in enumerate(names)}
    tenant = {e.volume_id: e.tenant_id for e in events}
    columns = Columns(
        tuple(names), tuple(tenant[v] for v in names),
        np.array([index[e.volume_id] for e in events], dtype=np.intp),
        np.array([OP_CODE[e.op] for e in events], dtype=np.uint8),
        np.array([STATUS_CODE[e.status] for e in events], dtype=np.uint8),
        np.array([e.bytes for e in events], dtype=np.int64),
        np.array([e.submit_ns for e in events], dtype=np.int64),
        np.array([e.complete_ns for e in events], dtype=np.int64))
    book = WindowBook(WindowSettings(), {})
    book.add_columns(columns, None)
    return book.close_for(int(columns.complete_ns.max()) + 10**10)


def test_a_simulated_fleets_windows_encode_as_fastavro_does() -> None:
    """Real windows: dense exponential histograms, every op, late ones revised."""
    emitted = fleet_seconds(40, 6_000, 3_000.0)
    assert len(emitted) > 40 and any(op.exp and len(op.exp.counts) > 20
                                     for e in emitted for op in e.acc.ops)
    assert any(op.is_quiet() for e in emitted for op in e.acc.ops)
    items = [(e.volume_id, e.tenant_id, e.acc, e.revision) for e in emitted]
    assert _encoder().encode(items) == [_oracle(*item) for item in items]
    assert _encoder().encode([]) == []


def test_the_kept_prefixes_stay_bounded_and_records_stay_right(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """More volumes than the encoder keeps prefixes of: each record is still fastavro's."""
    monkeypatch.setattr(stats_codec, "PREFIXES_MAX", 3)
    encoder = _encoder()
    for n in range(12):
        acc = WindowAcc(n * NS_PER_S, NS_PER_S)
        acc.ops[n % len(OPS)].counts[0] = n
        items = [(f"vol-{n % 5}", f"tenant-{n % 2}", acc, n)]
        assert encoder.encode(items) == [_oracle(*item) for item in items]
        assert len(encoder._prefixes) <= 3


def test_a_value_past_int64_is_an_error_as_with_fastavro() -> None:
    acc = WindowAcc(0, 10**9)
    acc.ops[0].counts[0] = 2**63
    with pytest.raises(OverflowError):
        _encoder().encode([("v", "t", acc, 0)])


def test_a_schema_this_encoder_does_not_write_is_refused() -> None:
    schema = copy.deepcopy(default_schemas().current["WindowStats"])
    check_layout(schema)
    schema["fields"][5], schema["fields"][6] = schema["fields"][6], schema["fields"][5]
    with pytest.raises(ValueError, match="window_stats.avsc changed .field 5"):
        check_layout(schema)
    schema["fields"] = schema["fields"][:-1]
    with pytest.raises(ValueError, match="must write it"):
        check_layout(schema)
