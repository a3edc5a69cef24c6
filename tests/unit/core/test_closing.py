"""core/closing.py ClosingIndex: the order a heap of (end, volume, start) tuples popped
in, integer for integer, at a fraction of its memory per entry."""

from __future__ import annotations

import heapq
import random
import tracemalloc

import pytest

from streams.core.closing import ClosingIndex

LENGTH = 1_000


@pytest.mark.parametrize("seed", range(20))
def test_it_takes_what_the_heap_popped_in_the_heaps_order(seed: int) -> None:
    rng = random.Random(seed)
    index, heap = ClosingIndex(), []
    for _ in range(300):
        if rng.random() < 0.8:  # a window opens (sometimes one already open: a rebuild)
            end, volume = LENGTH * rng.randrange(1, 40), f"v{rng.randrange(25)}"
            index.push(end, volume)
            heapq.heappush(heap, (end, volume, end - LENGTH))
        else:
            watermark = rng.choice([None, LENGTH * rng.randrange(0, 40) + rng.randrange(-1, 2)])
            popped = []
            while watermark is not None and heap and heap[0][0] <= watermark:
                end, volume, _ = heapq.heappop(heap)
                popped.append((end, volume))
            assert index.take_due(watermark) == popped
        assert bool(index) == bool(heap)
        assert index.entries() == sorted((e, v) for e, v, _ in heap)
    assert ClosingIndex(sorted((e, v) for e, v, _ in heap)).take_due(10**9) == [
        (e, v) for e, v, _ in sorted(heap)]


@pytest.mark.parametrize("seed", range(20))
def test_it_knows_each_volumes_last_end_as_its_entries_say(seed: int) -> None:
    """``track_last``: a volume's last end is the largest end of its entries still in
    the index (None without one), whatever was pushed (twice, out of order) and taken."""
    rng = random.Random(seed)
    index, entries = ClosingIndex(track_last=True), []
    for _ in range(300):
        if rng.random() < 0.8:
            end, volume = LENGTH * rng.randrange(1, 40), f"v{rng.randrange(25)}"
            index.push(end, volume)
            entries.append((end, volume))
        else:
            watermark = LENGTH * rng.randrange(0, 40)
            index.take_due(watermark)
            entries = [(e, v) for e, v in entries if e > watermark]
        for volume in (f"v{k}" for k in range(25)):
            ends = [e for e, v in entries if v == volume]
            assert index.last_end(volume) == (max(ends) if ends else None)
    rebuilt = ClosingIndex(entries, track_last=True)  # a rebuild knows them too
    assert all(rebuilt.last_end(v) == index.last_end(v) for v in (f"v{k}" for k in range(25)))
    with pytest.raises(TypeError):
        ClosingIndex().last_end("v0")  # not tracked: no answer rather than a wrong one


def test_an_entry_costs_a_list_slot_not_a_tuple_and_two_ints() -> None:
    volumes = [f"vol-{i:06d}" for i in range(20_000)]  # made before: the book holds them
    end = 3_600 * 10**9 * 500_000
    tracemalloc.start()
    try:
        index = ClosingIndex()
        for volume in volumes:
            index.push(end, volume)
        per_entry = tracemalloc.get_traced_memory()[0] / len(volumes)
        heap: list[tuple[int, str, int]] = []
        before = tracemalloc.get_traced_memory()[0]
        for volume in volumes:
            heapq.heappush(heap, (end + 0, volume, end - 3_600 * 10**9))
        heap_per_entry = (tracemalloc.get_traced_memory()[0] - before) / len(volumes)
    finally:
        tracemalloc.stop()
    assert per_entry <= 16 and heap_per_entry >= 100
