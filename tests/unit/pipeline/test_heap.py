"""Free heap given back: glibc's malloc_trim on a heap with freed chunks between live ones,
RSS read from /proc (what the operator sees)."""

from __future__ import annotations

import random
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
