"""The bench's time-boxed runs (tools/bench/runs.py _Polls): progress between polls,
and a backlog the worker takes in one step between two polls."""

from __future__ import annotations

from streams.tools.bench.runs import _Polls


def test_a_window_counts_what_came_after_the_first_progress() -> None:
    polls = _Polls(t_zero=0.0)
    assert not polls.saw(1.0, 0, 0)  # nothing yet: the clock starts later
    assert polls.saw(2.0, 100, 1)
    assert not polls.window_over(2.5, 300, 1000, window_s=1.0)
    assert polls.window_over(3.0, 500, 1000, window_s=1.0)
    run = polls.window_run(3.0, 500, 5, rss_bytes=1)
    assert (run.events, run.records, run.seconds) == (400, 4, 1.0)


def test_a_backlog_taken_in_one_step_is_timed_from_the_last_idle_poll() -> None:
    polls = _Polls(t_zero=0.0)
    polls.saw(1.0, 0, 0)
    assert polls.saw(1.5, 1000, 10)  # everything, at the first poll that saw anything
    assert polls.window_over(1.6, 1000, 1000, window_s=1.0)
    run = polls.window_run(1.6, 1000, 10, rss_bytes=1)
    assert (run.events, run.records) == (1000, 10) and abs(run.seconds - 0.6) < 1e-9
