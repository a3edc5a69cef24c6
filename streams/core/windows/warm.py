"""Compile (or load from numba's cache) the windows' compiled loops before a worker takes
records (kernels.py, varints.py).

Pure logic. numba compiles a kernel for the argument types of its first call, so
:func:`warm_up` calls each through the functions the accounting calls, on a few events:
the windows they make, those windows packed and read back (as the tables store and load
them), and their percentiles (as the encoders publish them). After a change a
compilation takes some seconds, once; from the cache ~0.3 s.
"""

from __future__ import annotations

import time

import numpy as np

from streams.core.batch import Columns
from streams.core.windows import packed, stats_codec, vector
from streams.core.windows.columns import WindowColumns

_S = 1_000_000_000


def warm_up() -> float:
    """Every kernel once, through the calls the accounting makes (the same argument
    types: the same compiled code); the seconds it took."""
    started = time.perf_counter()
    complete = np.array([5, _S + 3, 3 * _S + 7], dtype=np.int64) + (1 << 60)
    columns = Columns(("a", "b"), ("t", "t"), np.array([0, 1, 1], dtype=np.intp),
                      np.array([0, 1, 1], dtype=np.uint8), np.zeros(3, dtype=np.uint8),
                      np.full(3, 4096, dtype=np.int64),
                      complete - np.array([900, 2 * _S, 10], dtype=np.int64), complete)
    for cols in made_and_stored(columns, _S)[1]:
        stats_codec._percentiles(cols)
    return time.perf_counter() - started


def made_and_stored(columns: Columns, window_len_ns: int
                    ) -> tuple[vector.PartialColumns, tuple[WindowColumns, WindowColumns]]:
    """The windows of ``columns``' events, as made (vector.partial_columns) and as a
    table loads them (packed, then read back)."""
    made = vector.partial_columns(columns, window_len_ns, None)
    assert made is not None
    n = len(made.cols)
    cols = made.cols.with_extra(np.zeros((n, 2), dtype=np.int64))
    stored = packed.unpack_columns(packed.pack_columns(cols, ["t"] * n, [True] * n))
    assert stored is not None
    return made, (cols, stored[0])
