"""The compiled loops (core/windows/kernels.py) against their numpy twins in vector.py,
array for array and dtype for dtype, on steps of many volumes and events: statuses that
count or not, zero latencies, requests cut at a window's end or covering windows whole,
pieces that touch or overlap, starts in any order (past the insertion sort's budget
too), the revision horizon's clipping; and the preconditions under which a kernel leaves
the step to its twin (a request over more windows than its table takes, a sparse key
table, a sum that could leave int64). The twins themselves are held to the brute-force
oracles by test_vector and test_columnar, which run through the kernels too."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.core.batch import Columns
from streams.core.codec import default_schemas
from streams.core.events import INT64_MAX, STATUS_CODE
from streams.core.times import NS_PER_S
from streams.core.windows import kernels, varints, vector
from streams.core.windows.acc import HISTOGRAM_BOUNDS_NS
from streams.core.windows.exphist import bucket_indexes, upper_bounds
from streams.core.windows.metrics_codec import MetricsEncoder
from streams.core.windows.stats_codec import WindowStatsEncoder
from streams.core.windows.warm import made_and_stored, warm_up

T0 = 1_700_000_000 * NS_PER_S
L = NS_PER_S
# the 20-bin and the exponential histograms' bounds below a window, and their neighbours
EDGES = np.array(sorted({b + d for b in [*HISTOGRAM_BOUNDS_NS, *upper_bounds().tolist()]
                         for d in (-1, 0, 1) if 0 < b + d < L}), dtype=np.int64)


def _columns(volume: np.ndarray, op: np.ndarray, status: np.ndarray, nbytes: np.ndarray,
             submit: np.ndarray, complete: np.ndarray) -> Columns:
    n_volumes = int(volume.max()) + 1 if len(volume) else 0
    return Columns(tuple(f"vol-{v}" for v in range(n_volumes)), ("t",) * n_volumes,
                   volume.astype(np.intp), op.astype(np.uint8), status.astype(np.uint8),
                   nbytes.astype(np.int64), submit.astype(np.int64),
                   complete.astype(np.int64))


@st.composite
def steps(draw: Any) -> Columns:
    """A step's events: a few volumes, most events on one (long runs per window), in an
    order that mixes completion order, shuffles and reversals; a few requests cover
    windows whole."""
    n = draw(st.integers(1, 400))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    volumes = draw(st.integers(1, 6))
    volume = np.minimum(rng.zipf(1.5, n) - 1, volumes - 1)
    complete = T0 + rng.integers(0, draw(st.sampled_from([L // 10, 2 * L, 5 * L])), n)
    latency = np.where(rng.random(n) < 0.1, 0, rng.integers(1, L, n))
    long = rng.random(n) < 0.02  # a request over several windows, some covered whole
    latency[long] = rng.integers(L, 6 * L, int(long.sum()))
    edges = rng.random(n) < 0.3  # on a histogram bound, or one either side of it
    latency[edges] = rng.choice(EDGES, int(edges.sum()))
    # some requests start where another ended (touching pieces join: one interval)
    touching = np.flatnonzero(rng.random(n) < 0.1)
    partner = rng.integers(0, n, len(touching))
    complete[touching] = complete[partner] + latency[touching]
    status = rng.choice([STATUS_CODE["ok"]] * 6 + [STATUS_CODE["failed"],
                                                   STATUS_CODE["invalid"]], n)
    op = rng.integers(0, 4, n)
    nbytes = rng.integers(0, 1 << 22, n)
    order = draw(st.sampled_from(["complete", "shuffled", "reversed"]))
    at = {"complete": np.argsort(complete, kind="stable"), "shuffled": rng.permutation(n),
          "reversed": np.argsort(-(complete - latency), kind="stable")}[order]
    return _columns(volume[at], op[at], status[at], nbytes[at], (complete - latency)[at],
                    complete[at])


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b))


def _twin_inflight(columns: Columns, from_ns: int | None, own_len_ns: int,
                   monkeypatch: pytest.MonkeyPatch) -> Any:
    with monkeypatch.context() as m:
        m.setattr(vector, "_compiled_inflight_columns", lambda *args: None)
        return vector._inflight_columns(columns, L, from_ns, own_len_ns)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(columns=steps())
def test_the_completions_kernel_equals_its_numpy_twin(columns: Columns) -> None:
    window = np.floor_divide(columns.complete_ns, L)
    latency = vector.latencies_ns(columns)
    compiled = vector._compiled_completion_columns(columns, window, latency)
    assert compiled is not None  # within its preconditions: the kernel ran
    assert _equal(compiled, vector._numpy_completion_columns(columns, window, latency))


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(columns=steps(), clip=st.sampled_from([None, 0, L // 2, L]),
       own=st.sampled_from([L, 60 * L]))
def test_the_inflight_kernel_equals_its_numpy_twin(
    columns: Columns, clip: int | None, own: int, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In-flight time per (volume, window, op) and the busy intervals per (volume,
    window), with the horizon's clipping (``from_ns``) applied first."""
    from_ns = None if clip is None else T0 + clip
    requests = vector._requests(columns, L, from_ns, own)
    if len(requests[0]):
        assert vector._compiled_inflight_columns(columns, requests, L) is not None
    assert _equal(vector._inflight_columns(columns, L, from_ns, own),
                  _twin_inflight(columns, from_ns, own, monkeypatch))


