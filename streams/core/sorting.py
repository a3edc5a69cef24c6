"""Stable orders of integer keys by radix passes.

Pure logic. numpy's stable argsort sorts 16-bit integers by radix, in linear time, and
wider ones by timsort: ~12x slower on the step's 180,000 events (15 ms against 1.2 ms).
The windows, hours and steps order events and pieces by dense integer keys many times a
step, so :func:`stable_order` sorts non-negative int64 keys 16 bits at a time, least
significant first (each pass stable: together, the stable order of the whole keys).
"""

from __future__ import annotations

import numpy as np

_DIGIT = np.uint64(0xFFFF)


def stable_order(keys: np.ndarray) -> np.ndarray:
    """The stable order that sorts ``keys`` (integers), as np.argsort(kind="stable")."""
    if len(keys) == 0:
        return np.empty(0, dtype=np.intp)
    low, high = int(keys.min()), int(keys.max())
    if low < 0:
        return np.argsort(keys, kind="stable")
    if high < 1 << 16:
        return np.argsort(keys.astype(np.uint16), kind="stable")
    wide = keys.astype(np.uint64)
    order = np.argsort((wide & _DIGIT).astype(np.uint16), kind="stable")
    shift = 16
    while high >> shift:
        digit = ((wide[order] >> np.uint64(shift)) & _DIGIT).astype(np.uint16)
        order = order[np.argsort(digit, kind="stable")]
        shift += 16
    return order


def stable_order_by(major: np.ndarray, minor: np.ndarray, minor_bound: int) -> np.ndarray:
    """The stable order by ``major`` then ``minor`` (np.lexsort((minor, major))), where
    both are non-negative and ``minor`` is below ``minor_bound``: one key when it fits in
    63 bits."""
    if len(major) and int(major.min()) >= 0 and (int(major.max()) + 1) * minor_bound < 1 << 63:
        return stable_order(major.astype(np.int64) * minor_bound + minor)
    return np.lexsort((minor, major))


def first_and_last(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each distinct key of ``keys`` first and last occurs, in the order of the
    distinct keys (np.unique's)."""
    first = np.unique(keys, return_index=True)[1]
    last = len(keys) - 1 - np.unique(keys[::-1], return_index=True)[1]
    return first, last
