"""Windows as numpy columns (columns.py) against the WindowAcc objects they stand for:
gathered and made again unchanged, taken and joined in any order, and rollup parts summed
per window exactly as WindowAcc.merge merges them one by one."""

from __future__ import annotations

import functools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.events import OPS
from streams.core.times import NS_PER_S
from streams.core.windows.acc import WindowAcc
from streams.core.windows.columns import concat, gather, reduce_windows, to_accs
from tests.unit.core.windows.strategies import int64_op_accs

ops = functools.partial(int64_op_accs, 2**50, 2**30, 30, st.integers(-1, 1900))


@st.composite
def windows(draw: st.DrawFn) -> WindowAcc:
    start = draw(st.integers(0, 9 * 10**9)) * NS_PER_S
    bounds = sorted(set(draw(st.lists(st.integers(start, start + NS_PER_S), max_size=12))))
    return WindowAcc(start, NS_PER_S, draw(st.lists(ops(), min_size=len(OPS),
                                                    max_size=len(OPS))),
                     [bounds[i:i + 2] for i in range(0, len(bounds) - 1, 2)],
                     draw(st.integers(0, NS_PER_S)))


@settings(max_examples=150, deadline=None)
@given(st.lists(windows(), min_size=1, max_size=10), st.randoms(use_true_random=False))
def test_gathered_windows_come_back_taken_and_joined_in_any_order(
        accs: list[WindowAcc], rnd: object) -> None:
    cols = gather(accs, [(k,) for k in range(len(accs))])
    assert cols is not None
    assert to_accs(cols) == accs  # (trimmed histograms come back as they were)
    index = np.array(rnd.sample(range(len(accs)), len(accs)), dtype=np.intp)  # type: ignore[attr-defined]
    taken = cols.take_index(index)
    assert to_accs(taken) == [accs[k] for k in index.tolist()]
    assert taken.extra[:, 0].tolist() == index.tolist()
    whole = cols.take_index(np.arange(len(accs)))  # all of them in order: no copy made
    assert whole is cols and to_accs(whole) == accs
    keep = np.array([k % 2 == 0 for k in range(len(accs))])
    joined = concat([cols.take(keep), cols.take(~keep)])
    assert to_accs(joined) == [a for k, a in enumerate(accs) if k % 2 == 0] + [
        a for k, a in enumerate(accs) if k % 2]


@settings(max_examples=200, deadline=None)
@given(st.lists(windows(), min_size=1, max_size=12), st.data())
def test_parts_summed_as_columns_merge_as_the_objects_do(accs: list[WindowAcc],
                                                        data: st.DataObject) -> None:
    """Each group's windows summed at once, then merged into a window, is that window with
    each of them merged in turn (WindowAcc.merge)."""
    n_groups = data.draw(st.integers(1, len(accs)))
    group = [data.draw(st.integers(0, n_groups - 1)) for _ in accs]
    present = sorted(set(group))
    dense = np.array([present.index(g) for g in group], dtype=np.intp)
    cols = gather(accs, [()] * len(accs))
    assert cols is not None
    summed = reduce_windows(cols, dense, len(present))
    assert summed is not None
    for g, part in enumerate(to_accs(summed)):
        one_by_one, at_once = WindowAcc(0, 60 * NS_PER_S), WindowAcc(0, 60 * NS_PER_S)
        for acc, d in zip(accs, dense.tolist(), strict=True):
            if d == g:
                one_by_one.merge(acc)
        at_once.merge(part)
        assert at_once == one_by_one
