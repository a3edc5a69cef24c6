"""Hypothesis strategies shared by the tests of windows held as columns (columns.py,
packed.py): ops whose integers the columns hold (int64 values, trimmed exponential
histograms), bounded as each test needs."""

from __future__ import annotations

from hypothesis import strategies as st

from streams.core.counters import SLOTS_PER_OP
from streams.core.windows.acc import N_BINS, OpAcc
from streams.core.windows.exphist import ExpHistogram


def ints(most: int) -> st.SearchStrategy[int]:
    """Signed values, mostly small, up to ``most`` in size."""
    return st.one_of(st.just(0), st.integers(-5, 300), st.integers(-most, most))


def counts(most: int) -> st.SearchStrategy[int]:
    return st.one_of(st.just(0), st.integers(0, 3), st.integers(0, most))


def int64_op_accs(value_most: int, count_most: int, buckets: int, index: st.SearchStrategy[int]
            ) -> st.SearchStrategy[OpAcc]:
    """An op: values up to ``value_most``, counts up to ``count_most``, an exponential
    histogram of up to ``buckets`` buckets (trimmed: its ends are not zero) from an
    ``index``, or none, or only zeros: one that counts something whenever a latency is
    (min_ns), as the windows' are."""
    value, count = ints(value_most), counts(count_most)

    @st.composite
    def op(draw: st.DrawFn) -> OpAcc:
        buckets_of = draw(st.lists(count, max_size=buckets))
        if buckets_of:
            buckets_of[0] = buckets_of[-1] = draw(st.integers(1, count_most))
        min_ns = draw(st.one_of(st.none(), value))
        exp = ExpHistogram() if min_ns is None else draw(st.one_of(st.none(), st.just(
            ExpHistogram(draw(index) if buckets_of else 0, buckets_of,
                         draw(count) if buckets_of else draw(st.integers(1, 9))))))
        return OpAcc(draw(st.lists(value, min_size=SLOTS_PER_OP, max_size=SLOTS_PER_OP)),
                     min_ns, draw(st.one_of(st.none(), value)),
                     draw(st.lists(count, min_size=N_BINS, max_size=N_BINS)), draw(value), exp)

    return op()
