"""`ioacct bench --quick --json` runs end to end and reports every figure.

A smoke test of the benchmark's machinery only: it checks the shape of the report,
never a speed (the figures of a --quick run on a shared machine mean nothing). The
bench starts and stops a broker of its own, beside the session's.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from streams.config import REPO_ROOT

pytestmark = pytest.mark.integration

FIGURES = (
    "a_events_per_s", "b_events_per_s", "b_records_per_s", "c_events_per_s",
    "c_records_per_s", "c_processed_events_per_s", "c_seconds", "c_worker_rss_bytes",
    "h_events_per_s", "i_events_per_s", "l_events_per_s", "l_cpu_us_per_event",
    "d_record_ns_per_event", "d_loop_ns_per_event", "d_sdk_events_per_s", "e_p50_s", "e_p99_s",
    "e_max_s", "e_rate_sent", "j_stored_windows", "j_window_writes",
    "j_value_bytes_per_window", "j_disk_bytes_per_window", "j_changelog_bytes_per_write",
    "j_rss_end_bytes", "k_caught_up_max_s", "k_caught_up_median_s",
)
TARGETS = ("(c) events/s per worker", "(c)/(b)", "(c)/(a)", "(c)/(h)", "(c)/(i)",
           "(c) at 100,000 / at 1,000 volumes", "(d) record() per event", "(e) p99 latency",
           "(f) RSS per active volume",
           "(j) disk_bytes_per_window", "(j) changelog_bytes_per_write",
           "(k) kill -9 to caught up, max")


@pytest.mark.timeout(1300)  # the quick plan runs every part, (c) at 100,000 volumes and (k)
def test_quick_bench_reports_every_figure() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOACCT_")}
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "bench", "--quick", "--json"], cwd=REPO_ROOT,
        env=env, capture_output=True, text=True, timeout=1200, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["quick"] is True
    figures = report["figures"]
    for name in FIGURES:
        assert isinstance(figures[name], (int, float)) and figures[name] > 0, (name, figures)
    # Per volume is a difference of two RSS readings: finite, but its sign is the
    # allocator's business at --quick sizes.
    assert math.isfinite(figures["f_bytes_per_volume"])
    volume_points = report["points"]["volumes"]
    assert [p["volumes"] for p in volume_points] == [100, 1000]
    for p in volume_points:
        assert figures[f"f_rss_bytes_{p['volumes']}_volumes"] > 0
    assert [p["volumes"] for p in report["points"]["c_volumes"]] == [100, 100_000]
    (run,) = report["points"]["c_runs"]  # --quick runs (c) once: its median is that run
    assert run["events_per_s"] == figures["c_events_per_s"] == figures["c_first_events_per_s"]
    (fast,) = report["points"]["c_fleet_rates"]  # the fleet at the target's own rate
    assert fast["fleet_rate"] == 1_000_000 and fast["events_per_s"] > 0
    assert figures["c_events_per_s_fleet_1000000"] == fast["events_per_s"]
    assert report["points"]["batch_sizes"]
    for p in volume_points + report["points"]["batch_sizes"]:
        assert p["events_per_s"] > 0 and p["records_per_s"] > 0 and p["rss_bytes"] > 0, p
    assert all(report["ratios"][r] > 0
               for r in ("c_over_b", "c_over_a", "c_over_h", "c_over_i", "c_over_l"))
    # (l) read (c)'s whole first backlog again (timed until its group committed the end)
    assert report["info"]["l"]["records"] == report["info"]["c"]["records"]
    assert [row["target"] for row in report["targets"]] == list(TARGETS)
    for row in report["targets"]:
        assert isinstance(row["met"], bool), row
        assert row["value"] > 0 or row["target"].startswith("(f)"), row
