"""(j)'s arithmetic: the RSS slope over a part of the run, and its rows in the table."""

from __future__ import annotations

import math

from streams.config import Settings
from streams.core.times import NS_PER_S
from streams.core.windows.book import WindowSettings
from streams.core.windows.packed import unpack_entry
from streams.core.windows.stages import PartitionWindows, is_window_1s_key, partition_prefix
from streams.state.journal import JournaledTable
from streams.tools.bench.steady import (
    EVICT_EVERY_S,
    TAIL_S,
    VALUE_PARTS,
    Steady,
    SteadyPlan,
    _key_kind,
    _rss_figures,
    full_after_s,
    slope_kb_per_s,
    steady_rows,
    steady_settings,
    value_parts,
)
from tests.unit.core.windows.test_vector import columns_of, make_event


def test_the_slope_is_taken_over_the_part_asked_for() -> None:
    # 50 KB/s for 100 s, then flat: each part has its own slope.
    samples = [(float(t), 10**8 + 50_000 * min(t, 100)) for t in range(0, 200, 2)]
    assert math.isclose(slope_kb_per_s(samples, 0, 100), 50.0)
    assert math.isclose(slope_kb_per_s(samples, 100, 200), 0.0, abs_tol=1e-9)
    assert math.isnan(slope_kb_per_s(samples, 300, 400))  # no samples there


def test_the_tail_slope_is_the_last_minutes_after_the_caches_filled() -> None:
    # RSS rises 30 KB/s while RocksDB's cache fills (to 450 s), then stays: the slope once
    # full mixes both, the tail's is flat
    out = Steady(rss=[(float(t), 10**8 + 30_000 * min(t, 450)) for t in range(0, 781, 2)])
    _rss_figures(out, 127.0, 780.0)
    assert out.figures["j_rss_slope_full_kb_s"] > 10
    assert math.isclose(out.figures["j_rss_slope_tail_kb_s"], 0.0, abs_tol=1e-9)
    assert 780.0 - TAIL_S > 450


def test_the_run_is_scaled_down_and_full_after_retention_and_one_eviction() -> None:
    s = steady_settings(Settings(), SteadyPlan(horizon_s=90))
    assert (s.revision_horizon_s, s.retention_1s_s) == (90, 90)
    assert full_after_s(s) == 90 + s.grace_s + s.idle_timeout_s + EVICT_EVERY_S


def test_the_rows_say_whether_the_bytes_per_window_are_within_the_target() -> None:
    fig = {"j_rss_slope_full_kb_s": 0.4, "j_rss_slope_filling_kb_s": 3.0,
           "j_rss_slope_tail_kb_s": 0.5,
           "j_rss_end_bytes": 2**27, "j_value_bytes_per_window": 180.0,
           "j_json_bytes_per_window": 900.0,
           "j_key_bytes_per_window": 44.0, "j_stored_windows": 2400.0,
           "j_disk_bytes_per_window": 200.0, "j_changelog_bytes_per_write": 700.0,
           "j_window_writes": 9000.0, "j_changelog_payload_per_write": 500.0}
    info = {"j": {"volumes": 20, "rate": 2000.0, "horizon_s": 60, "j_full_after_s": 127.0,
                  "duration_s": 240.0, "store": "rocksdb"}}
    rows = {name.strip(): note for name, _, note in steady_rows(fig, info)}
    assert rows["on disk (RocksDB) per stored window"].startswith("target <= 256: met")
    assert rows["changelog per 1 s window write"].startswith("target <= 256: NOT met, 2.7x")
    assert rows["RSS slope, the last 5 minutes"].startswith("25 B per 1 s window")  # 500/20
    del fig["j_disk_bytes_per_window"]  # the memory store: nothing on disk
    assert len(steady_rows(fig, info)) == 4


def _stage_table() -> dict[bytes, bytes]:
    """A partition's windows table after two records of three volumes, and a tick that
    closes their windows (1 s windows, a 1 m window, billing, replay checks, the clock)."""
    table: dict[bytes, bytes] = {}
    stage = PartitionWindows(3, JournaledTable(table, partition_prefix(3) + b"journal"),
                             WindowSettings(horizon_ns=60 * NS_PER_S))
    t0 = 1_700_000_000 * NS_PER_S
    events = [make_event(v, ("read", "write", "flush")[n % 3], "ok",
                         t0 + n * 7_000_000 + v * 3_001, 200_000 + n * 1_001, 4096)
              for n in range(120) for v in range(3)]
    stage.on_columns(columns_of(events[:180]), t0, ("p", 1))
    stage.on_columns(columns_of(events[180:]), t0, ("p", 2))
    stage.on_tick(t0 + 10 * NS_PER_S)
    return table


def test_the_changelog_breakdown_names_each_kind_of_key() -> None:
    table = _stage_table()
    kinds = {_key_kind(key) for key in table}
    assert {"W1", "r60|W", "B", "q", "clock", "journal"} <= kinds
    assert all((_key_kind(key) == "W1") == is_window_1s_key(key) for key in table)
    assert _key_kind(b"not a stage key") == "other"


def test_a_windows_parts_add_up_to_its_packed_value() -> None:
    values = [v for k, v in _stage_table().items() if is_window_1s_key(k)]
    parts = value_parts(values)
    assert math.isclose(sum(parts[p] for p in VALUE_PARTS), sum(map(len, values)) / len(values))
    # against the windows themselves: the busy part is there exactly when intervals are
    accs = [unpack_entry(v)[1] for v in values]
    assert parts["intervals"] == sum(len(acc.busy) for acc in accs) / len(accs) > 1
    assert parts["busy"] > 0 and parts["exp_histogram"] > 0 and parts["histogram"] > 0
    assert 0 < parts["zstd"] < sum(map(len, values)) / len(values)
    assert value_parts([]) == {}
