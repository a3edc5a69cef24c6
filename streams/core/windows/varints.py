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

import numpy as np

# a zigzag value needs k + 1 bytes iff it is >= the k-th of these (k = 1..9)
_STEPS = np.array([1 << (7 * k) for k in range(1, 10)], dtype=np.uint64)
_LOW7, _SEVEN = np.uint64(0x7F), np.uint64(7)
_LITTLE_F8 = np.dtype("<f8")


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
    zigzag = v << 1
    zigzag ^= v >> 63
    zigzag = zigzag.view(np.uint64)
    # Most values (counts, quiet fields) take one byte: sizes and bytes past the first are
    # worked out for the others only (~30 % less time than for all; session 27).
    multi = np.flatnonzero(zigzag > _LOW7)
    sizes = np.ones(len(v), dtype=np.intp)
    if len(multi):
        sizes[multi] += np.searchsorted(_STEPS, zigzag[multi], side="right")
    where = np.array(at, dtype=np.intp)
    sizes[where] = 8
    stops = np.cumsum(sizes)
    starts = stops - sizes
    out = np.empty(int(stops[-1]), dtype=np.uint8)
    out[starts] = zigzag.astype(np.uint8) & 0x7F  # a one-byte value whole
    if len(multi):
        z, at_byte, left = zigzag[multi], starts[multi], sizes[multi]
        while True:  # the next byte of every value not written whole yet: 7 bits, 0x80 if more
            more = left > 1
            out[at_byte] = (z & _LOW7).astype(np.uint8) | (more.view(np.uint8) << 7)
            if not more.any():
                break
            z, at_byte, left = z[more] >> _SEVEN, at_byte[more] + 1, left[more] - 1
    if len(where):  # the doubles over their placeholders' 8 bytes
        out[starts[where][:, None] + np.arange(8)] = np.array(
            doubles, dtype=_LITTLE_F8).view(np.uint8).reshape(-1, 8)
    ends_at = np.array(ends, dtype=np.intp)
    bounds = np.zeros(len(ends) + 1, dtype=np.int64)
    bounds[1:] = np.where(ends_at > 0, stops[np.maximum(ends_at - 1, 0)], 0)
    return out.tobytes(), bounds.tolist()
