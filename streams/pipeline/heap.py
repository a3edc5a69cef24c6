"""Freed heap memory given back to the system: glibc's ``malloc_trim``, on a timer.

The accounting step frees most of what it allocates (records' bytes, columns, packed
windows); glibc keeps what is freed in its arenas for reuse, and only the free top of the
main heap goes back by itself. So the worker's RSS held free memory that varied from run
to run: at 100,000 volumes (the bench's (f)) 32 MiB of a worker's 259 MiB was free heap,
and two runs of the same code measured 229 and 259 MiB. ``malloc_trim(0)`` returns every
free page (~10-30 ms on such a heap; docs/performance.md, session 21).

Not glibc (musl, macOS): nothing to call, and the timer is not started.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from functools import cache


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` of this process, or None where there is none."""
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim  # type: ignore[no-any-return]


def can_release() -> bool:
    """Whether this process's C library can give free heap back (glibc)."""
    return _malloc_trim() is not None


def release_free_heap() -> bool:
    """Give the free pages of every malloc arena back to the system; whether any were."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
