"""The radix orders (core/sorting.py) are numpy's stable argsort and lexsort, exactly."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from streams.core.sorting import stable_order, stable_order_by

KEYS = st.one_of(
    arrays(np.int64, st.integers(0, 300), elements=st.integers(0, 40)),  # many ties
    arrays(np.int64, st.integers(0, 300), elements=st.integers(0, 2**16 + 5)),
    arrays(np.int64, st.integers(0, 300), elements=st.integers(0, 2**63 - 1)),
    arrays(np.int64, st.integers(0, 300), elements=st.integers(-(2**63), 2**63 - 1)),
)


@settings(max_examples=300, deadline=None)
@given(KEYS)
def test_the_radix_order_is_the_stable_argsort(keys: np.ndarray) -> None:
    assert stable_order(keys).tolist() == np.argsort(keys, kind="stable").tolist()


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 200).flatmap(lambda n: st.tuples(
    arrays(np.int64, n, elements=st.integers(0, 50)),
    arrays(np.int64, n, elements=st.integers(0, 10**9)),
    st.sampled_from([10**9 + 1, 2**62]))))
def test_the_order_by_two_keys_is_lexsort(case: tuple[np.ndarray, np.ndarray, int]) -> None:
    major, minor, bound = case
    assert stable_order_by(major, minor, bound).tolist() == np.lexsort((minor, major)).tolist()
