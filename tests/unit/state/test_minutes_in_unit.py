"""The 1 m windows made in the accounting stage's units (session 14), held to the stage they
replace: a 1 m stage of its own (`RollupWindows`, tests/unit/state/earlier_stages.py) fed
the 1 s topic, window records and watermark markers in order, as the rollup-1m agent read
it.

Also: a 1 s window stays while its minute can change (it is that minute's part), and a
table written by the earlier design (the 1 m stage's parts, clock and journal; the agent
behind the 1 s topic) is taken over without losing a part.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.times import MINUTE_NS, NS_PER_S
from streams.core.windows import columnar as columnar_module
from streams.core.windows.acc import WindowAcc, window_start_ns, window_stats
from streams.core.windows.book import Emission, WindowSettings
from streams.core.windows.stages import PartitionWindows, rollup_prefix
from streams.core.windows.stores import EntryStore, PartsStore
from streams.state.stages import open_partition_windows
from tests.oracles.windows import windows_oracle
from tests.unit.state.earlier_stages import lagging_stage, open_rollup_windows, topic_fed
from tests.unit.state.test_crash_replay import Item, _process, by_topic, crash_items

SETTINGS = WindowSettings()
Record = tuple[str, str, list[Any], int]  # a 1 m window record: volume, tenant, acc, revision


def _record(e: Emission) -> Record:
    return e.volume_id, e.tenant_id, e.acc.to_list(), e.revision


def _feed(windows: PartitionWindows, item: Item, offset: int, wall_ns: int,
          counters: dict[bytes, bytes], table: Any) -> list[Emission]:
    if isinstance(item, bytes):
        return _process(item, counters, table, offset=offset, wall_ns=wall_ns, windows=windows)
    return windows.on_tick(wall_ns, offset)


def against_the_topic_fed_stage(seed: int, n: int) -> dict[tuple[str, int], list[int]]:
    """test_crash_replay.crash_items(seed) through the stage; its rollup windows of the
    length of ``books[n]`` held to a stage of their own fed the stats topic one length down
    (window records and watermark markers) as the stage publishes it: the latest revision
    of every window is that stage's, and the oracle's; each window's revisions count up
    from 0 one by one (there can be fewer: a unit's parts of a window that closes in it go
    into one revision; the topic-fed stage closed it at the first part past its end).
    Returns each window's revisions."""
    events, items, walls = crash_items(seed)
    windows = open_partition_windows(0, {}, SETTINGS)
    inner_ns, length_ns = (book.window_len_ns for book in windows.books[n - 1:n + 1])
    reference = open_rollup_windows(0, {}, SETTINGS, inner_ns, length_ns)
    got: list[Record] = []
    want: list[Record] = []
    below_end = 0
    counters: dict[bytes, bytes] = {}
    items = items + [10**19]  # every window closes
    for offset, item in enumerate(items):
        wall = walls[offset] if offset < len(walls) else 10**19
        emitted = _feed(windows, item, offset, wall, counters, windows.table)
        topics = by_topic(windows, emitted)
        got += [_record(e) for e in topics[n] if isinstance(e, Emission)]
        want += [_record(e) for e in topic_fed(reference, topics[n - 1], below_end)]
        below_end += len(topics[n - 1])
    revisions: dict[tuple[str, int], list[int]] = {}
    for volume_id, _, acc, revision in got:
        revisions.setdefault((volume_id, acc[0]), []).append(revision)
    assert all(r == list(range(len(r))) for r in revisions.values())
    last = {(v, acc[0]): (tenant, acc) for v, tenant, acc, _ in got}  # the latest revision
    assert last == {(v, acc[0]): (tenant, acc) for v, tenant, acc, _ in want}
    assert {key: window_stats(key[0], tenant, WindowAcc.from_list(acc))
            for key, (tenant, acc) in last.items()} == windows_oracle(events, length_ns)
    return revisions


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_the_minutes_end_as_the_topic_fed_stage_made_them(seed: int) -> None:
    """Late events (revisions of closed 1 s windows and of closed minutes), long requests,
    ticks of an idle partition: as :func:`against_the_topic_fed_stage` says."""
    revisions = against_the_topic_fed_stage(seed, 1)
    assert any(len(r) > 1 for r in revisions.values()), "minutes were revised"


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_minutes_made_in_chunks_of_two_windows_end_the_same(seed: int) -> None:
    """The same with the columnar book's calls cut into chunks of two windows (as a tick
    that closes many volumes' windows is): each chunk's windows take their own parts."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(columnar_module, "CHUNK_WINDOWS", 2)
        against_the_topic_fed_stage(seed, 1)


def test_a_1s_window_stays_while_its_minute_can_change() -> None:
    """Eviction (the stage's own, on its ticks) with the 1 s query retention at 0 (the
    horizon): the 1 s windows of a minute that the horizon has entered but not passed are
    kept, they are its parts; of the others, those the old rule dropped go."""
    settings_ = WindowSettings(horizon_ns=20 * NS_PER_S)
    windows = open_partition_windows(0, {}, settings_)
    counters: dict[bytes, bytes] = {}
    _, items, walls = crash_items(11)
    book = windows.books[0]
    dropped = 0
    for offset, item in enumerate(items):
        before = set(book.store)
        _feed(windows, item, offset, walls[offset], counters, windows.table)
        watermark = windows.clock.watermark_ns
        if watermark is None:
            continue
        frozen = watermark - settings_.horizon_ns
        open_minute = window_start_ns(frozen, MINUTE_NS)
        gone = before - set(book.store)
        assert all(k[1] < open_minute for k in gone), "a part of a minute that can change"
        assert all(k[1] + NS_PER_S <= frozen for k in gone), "dropped inside the horizon"
        if isinstance(item, int) and gone:  # an eviction: everything of closed minutes goes
            assert not {k for k in book.store if k[1] < open_minute}
        dropped += len(gone)
    assert dropped > 20


def _old_design(items: list[Item], walls: list[int], settings_: WindowSettings, lag: int,
                cut: bool) -> tuple[dict[bytes, bytes], list[Emission | int]]:
    """A table as the earlier design left it: the accounting stage's keys, and a 1 m stage
    of its own that has read all of the 1 s topic but its last ``lag`` records (``cut``:
    its last unit's journal landed and none of its writes); the 1 s windows past the
    horizon that it read are evicted, as that design's accounting stage did. Returns the
    table and the 1 m topic as that stage published it."""
    table: dict[bytes, bytes] = {}
    windows = open_partition_windows(0, table, settings_)
    stats_1s: list[Emission | int] = []
    counters: dict[bytes, bytes] = {}
    for offset, item in enumerate(items):
        emitted = _feed(windows, item, offset, walls[offset], counters, windows.table)
        stats_1s += by_topic(windows, emitted)[0]
    prefix = rollup_prefix(0, MINUTE_NS)
    # this design's 1 m windows go, and its journal (its last unit landed whole): that of
    # the earlier design never held a 1 m window
    old = {k: v for k, v in table.items()
           if not k.startswith(prefix) and not k.startswith(b"0|journal")}
    stage_table, made = lagging_stage(stats_1s, settings_, NS_PER_S, MINUTE_NS, lag, cut)
    assert prefix + b"clock" in stage_table
    watermark = windows.clock.watermark_ns
    assert watermark is not None
    frozen = watermark - settings_.horizon_ns
    seconds, parts = EntryStore(old, b"0|W1|"), PartsStore(stage_table, prefix + b"P|")
    for key in [k for k in parts if k[1] + NS_PER_S <= frozen]:
        seconds.pop(key, None)  # type: ignore[call-overload]
    seconds.write_back()
    return {**old, **stage_table}, made


def taken_over(items: list[Item], walls: list[int], first: int, table: dict[bytes, bytes],
               published: Sequence[Emission | int], settings_: WindowSettings, length_ns: int,
               keep_ns: Sequence[int] = (0, 0, 0)) -> dict[tuple[str, int], dict[str, Any]]:
    """A stage built over ``table`` (an earlier design's, which had ``published`` its
    windows of ``length_ns``) fed items ``first``.. and then a Tick that closes everything:
    the latest revision of every window of ``length_ns``, counting those published before
    (none of the earlier stage's own keys is left of that length's, but its windows'); the
    same as a stage that never was upgraded ends with, fed every item."""

    def latest_of(made: Sequence[Emission | int], latest: dict[tuple[str, int], Emission]
                  ) -> None:
        for e in made:
            if not isinstance(e, Emission) or e.acc.window_len_ns != length_ns:
                continue
            key = (e.volume_id, e.acc.window_start_ns)
            if key not in latest or latest[key].revision < e.revision:
                latest[key] = e

    def run(windows: PartitionWindows, first: int, latest: dict[tuple[str, int], Emission]
            ) -> dict[tuple[str, int], dict[str, Any]]:
        counters: dict[bytes, bytes] = {}
        for offset in range(first, len(items)):
            latest_of(_feed(windows, items[offset], offset, walls[offset], counters,
                            windows.table), latest)
        latest_of(windows.on_tick(10**19, len(items)), latest)
        return {key: window_stats(e.volume_id, e.tenant_id, e.acc) for key, e in latest.items()}

    upgraded: dict[tuple[str, int], Emission] = {}
    latest_of(published, upgraded)
    got = run(open_partition_windows(0, table, settings_, keep_ns), first, upgraded)
    prefix = rollup_prefix(0, length_ns)
    assert not [k for k in table if k.startswith(prefix) and not k.startswith(prefix + b"W|")]
    never = open_partition_windows(0, {}, settings_, keep_ns)
    assert got == run(never, 0, {}), "as one that never was"
    return got


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32), lag=st.integers(0, 40), cut=st.booleans(),
       horizon_s=st.sampled_from([3600, 90]))
def test_a_table_of_the_earlier_design_is_taken_over_without_losing_a_part(
    seed: int, lag: int, cut: bool, horizon_s: int,
) -> None:
    """The 1 m stage lagged behind the 1 s topic, or its last unit was cut after its
    journal, and 1 s windows it read are evicted (a short horizon): the stage built over
    that table drops the stage's own keys, makes each minute that can still change from
    the 1 s windows (those evicted again from its parts), revises those it had emitted
    wrong, and from there on everything ends as the oracle says."""
    settings_ = WindowSettings(horizon_ns=horizon_s * NS_PER_S)
    events, items, walls = crash_items(seed)
    half = len(items) // 2
    table, published = _old_design(items[:half], walls[:half], settings_, lag, cut)

    got = taken_over(items, walls, half, table, published, settings_, MINUTE_NS)
    if horizon_s == 3600:  # no event comes past it
        assert got == windows_oracle(events, MINUTE_NS)
