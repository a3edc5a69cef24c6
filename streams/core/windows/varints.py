"""Many runs of integers as zigzag LEB128 varints at once, with numpy.

Pure logic. Both the Avro binary encoding (longs, ints, union branches, block counts) and
the packed stored windows (packed.py) write integers as the zigzag varint of their value:
1 byte up to 63, 2 up to 8191, ..., 10 for the int64 extremes. Encoded one value at a time
in Python that cost ~0.2 µs a value, and a window has hundreds (mostly histogram counts).
:func:`zigzag_runs` encodes the runs of many records in one numpy pass over all of their
values (docs/performance.md, session 15).
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

_LITTLE_F8 = np.dtype("<f8")


@numba.njit(cache=True, nogil=True)
def _zigzag_kernel(values: np.ndarray, at: np.ndarray, double_bits: np.ndarray,
                   ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bytes and run bounds of :func:`zigzag_runs`: one pass sizes every value, one
    writes them (a double's 8 bytes are its IEEE 754 bits, least significant first)."""
    n = len(values)
    sizes = np.empty(n, dtype=np.int64)
    for i in range(n):
        z = np.uint64((values[i] << 1) ^ (values[i] >> 63))
        size = 1
        while z > np.uint64(0x7F):
            z >>= np.uint64(7)
            size += 1
        sizes[i] = size
    for k in range(len(at)):
        sizes[at[k]] = -8  # a placeholder: 8 bytes of a double
    stops = np.empty(n, dtype=np.int64)
    total = 0
    for i in range(n):
        total += abs(sizes[i])
        stops[i] = total
    out = np.empty(total, dtype=np.uint8)
    for i in range(n):
        if sizes[i] < 0:
            continue
        z = np.uint64((values[i] << 1) ^ (values[i] >> 63))
        p = stops[i] - sizes[i]
        while z > np.uint64(0x7F):
            out[p] = np.uint8((z & np.uint64(0x7F)) | np.uint64(0x80))
            z >>= np.uint64(7)
            p += 1
        out[p] = np.uint8(z)
    for k in range(len(at)):
        bits, p = double_bits[k], stops[at[k]] - 8
        for b in range(8):
            out[p + b] = np.uint8(bits & np.uint64(0xFF))
            bits >>= np.uint64(8)
    bounds = np.zeros(len(ends) + 1, dtype=np.int64)
    for k in range(len(ends)):
        if ends[k] > 0:
            bounds[k + 1] = stops[ends[k] - 1]
    return out, bounds


def zigzag_runs(values: Sequence[int] | np.ndarray, ends: Sequence[int] | np.ndarray,
                doubles: Sequence[float] | np.ndarray = (), at: Sequence[int] | np.ndarray = ()
                ) -> tuple[bytes, list[int]]:
    """The varints of ``values`` as one byte string, and the byte bounds of the runs
    (run k: values [ends[k - 1], ends[k]), bytes [bounds[k], bounds[k + 1])); ``values``
    may be an int64 array. The values
    at the indexes ``at`` are placeholders for ``doubles``, written as 8 bytes (IEEE 754,
    little endian: Avro's double). A value outside int64 raises OverflowError."""
    if not len(values):
        return b"", [0] * (len(ends) + 1)
    v = (values if isinstance(values, np.ndarray)
         else np.fromiter(values, np.int64, len(values)))  # an array: int64 already
    out, bounds = _zigzag_kernel(v.astype(np.int64, copy=False),
                                 np.asarray(at, dtype=np.intp),
                                 np.asarray(doubles, dtype=_LITTLE_F8).view(np.uint64),
                                 np.asarray(ends, dtype=np.intp))
    return out.tobytes(), bounds.tolist()