def test_a_pair_far_from_in_order_is_sorted_past_the_insertion_budget(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Thousands of pieces of one (volume, window) whose starts run backwards: the
    insertion sort gives up within its budget and the rest is sorted whole."""
    n = 5_000
    complete = T0 + 900_000_000 - np.arange(n) * 10  # later events start earlier
    latency = 1_000 + np.arange(n) * 150
    columns = _columns(np.zeros(n), np.arange(n) % 4, np.zeros(n), np.full(n, 512),
                       complete - latency, complete)
    compiled = vector._inflight_columns(columns, L, None, L)
    assert _equal(compiled, _twin_inflight(columns, None, L, monkeypatch))
    lo = np.array([10, 0, 3, 8, 1], dtype=np.int64)
    hi = lo + 2
    kernels._sort_by_start(lo, hi, 0, 5)
    assert lo.tolist() == [0, 1, 3, 8, 10] and (hi - lo).tolist() == [2] * 5


def test_the_kernels_leave_to_their_twins_what_their_preconditions_exclude(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A request over more windows than the kernel's table takes, a key table sparser
    than the events, a byte count that could leave int64: the kernel declines, the twin
    answers (and equals what the whole function returns)."""
    def one(latency: int, nbytes: int, volumes: int = 1) -> Columns:
        v = np.arange(volumes)
        complete = np.full(volumes, T0 + 5 * L)
        return _columns(v, np.zeros(volumes), np.zeros(volumes), np.full(volumes, nbytes),
                        complete - latency, complete)

    long = one(100_000 * L, 512)  # a piece a window: more than the table takes
    assert vector._compiled_inflight_columns(long, vector._requests(long, L, None, L), L) \
        is None
    assert _equal(vector._inflight_columns(long, L, None, L),
                  _twin_inflight(long, None, L, monkeypatch))
    huge = one(10, INT64_MAX, volumes=2)
    window = np.floor_divide(huge.complete_ns, L)
    assert vector._compiled_completion_columns(huge, window,
                                               vector.latencies_ns(huge)) is None
    sparse = _columns(np.array([0, kernels.TABLE_FLOOR]), np.zeros(2), np.zeros(2),
                      np.zeros(2), np.array([T0, T0 + 3600 * L]),
                      np.array([T0 + 5, T0 + 3600 * L + 5]))
    window = np.floor_divide(sparse.complete_ns, L)
    assert vector._compiled_completion_columns(sparse, window,
                                               vector.latencies_ns(sparse)) is None
    assert _equal(vector._completion_columns(sparse, window, vector.latencies_ns(sparse)),
                  vector._numpy_completion_columns(sparse, window,
                                                   vector.latencies_ns(sparse)))


def test_the_completions_kernel_buckets_every_exponential_bound_as_exphist() -> None:
    """Every bound of the exponential histogram and its neighbours, up to 2**63 - 1
    (where a float's logarithm is off most): each latency alone in its group, so its
    group's histogram is its bucket, which must be exphist.bucket_indexes'."""
    bounds = upper_bounds().tolist()
    latency = np.array(sorted({b + d for b in bounds for d in (-1, 0, 1)
                               if 0 < b + d <= INT64_MAX}), dtype=np.uint64)
    n = len(latency)
    out = kernels.completions(np.arange(n, dtype=np.int64), n, np.zeros(n, dtype=np.uint8),
                              np.zeros(n, dtype=np.int64), latency)
    offsets, zeros, lens, flat = out[6:]
    assert offsets.tolist() == bucket_indexes(latency).tolist()
    assert lens.tolist() == [1] * n and flat.tolist() == [1] * n and not zeros.any()


def test_warm_up_compiles_the_code_the_accounting_runs() -> None:
    """After warm_up, a step of many volumes compiles nothing new: its windows, their
    packed form read back (as the tables store and load them), and both encoders'
    records of them (a worker's first step would pay for a compilation)."""
    warm_up()
    dispatchers = (kernels._completion_kernel, kernels._inflight_kernel,
                   kernels.exp_tokens, kernels.percentiles, varints._zigzag_kernel)
    compiled = [list(d.signatures) for d in dispatchers]
    assert all(len(s) == 1 for s in compiled)
    rng = np.random.default_rng(7)
    n = 2_000
    complete = T0 + rng.integers(0, 3 * L, n)
    latency = rng.integers(0, L // 2, n)
    columns = _columns(rng.integers(0, 50, n), rng.integers(0, 4, n),
                       rng.integers(0, 3, n), rng.integers(0, 1 << 20, n),
                       complete - latency, complete)
    for length, encoder in ((L, WindowStatsEncoder), (60 * L, MetricsEncoder)):
        made, both = made_and_stored(columns, length)
        names = [(f"vol-{v}", "t") for v in made.volume.tolist()]
        for window_cols in both:
            encoder.of(default_schemas()).encode_columns(window_cols, names)
    assert [list(d.signatures) for d in dispatchers] == compiled


@pytest.mark.parametrize("field", ["op", "status", "volume"])
def test_the_kernels_never_index_past_their_tables(field: str) -> None:
    """The kernels do not check bounds: an op, status or volume index outside the range
    a validated event has sends the step to the numpy twins (which check theirs)."""
    complete = np.full(3, T0 + 5 * L)
    values = {"op": np.zeros(3), "status": np.zeros(3), "volume": np.array([0, 1, 1])}
    values[field] = values[field].copy()
    values[field][1] = {"op": 4, "status": 3, "volume": 2}[field]
    columns = Columns(("a", "b"), ("t", "t"), values["volume"].astype(np.intp),
                      values["op"].astype(np.uint8), values["status"].astype(np.uint8),
                      np.full(3, 512, dtype=np.int64), complete - 100, complete)
    window = np.floor_divide(columns.complete_ns, L)
    assert vector._compiled_completion_columns(columns, window,
                                               vector.latencies_ns(columns)) is None
    if field == "status":  # numpy's own bounds check, before any kernel
        with pytest.raises(IndexError):
            vector._requests(columns, L, None, L)
    else:
        assert vector._compiled_inflight_columns(
            columns, vector._requests(columns, L, None, L), L) is None
