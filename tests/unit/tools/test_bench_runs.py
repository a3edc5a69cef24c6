"""The bench's time-boxed runs (tools/bench/runs.py _Polls): progress between polls,
and a backlog the worker takes in one step between two polls."""

from __future__ import annotations

import pytest

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
    ((name, value, note),) = _cpu_row(f, [])
    assert value == "4.00 µs" and note.startswith("on the CPU 40% of the run")
    ((_, _, note),) = _cpu_row(f, [{"events_per_s": 1.0}, {"events_per_s": 2.0}])
    assert note.startswith("the first run: on the CPU 40%")  # (c) ran more than once
    assert _cpu_row({"b_events_per_s": 1.0}, []) == []
    points = [{"volumes": v, "active": v, "events": 10, "records": 1, "events_per_s": 100.0,
               "records_per_s": 1.0, "seconds": 1.0, "cpu_us_per_event": cpu, "on_cpu": 0.5}
              for v, cpu in ((100, 2.0), (100_000, 36.0))]
    rows = _c_volume_rows({"figures": f, "targets": [], "points": {"c_volumes": points}})
    assert "worker CPU 36.0 µs/event, on the CPU 50% of the run" in rows[1][2]
    assert rows[-1][0].strip() == "CPU per event, at 100,000 / at 1,000 volumes"
    assert rows[-1][1] == "9.00x"
    # (c) ran three times: against the run that is (c), the median, not the first
    runs = [{"events_per_s": 90.0, "cpu_us_per_event": 4.0},
            {"events_per_s": 100.0, "cpu_us_per_event": 3.0},
            {"events_per_s": 110.0, "cpu_us_per_event": 2.5}]
    rows = _c_volume_rows({"figures": {**f, "c_events_per_s": 100.0}, "targets": [],
                           "points": {"c_volumes": points, "c_runs": runs}})
    assert rows[-1][1] == "12.00x" and rows[-1][2].endswith("against (c)'s run")
    fast = {**points[0], "volumes": 1000, "fleet_rate": 1e6, "hosts": 8, "events_per_s": 300.0,
            "records": 2}
    ((name, value, note),) = _c_fleet_rate_rows(
        {"figures": {**f, "c_events_per_s": 100.0}, "points": {"c_fleet_rates": [fast]}})
    assert name == "(c), the fleet at 1,000,000 events/s" and value.startswith("300")
    assert "(5/record; 8 hosts" in note and "x3.00 of (c); not a target" in note


def test_c_is_the_median_of_its_runs_and_the_report_lists_each() -> None:
    """Bench.worker_repeats: (c) again over backlogs of their own (c_point, here a fake
    that answers in turn); (c) becomes the median, the first run's figure is kept beside
    it, and the report's rows say so."""
    import asyncio
    import statistics
    from pathlib import Path

    from streams.config import Settings
    from streams.tools.bench.bench import FULL, QUICK, Bench
    from streams.tools.bench.report import _anchor_rows, _runs_row

    assert FULL.c_repeats == 2 and QUICK.c_repeats == 0  # --quick (the smoke test): one run
    answers = iter([(900.0, 1.5), (300.0, 3.0)])
    calls: list[tuple[str, int, float, int]] = []

    class FakeBench(Bench):
        async def c_point(self, name: str, volumes: int, rate: float, n: int,
                          **overrides: object) -> dict[str, float]:
            calls.append((name, volumes, rate, n))
            events_per_s, cpu = next(answers)
            return {"events_per_s": events_per_s, "cpu_us_per_event": cpu}

    bench = FakeBench(Settings(kafka_security="PLAINTEXT"), FULL, Path("."))
    bench.figures.update(c_events_per_s=500.0, c_cpu_us_per_event=2.0)
    asyncio.run(bench.worker_repeats(6_000_000))
    assert calls == [("cx1", 1000, 100_000.0, 6_000_000), ("cx2", 1000, 100_000.0, 6_000_000)]
    assert bench.figures["c_events_per_s"] == 500.0 == statistics.median([500, 900, 300])
    assert bench.figures["c_first_events_per_s"] == 500.0
    assert [r["events_per_s"] for r in bench.points["c_runs"]] == [500.0, 900.0, 300.0]
    ((name, value, note),) = _runs_row(bench.points["c_runs"])
    assert value == "300-900" and note.startswith("events/s: 500, 900, 300")
    assert "(worker CPU per event 2.00, 1.50, 3.00 µs)" in note
    assert _runs_row(bench.points["c_runs"][:1]) == []  # one run: nothing more to say
    info = {"b": {"events": 10}, "c": {"volumes": 1000, "fleet_rate": 1e5, "events": 60,
                                       "records": 2, "events_per_record": 30.0}}
    figures = {"b_events_per_s": 100.0, "b_records_per_s": 1.0, "c_events_per_s": 500.0,
               "c_records_per_s": 1.0, "c_seconds": 1.0, "c_processed_events_per_s": 1.0}
    verdict = {"target": "", "value": 5.0, "met": True, "short_by_factor": None,
               "higher_is_better": True, "bound": 1.0, "unit": "x"}
    targets = [{**verdict, "target": t} for t in ("(c) events/s per worker", "(c)/(b)")]
    rows = _anchor_rows({"figures": figures, "info": info, "targets": targets,
                         "points": {"c_runs": bench.points["c_runs"]}})
    assert rows[1][0] == "(c) ioacct worker end to end"
    assert rows[1][2].endswith("events/s; the median of 3 runs)")
    assert rows[2][0].strip() == "its runs" and rows[3][2].startswith("the first run: 60 events")
    rows = _anchor_rows({"figures": figures, "info": info, "targets": targets, "points": {}})
    assert rows[1][2].endswith(" events/s)") and rows[2][0].strip() == "records/s"


