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


def test_only_f_reports_the_two_points_and_the_target() -> None:
    from types import SimpleNamespace

    from streams.tools.bench.report import f_report_of, render_f

    points = [{"volumes": v, "events_per_record": 4, "events": 4 * v, "records": v,
               "events_per_s": 1.0, "records_per_s": 1.0, "seconds": 1.0,
               "rss_bytes": rss, "until_committed": 1.0}
              for v, rss in ((100, 90_000_000), (100_000, 290_000_000))]
    bench = SimpleNamespace(figures={"f_bytes_per_volume": 2_002.0},
                            points={"volumes": points}, info={"f": {"volumes": [100, 100_000]}})
    report = f_report_of(bench, quick=False)  # type: ignore[arg-type]
    (row,) = report["targets"]
    assert (row["met"], row["bound"]) == (False, 2_000.0)
    text = render_f(report)
    assert "2,002 bytes" in text and "from 100 to 100,000 volumes" in text
    assert "    100,000" in text and "276.6" in text  # the point's RSS in MiB


def test_the_c_row_says_how_many_records_a_unit_took() -> None:
    from streams.tools.bench.report import _units
    assert _units({"records": 17_522, "units": 64}) == "; 64 units of 274 records"
    assert _units({"records": 10}) == "" and _units({"records": 10, "units": 0}) == ""
