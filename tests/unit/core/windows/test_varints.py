"""zigzag_runs against fastavro's own encoding of each value, one at a time: Avro longs
(zigzag varints) and doubles, run bounds included."""

from __future__ import annotations

import io
import struct

import fastavro
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.events import INT64_MAX, INT64_MIN
from streams.core.windows.varints import zigzag_runs

VALUE = st.one_of(st.integers(-64, 63), st.integers(-(1 << 20), 1 << 20),
                  st.integers(INT64_MIN, INT64_MAX),
                  st.sampled_from([0, 63, 64, -64, -65, 8191, 8192, INT64_MIN, INT64_MAX]
                                  + [(1 << (7 * k)) // 2 - d for k in range(1, 10)
                                     for d in (0, 1)]))


def _long(value: int) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, "long", value)
    return buf.getvalue()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.tuples(VALUE, st.one_of(st.none(), st.floats())), max_size=12),
                min_size=1, max_size=6))
def test_runs_are_fastavros_longs_and_doubles(runs: list[list[tuple[int, float | None]]]
                                              ) -> None:
    """Each run: its values as fastavro writes longs, a double (Avro's 8 little-endian
    bytes) where a placeholder stands; the bounds cut the bytes run by run."""
    flat = [item for run in runs for item in run]
    values = np.array([v for v, _ in flat], dtype=np.int64)
    at = [k for k, (_, d) in enumerate(flat) if d is not None]
    doubles = [d for _, d in flat if d is not None]
    ends = np.cumsum([len(run) for run in runs])
    blob, bounds = zigzag_runs(values, ends, doubles, at)
    expected = [b"".join(struct.pack("<d", d) if d is not None else _long(v) for v, d in run)
                for run in runs]
    assert [blob[bounds[k]:bounds[k + 1]] for k in range(len(runs))] == expected
    assert bounds[0] == 0 and bounds[-1] == len(blob)
    assert zigzag_runs([v for v, _ in flat], ends, doubles, at) == (blob, bounds)  # a list


def test_no_values_make_empty_runs() -> None:
    assert zigzag_runs(np.zeros(0, dtype=np.int64), [0, 0]) == (b"", [0, 0, 0])


def test_a_value_outside_int64_is_an_overflow() -> None:
    with pytest.raises(OverflowError):
        zigzag_runs([INT64_MAX + 1], [1])
