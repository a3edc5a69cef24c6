"""The worker's health families (api/health.py): parsed by prometheus_client's own parser
and checked against the figures they were made from and against /proc."""

from __future__ import annotations

import os
import random

from prometheus_client.parser import text_string_to_metric_families

from streams.api.health import STAT_COUNTERS, PartitionLag, worker_text
from streams.core.monitoring import CLOSE_DELAY_BUCKETS_S, CloseDelays

NS = 1_000_000_000


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        assert family.documentation, family.name
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_counters_lags_and_recovery_are_the_figures_given() -> None:
    rng = random.Random(7)
    stats = {key: rng.randrange(10**12) for key, _, _ in STAT_COUNTERS}
    lags = [PartitionLag("raw", 3, 1_000, 900, 850), PartitionLag("raw", 1, 50, 50, None),
            PartitionLag("stats", 0, None, 4, 4)]
    text = worker_text(stats, lags, True, CloseDelays(), started_ns=10 * NS,
                       now_ns=12 * NS + NS // 2)
    got = _samples(text)
    for key, suffix, _ in STAT_COUNTERS:
        assert got[(f"ioacct_worker_{suffix}", ())] == stats[key]
    lag = "ioacct_worker_consumer_lag_records"
    assert got[(lag, (("partition", "3"), ("topic", "raw")))] == 100
    assert got[(lag, (("partition", "1"), ("topic", "raw")))] == 0
    assert (lag, (("partition", "0"), ("topic", "stats"))) not in got  # end unknown
    commit = "ioacct_worker_commit_lag_records"
    assert got[(commit, (("partition", "3"), ("topic", "raw")))] == 150
    assert (commit, (("partition", "1"), ("topic", "raw"))) not in got  # nothing committed
    assert got[("ioacct_worker_recovering", ())] == 1
    assert got[("ioacct_worker_uptime_seconds", ())] == 2.5


def test_close_delay_histogram_is_cumulative_over_the_observations() -> None:
    rng = random.Random(11)
    delays_ns = [rng.randrange(0, 200 * NS) for _ in range(500)] + [NS, 2 * NS]
    delays = CloseDelays()
    for d in delays_ns:
        delays.observe(d)
    got = _samples(worker_text({k: 0 for k, _, _ in STAT_COUNTERS}, [], False, delays, 0, 0))
    name = "ioacct_worker_window_close_delay_seconds"
    buckets = {float(labels[0][1]): v for (n, labels), v in got.items() if n == f"{name}_bucket"}
    assert sorted(buckets) == [*map(float, CLOSE_DELAY_BUCKETS_S), float("inf")]
    for bound in CLOSE_DELAY_BUCKETS_S:
        assert buckets[bound] == sum(1 for d in delays_ns if d <= bound * NS), bound
    assert buckets[float("inf")] == len(delays_ns)
    assert got[(f"{name}_count", ())] == len(delays_ns)
    assert abs(got[(f"{name}_sum", ())] - sum(delays_ns) / NS) < 1e-6


def test_process_metrics_agree_with_proc() -> None:
    got = _samples(worker_text({k: 0 for k, _, _ in STAT_COUNTERS}, [], False,
                               CloseDelays(), 0, 0))
    with open("/proc/self/status") as f:
        rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    assert abs(got[("process_resident_memory_bytes", ())] - rss_kb * 1024) < 0.05 * rss_kb * 1024
    assert abs(got[("process_open_fds", ())] - len(os.listdir("/proc/self/fd"))) <= 2
    assert got[("process_cpu_seconds_total", ())] > 0
    start = got[("process_start_time_seconds", ())]
    assert abs(start - os.stat("/proc/self").st_ctime) < 120
