"""The chaos run of tests/chaos.py, short (CI): workers killed -9, the broker stopped and
killed, a producer killed -9, hostile records; every counter, window and billing hour
must still equal the oracle, with nothing lost and nothing counted twice.

The long run is `make chaos` (500,000 events over 3 workers; docs/chaos.md).
It runs on a broker of its own, since it stops and kills it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos import ChaosPlan, run_chaos

pytestmark = pytest.mark.integration


def test_short_chaos_run_equals_the_oracle(tmp_path: Path) -> None:
    plan = ChaosPlan(events=40_000, workers=3, producers=2, rate=800.0, volumes=30,
                     worker_kills=2, broker_restarts=1, producer_kills=1, hostile_rounds=1,
                     seed=7, settle_s=300.0)
    report = run_chaos(plan, tmp_path)
    print("\n".join(report.lines()))
    assert report.differences == [], "\n".join(report.lines())
    # The run did break what it says: a run that skipped its chaos would prove nothing.
    assert report.worker_kills == 2 and report.broker_restarts == 1  # the broker: kill -9
    assert report.producer_kills == 1 and report.hostile_records > 0
    assert report.events_counted >= 40_000  # the huge record's 20,000 included
    assert report.spool_records_at_kill and report.spool_peak_bytes > 0
