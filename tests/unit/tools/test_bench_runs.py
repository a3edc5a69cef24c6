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


def test_the_workers_cpu_time_is_read_as_the_os_counts_it() -> None:
    """/proc's utime + stime of this process, against the C library's clock of the same
    (CLOCK_PROCESS_CPUTIME_ID): both move alike over some work (ticks: 10 ms)."""
    import os
    import time

    from streams.tools.bench.procs import cpu_seconds

    before, oracle_before = cpu_seconds(os.getpid()), time.process_time()
    total = 0
    while time.process_time() - oracle_before < 0.3:
        total += sum(range(1000))
    moved, oracle = cpu_seconds(os.getpid()) - before, time.process_time() - oracle_before
    assert total > 0 and abs(moved - oracle) < 0.05


def test_the_c_rows_give_the_cpu_per_event_and_its_ratio_across_volume_counts() -> None:
    from streams.tools.bench.report import _c_fleet_rate_rows, _c_volume_rows, _cpu_row
    from streams.tools.bench.runs import Run

    run = Run(events=2_000_000, records=100, seconds=20.0, processed_seconds=19.0,
              rss_bytes=1, cpu_seconds=8.0)
    assert run.cpu_us_per_event == 4.0 and run.on_cpu == 0.4
    assert Run(1, 1, 1.0, 1.0, 1).cpu_us_per_event is None
    f = {"b_events_per_s": 200_000.0, "c_cpu_us_per_event": 4.0, "c_on_cpu": 0.4}
    ((name, value, note),) = _cpu_row(f)
    assert value == "4.00 µs" and note.startswith("on the CPU 40% of the run")
    assert _cpu_row({"b_events_per_s": 1.0}) == []
    points = [{"volumes": v, "active": v, "events": 10, "records": 1, "events_per_s": 100.0,
               "records_per_s": 1.0, "seconds": 1.0, "cpu_us_per_event": cpu, "on_cpu": 0.5}
              for v, cpu in ((100, 2.0), (100_000, 36.0))]
    rows = _c_volume_rows({"figures": f, "targets": [], "points": {"c_volumes": points}})
    assert "worker CPU 36.0 µs/event, on the CPU 50% of the run" in rows[1][2]
    assert rows[-1][0].strip() == "CPU per event, at 100,000 / at 1,000 volumes"
    assert rows[-1][1] == "9.00x"
    fast = {**points[0], "volumes": 1000, "fleet_rate": 1e6, "hosts": 8, "events_per_s": 300.0,
            "records": 2}
    ((name, value, note),) = _c_fleet_rate_rows(
        {"figures": {**f, "c_events_per_s": 100.0}, "points": {"c_fleet_rates": [fast]}})
    assert name == "(c), the fleet at 1,000,000 events/s" and value.startswith("300")
    assert "(5/record; 8 hosts" in note and "x3.00 of (c); not a target" in note