class _ReleasingWorker:
    """A worker's /status and RSS as the bench reads them: its heap release number moves
    at the ``release_at``-th poll (never when None), and its RSS drops by what the release
    gave back; every read is logged in order."""

    def __init__(self, release_at: int | None, fail_first: bool = False) -> None:
        self.release_at, self.fail_first = release_at, fail_first
        self.polls, self.reads = 0, list[tuple[str, int]]()

    def get(self, path: str) -> dict[str, int]:
        import urllib.error

        assert path == "/status"
        self.polls += 1
        self.reads.append(("status", self.polls))
        if self.fail_first and self.polls == 1:
            raise urllib.error.URLError("a step holds the loop")
        released = self.release_at is not None and self.polls >= self.release_at
        return {"heap_releases": 7 + released}

    def rss_bytes(self) -> int:
        self.reads.append(("rss", self.polls))
        released = self.release_at is not None and self.polls >= self.release_at
        return 200 << 20 if released else 230 << 20


def _rss_after(worker: _ReleasingWorker, timeout_s: float) -> int | None:
    """runs.rss_after_heap_release of the fake worker (it has the Proc methods it calls)."""
    import asyncio

    from streams.tools.bench import runs

    return asyncio.run(runs.rss_after_heap_release(worker, timeout_s))  # type: ignore[arg-type]


def test_the_rss_is_read_after_the_next_heap_release(monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.tools.bench import runs

    monkeypatch.setattr(runs, "HEAP_POLL_S", 0.001)
    worker = _ReleasingWorker(release_at=4)
    assert _rss_after(worker, 5.0) == 200 << 20
    assert worker.reads == [("status", 1), ("status", 2), ("status", 3), ("status", 4),
                            ("rss", 4)]
    # no answer first (a step held the loop): the release counted from the first answer
    worker = _ReleasingWorker(release_at=3, fail_first=True)
    assert _rss_after(worker, 5.0) == 200 << 20
    assert worker.reads[-1] == ("rss", 3)


def test_no_heap_release_within_the_wait_gives_no_figure(monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.tools.bench import runs

    monkeypatch.setattr(runs, "HEAP_POLL_S", 0.001)
    worker = _ReleasingWorker(release_at=None)
    assert _rss_after(worker, 0.05) is None
    assert worker.polls > 3 and all(kind == "status" for kind, _ in worker.reads)
    # a release before the first answer does not count: the first answer is the baseline
    worker = _ReleasingWorker(release_at=1)
    assert _rss_after(worker, 0.05) is None


def test_f_names_the_figure_at_the_commit_when_the_release_moved_it() -> None:
    from streams.tools.bench.report import _f_note

    info = {"f": {"volumes": [100, 100_000]}}
    assert _f_note({"f_bytes_per_volume": 1_200.0}, info) == " (from 100 to 100,000 volumes)"
    note = _f_note({"f_bytes_per_volume": 1_200.0, "f_bytes_per_volume_at_end": 2_090.4}, info)
    assert note == (" (from 100 to 100,000 volumes; read after the worker's heap release; "
                    "2,090 B at the commit)")


def test_the_floor_rows_give_what_the_accounting_adds_to_it() -> None:
    """(l): its rate, and (c)'s CPU an event less the floor's, against (c)'s first run
    (the floor reads that run's backlog)."""
    from streams.tools.bench.report import _floor_rows

    info = {"l": {"events": 6_000_000, "records": 37_746, "seconds": 3.5}}
    f = {"l_events_per_s": 1_714_286.0, "l_cpu_us_per_event": 0.45, "l_on_cpu": 0.77,
         "c_cpu_us_per_event": 1.5}
    (name, value, note), (cpu_name, cpu, cpu_note) = _floor_rows(f, info, [])
    assert name.startswith("(l) the worker's floor") and value.startswith("1,714,286")
    assert "(c)'s 37,746 records again" in note
    assert cpu == "0.45 µs" and cpu_note == ("on the CPU 77%; (c)'s 1.50 µs: the accounting "
                                             "adds 1.05 µs an event (70% of (c)'s)")
    (_, (_, _, second)) = _floor_rows(f, info, [{"events_per_s": 1.0}, {"events_per_s": 2.0}])
    assert "(c)'s first run 1.50 µs: the accounting adds 1.05" in second
    assert _floor_rows({"c_cpu_us_per_event": 1.5}, {}, []) == []  # no (l): no rows
    assert len(_floor_rows({"l_events_per_s": 1.0}, info, [])) == 1  # no CPU figures
