"""Free heap given back: glibc's malloc_trim on a heap with freed chunks between live ones,
RSS read from /proc (what the operator sees)."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from streams.pipeline.heap import can_release, release_free_heap

PAGE = 4096
pytestmark = pytest.mark.skipif(not can_release(), reason="not glibc: nothing to call")


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE


def test_freed_chunks_between_live_ones_go_back_to_the_system() -> None:
    rng = random.Random(21)
    # ~200 MiB of chunks glibc serves from its heap (pymalloc takes <= 512 B), every
    # seventh kept: freed memory in the middle, which glibc keeps for reuse by itself
    chunks = [bytes(rng.randrange(600, 3000)) for _ in range(120_000)]
    kept = chunks[::7]
    release_free_heap()  # what came before this test
    before = rss_bytes()
    del chunks
    held = rss_bytes()
    assert release_free_heap()
    after = rss_bytes()
    freed = 120_000 * 1800 * 6 / 7  # bytes freed, about
    assert held - after > freed / 4, (before, held, after)
    assert after < held
    assert kept  # alive to the end: the heap stays fragmented


_SERVED = """
import ctypes, sys
import numpy as np
from streams.pipeline.heap import keep_heap_for_reuse

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "kept":
    assert keep_heap_for_reuse()
columns = np.ones(3 << 20)  # 24 MiB, as a big unit's column
print(libc.mallinfo2().hblkhd)  # bytes glibc holds in mmapped chunks
"""


def test_a_big_array_comes_from_the_heap_once_it_is_kept_for_reuse() -> None:
    """What keep_heap_for_reuse is for: by glibc's defaults a 24 MiB array is a fresh
    mmap (given back when freed, its pages faulted in and zeroed again next time); kept,
    it comes from the heap (glibc's own count of mmapped bytes, mallinfo2)."""
    def mmapped(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", _SERVED, mode], check=True,
                             capture_output=True, text=True, cwd=Path(__file__).parents[3])
        return int(out.stdout)
    assert mmapped("default") >= 24 << 20
    assert mmapped("kept") < 1 << 20
