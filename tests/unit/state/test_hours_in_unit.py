"""The 1 h windows made in the accounting stage's units (session 30), held to the stage they
replace: a 1 h stage of its own (`RollupWindows`, tests/unit/state/earlier_stages.py) fed
the 1 m topic, window records and watermark markers in order, as the rollup-1h agent read
it.

Also: a 1 m window stays while its hour can change (it is that hour's part), and a table
written by the earlier design (the 1 h stage's windows, parts, clock and journal; the
agent behind the 1 m topic) is taken over without losing a part.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.times import HOUR_NS, MINUTE_NS, NS_PER_S
from streams.core.windows.acc import window_start_ns
from streams.core.windows.book import Emission, WindowSettings
from streams.core.windows.stages import rollup_prefix
from streams.core.windows.stores import EntryStore, PartsStore
from streams.state.stages import open_partition_windows
from tests.oracles.windows import windows_oracle
from tests.unit.core.windows.test_ranges import T0, _batch
from tests.unit.core.windows.test_windowing import make_event
from tests.unit.state.earlier_stages import (
    lagging_stage,
    open_minutes_only,
)
from tests.unit.state.test_crash_replay import by_topic, crash_items
from tests.unit.state.test_minutes_in_unit import _feed, against_the_topic_fed_stage, taken_over

SETTINGS = WindowSettings()
NO_MINUTE_EVICTION = (0, 10**18, 0)  # query retentions past the horizon: 1 s, 1 m, 1 h
STRETCH = 1200  # crash_items over ~9 minutes: 1 m windows fall past a 90 s horizon


def _hours(emissions: list[Any]) -> list[Emission]:
    return [e for e in emissions if isinstance(e, Emission) and e.length_ns == HOUR_NS]


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_the_hours_end_as_the_topic_fed_stage_made_them(seed: int) -> None:
    """Late events (revisions of closed minutes and of closed hours: the events 20 minutes
    late fall in the hour before), long requests, ticks of an idle partition: as
    test_minutes_in_unit.against_the_topic_fed_stage says."""
    revisions = against_the_topic_fed_stage(seed, 2)
    assert any(len(r) > 1 for r in revisions.values()), "hours were revised"
    assert len({start for _, start in revisions}) == 2, "two hours"


def test_a_1m_window_stays_while_its_hour_can_change() -> None:
    """Eviction (the stage's own, on its ticks) with the 1 m query retention at 0 (the
    horizon, 5 minutes): the 1 m windows of an hour that the horizon has entered but not
    passed are kept, they are its parts; those of an hour past it go. An event every 15 s
    from 40 minutes into an hour to 30 minutes into the next, a Tick after each."""
    settings_ = WindowSettings(horizon_ns=5 * MINUTE_NS)
    windows = open_partition_windows(0, {}, settings_)
    book = windows.books[1]
    hour = T0 - T0 % HOUR_NS
    dropped = 0
    for t in range(40 * 60, 90 * 60, 15):
        complete = hour + t * NS_PER_S + NS_PER_S // 2  # in flight within its second
        before = set(book.store)
        windows.on_events(_batch([make_event(0, "read", "ok", complete, 1_000)]), complete)
        windows.on_tick(complete + NS_PER_S)
        watermark = windows.clock.watermark_ns
        assert watermark is not None
        frozen = watermark - settings_.horizon_ns
        open_hour = window_start_ns(frozen, HOUR_NS)
        gone = before - set(book.store)
        assert all(k[1] < open_hour for k in gone), "a part of an hour that can change"
        assert all(k[1] + MINUTE_NS <= frozen for k in gone), "dropped inside the horizon"
        dropped += len(gone)
    assert dropped == 20  # the first hour's: all its minutes, once it was past the horizon
    past = [k for k in book.store if k[1] + MINUTE_NS <= frozen]
    assert len(past) >= 20, "the next hour's minutes past the horizon, kept for their hour"


def _old_design(items: list[Any], walls: list[int], settings_: WindowSettings, lag: int,
                cut: bool) -> tuple[dict[bytes, bytes], list[Emission | int]]:
    """A table as the design of sessions 14-29 left it: the accounting stage's keys (1 s
    and 1 m windows), and a 1 h stage of its own that has read all of the 1 m topic but its
    last ``lag`` records (``cut``: its last unit's journal landed and none of its writes);
    the 1 m windows past the horizon whose last revision it read are evicted (a 1 m query
    retention shorter than an hour; one it had not read would be lost to the upgrade).
    Returns the table and the 1 h topic as that stage published it."""
    table: dict[bytes, bytes] = {}
    windows = open_minutes_only(0, table, settings_, NO_MINUTE_EVICTION)
    stats_1m: list[Emission | int] = []
    counters: dict[bytes, bytes] = {}
    for offset, item in enumerate(items):
        emitted = _feed(windows, item, offset, walls[offset], counters, windows.table)
        assert not _hours(emitted)
        stats_1m += by_topic(windows, emitted)[1]
    prefix = rollup_prefix(0, HOUR_NS)
    assert not [k for k in table if k.startswith(prefix)]
    lag = min(lag, len(stats_1m) - 1)  # it has read something (else nothing tells it was)
    stage_table, made = lagging_stage(stats_1m, settings_, MINUTE_NS, HOUR_NS, lag, cut)
    assert stage_table
    watermark = windows.clock.watermark_ns
    assert watermark is not None
    frozen = watermark - settings_.horizon_ns
    minutes = EntryStore(table, rollup_prefix(0, MINUTE_NS) + b"W|")
    parts = PartsStore(stage_table, prefix + b"P|")
    for key, (revision, _) in list(parts.items()):  # type: ignore[misc]
        minute = minutes.get(key)
        if key[1] + MINUTE_NS <= frozen and minute is not None \
                and minute.revision == revision + 1:  # type: ignore[attr-defined]
            del minutes[key]
    minutes.write_back()
    return {**table, **stage_table}, made


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32), lag=st.integers(0, 12), cut=st.booleans(),
       horizon_s=st.sampled_from([3600, 90]))
def test_a_table_of_the_earlier_design_is_taken_over_without_losing_a_part(
    seed: int, lag: int, cut: bool, horizon_s: int,
) -> None:
    """The 1 h stage lagged behind the 1 m topic, or its last unit was cut after its
    journal, and 1 m windows it read are evicted (a short horizon): the stage built over
    that table drops the 1 h stage's parts, clock and journal, makes each hour that can
    still change from the 1 m windows (those evicted again from its parts), revises those
    it had emitted wrong, and from there on everything ends as the oracle says."""
    settings_ = WindowSettings(horizon_ns=horizon_s * NS_PER_S)
    events, items, walls = crash_items(seed, STRETCH)
    half = len(items) // 2
    table, published = _old_design(items[:half], walls[:half], settings_, lag, cut)

    got = taken_over(items, walls, half, table, published, settings_, HOUR_NS,
                     NO_MINUTE_EVICTION)
    if horizon_s == 3600:  # no event comes past it
        assert got == windows_oracle(events, HOUR_NS)
