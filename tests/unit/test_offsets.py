"""The accounting agent sees every raw offset once, in order, whatever faust delivers."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from streams.offsets import OffsetTracker, Verdict


def _drive(tracker: OffsetTracker, partition: int, delivered: list[int]) -> list[int]:
    """What the agent handles, as app.py drives the tracker: gaps read directly."""
    handled: list[int] = []
    for offset in delivered:
        verdict, expected = tracker.check(partition, offset)
        if verdict is Verdict.SEEN:
            continue
        if verdict is Verdict.GAP:
            for missing in range(expected, offset):
                handled.append(missing)
                tracker.done(partition, missing)
        handled.append(offset)
        tracker.done(partition, offset)
    return handled


@given(st.integers(0, 50), st.integers(1, 200), st.randoms(use_true_random=False))
def test_every_offset_handled_once_in_order_whatever_is_skipped_or_repeated(
    committed: int, n: int, rnd: random.Random,
) -> None:
    # What faust may deliver: the offsets from the committed one, some skipped, some
    # delivered again after a re-seek, one stale record from far ahead first.
    offsets = list(range(committed, committed + n))
    delivered = [o for o in offsets if rnd.random() > 0.2]
    if delivered and rnd.random() < 0.5:
        i = rnd.randrange(len(delivered))
        delivered[i:i] = delivered[max(0, i - rnd.randint(1, 5)):i]  # re-delivered
    if rnd.random() < 0.3:
        delivered.insert(0, committed + n - 1)  # prefetched before a rebalance
    delivered.append(committed + n)  # the stream goes on
    tracker = OffsetTracker()
    tracker.start(3, committed)
    handled = _drive(tracker, 3, delivered)
    assert handled == list(range(committed, committed + n + 1))


def test_forget_makes_the_next_assignment_start_afresh() -> None:
    tracker = OffsetTracker()
    tracker.start(0, 10)
    tracker.done(0, 10)
    assert tracker.check(0, 11) == (Verdict.PROCESS, 11)
    assert tracker.check(0, 15) == (Verdict.GAP, 11)
    assert tracker.check(0, 5) == (Verdict.SEEN, 11)
    tracker.forget(0)
    assert not tracker.knows(0) and tracker.knows(0) is False
