"""Freed heap memory given back to the system: glibc's ``malloc_trim``, on a timer; and
between two of those, freed arrays reused rather than faulted in again.

The accounting step frees most of what it allocates (records' bytes, columns, packed
windows); glibc keeps what is freed in its arenas for reuse, and only the free top of the
main heap goes back by itself. So the worker's RSS held free memory that varied from run
to run: at 100,000 volumes (the bench's (f)) 32 MiB of a worker's 259 MiB was free heap,
and two runs of the same code measured 229 and 259 MiB. ``malloc_trim(0)`` returns every
free page (~10-30 ms on such a heap; docs/performance.md, session 21).

Not glibc (musl, macOS): nothing to call, and the timer is not started.

Giving pages back has a price: the next allocation of that memory faults fresh pages in,
and the kernel zeroes each one. A unit's columns are arrays of megabytes, made and freed
many times a step; glibc served each from a fresh ``mmap`` (past its mmap threshold) and
numpy asked for transparent huge pages on every array of 4 MiB or more, so a busy worker
spent ~12 % of its CPU zeroing pages (perf: ``clear_page_erms`` 9.7 %, the kernel 20.9 %
of (c); docs/performance.md, session 25). :func:`keep_heap_for_reuse` makes glibc serve
arrays up to its largest mmap threshold (32 MiB) from the heap and not trim it on free,
and numpy not ask for huge pages (a 2 MiB page is zeroed whole however little of it an
array uses): the kernel's share fell to ~11 %, page zeroing to 0.03 %, with the timer
(pipeline/timers.py) still giving the free pages back every 2 s.
"""

from __future__ import annotations

import ctypes
import importlib
from collections.abc import Callable
from functools import cache

# glibc's mallopt parameters (malloc.h) and the largest mmap threshold it takes on 64 bits
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 << 20
_TRIM_THRESHOLD = 1 << 30  # free() never trims: the timer does


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


def keep_heap_for_reuse() -> bool:
    """Arrays up to 32 MiB from glibc's heap, freed memory kept there until the next
    release, no transparent huge pages asked for by numpy (see the module doc); whether
    glibc took the settings (False: not glibc, nothing changed but numpy's)."""
    set_madvise = getattr(importlib.import_module("numpy._core.multiarray"),
                          "_set_madvise_hugepage", None)
    if set_madvise is not None:
        set_madvise(False)
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
