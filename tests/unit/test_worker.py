"""streams/worker.py's debugging aid: IOACCT_DEBUG_TRACEMALLOC_FRAMES > 0 makes SIGUSR1
log the largest allocations by traceback (docs/performance.md, "What a volume costs")."""

from __future__ import annotations

import logging
import tracemalloc

import pytest

from streams.config import Settings
from streams.worker import log_tracemalloc_top


def _hold_blocks() -> list[bytearray]:
    return [bytearray(4096) for _ in range(2000)]  # 8 MB from one line: the top entry


def test_the_top_names_the_line_that_holds_the_most(caplog: pytest.LogCaptureFixture) -> None:
    tracemalloc.start(4)
    try:
        held = _hold_blocks()
        with caplog.at_level(logging.WARNING, logger="streams.worker"):
            log_tracemalloc_top()
    finally:
        tracemalloc.stop()
    (text,) = [r.getMessage() for r in caplog.records]
    assert text.startswith("tracemalloc: ")
    first = text.splitlines()[1:4]  # the largest traceback: its size, then its frames
    assert int(first[0].split()[0].replace(",", "")) >= len(held) * 4096
    assert "test_worker.py" in first[1] and "bytearray(4096)" in first[2]


def test_it_is_off_unless_set() -> None:
    assert Settings().debug_tracemalloc_frames == 0
