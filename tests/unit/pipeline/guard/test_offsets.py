"""The accounting agent sees every raw offset once, in order, whatever faust delivers."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from streams.pipeline.guard.offsets import CommitWatch, OffsetTracker, Verdict


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


def test_commit_watch_reports_a_commit_held_while_records_wait_past_it() -> None:
    watch = CommitWatch(stall_s=60)
    assert watch.observe("raw-3", 281, 5, now=0) is None  # first seen
    assert watch.observe("raw-3", 281, 40, now=59) is None
    assert watch.observe("raw-3", 281, 80, now=60) == 60  # stuck a minute
    assert watch.observe("raw-3", 281, 90, now=70) is None  # said already
    assert watch.observe("raw-3", 281, 99, now=120) == 120  # and again a minute later
    assert watch.observe("raw-3", 400, 3, now=121) is None  # the commit moved: all is well
    assert watch.observe("raw-3", 400, 0, now=500) is None  # nothing waiting: nothing held
    assert watch.observe("raw-3", 400, 2, now=501) is None  # starts afresh
    watch.forget_except({"raw-4"})
    assert watch.observe("raw-3", 400, 2, now=600) is None  # revoked, then back: afresh


@given(st.lists(st.tuples(st.integers(0, 30), st.sampled_from([None, 7, 8]),
                          st.integers(0, 2)), max_size=60))
def test_commit_watch_against_a_scan_of_the_history(steps: list[tuple[int, int | None, int]]
                                                    ) -> None:
    """Brute force: at each observation, look back over the whole history for the start of
    the current run (same commit, records pending throughout) and the last report in it."""
    watch, stall = CommitWatch(stall_s=20), 20
    history: list[tuple[int, int | None, int]] = []
    reports: list[int] = []  # indexes of history that reported
    now = 0
    for dt, committed, pending in steps:
        now += dt
        history.append((now, committed, pending))
        got = watch.observe("tp", committed, pending, now)
        i = len(history) - 1
        start = i
        while start > 0 and pending and history[start - 1][1] == committed \
                and history[start - 1][2] > 0:
            start -= 1
        earlier = [r for r in reports if r >= start]
        due = pending > 0 and now - history[start][0] >= stall and (
            not earlier or now - history[earlier[-1]][0] >= stall)
        assert got == (now - history[start][0] if due else None)
        if due:
            reports.append(i)
