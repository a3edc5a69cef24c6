"""A rollup agent killed with -9 between any two changelog messages, modelled without faust.

A rollup stage (`RollupWindows`) reads the topic of the windows one length down (window
records of any revision, and the watermark markers between them) and publishes its own
windows and markers. The agent, per record of its input partition: `on_window` or
`on_watermark`, then what it made, then `take_marker()`; on (re)assignment, before anything
else, `replay_outputs(committed)` and the marker. The group commits an input offset only
after all that processing the records before it published has landed.

A kill -9 leaves the stage's changelog with any prefix of the messages written since the
commit, and each output partition with any prefix of what was published since the commit.
The new owner restores the table and goes on from the committed offset. Whatever the
prefixes, the latest revision of every window must equal the brute-force oracle, and no two
records of one window may carry the same revision with different statistics (in a compacted
topic either could be the one kept).

The input is realistic: the 1 s topic that a crash-free accounting stage (`PartitionWindows`)
publishes for test_crash_replay's raw partition (late events, revisions, Ticks), with copies
of some of its records further on, as the accounting agent sends its current revisions again
after a crash of its own. It ends with the marker of a Tick far in the future, which closes
every window of every length. The 1 m topic that lands is then the 1 h stage's input.

Before that last marker the watermark moves about 8 minutes, within the revision horizon;
the last marker is past the horizon of every window, so it also evicts, and a crash after
it is where a window evicted before its record landed, or a part read again after its
window's parts were evicted, would show (the two tests at the end, on their own).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.windows.acc import (
    NS_PER_S,
    WINDOW_LENGTHS_NS,
    WindowAcc,
    acc_from_stats,
    window_start_ns,
    window_stats,
)
from streams.core.windows.book import Emission, WindowSettings
from streams.core.windows.stages import RollupWindows
from streams.state.journal import JOURNAL_CHUNK_BYTES
from streams.state.stages import open_partition_windows, open_rollup_windows
from tests.oracles.windows import windows_oracle
from tests.unit.core.windows import scalar_twin
from tests.unit.state.test_crash_replay import (
    Changelogged,
    Published,
    _feed_worker,
    crash_items,
    restored,
)

Record = Emission | int  # a record of a stats topic: a window, or a watermark marker
Copies = list[tuple[float, float]]  # (which record, how far on): see with_copies
SETTINGS = WindowSettings()
MINUTE, HOUR = WINDOW_LENGTHS_NS[1], WINDOW_LENGTHS_NS[2]
FAR = 10**19  # the last Tick's wall clock: its marker closes everything
FINAL_MARKER = FAR - SETTINGS.grace_ns - SETTINGS.idle_timeout_ns  # an idle partition's
KEEP_1M = 2 * 24 * 3600 * NS_PER_S - SETTINGS.horizon_ns  # the worker's default (app.py)


def as_read(record: Record) -> Record:
    """A record as the rollup agent gets it from the topic: the published statistics back
    to integers (app.py: acc_from_stats), no offset, nothing shared with the stage below."""
    if isinstance(record, int):
        return record
    stats = window_stats(record.volume_id, record.tenant_id, record.acc)
    return Emission(record.volume_id, record.tenant_id, acc_from_stats(stats), record.revision)


def stats_1s_topic(seed: int) -> tuple[list[dict[str, Any]], list[Record]]:
    """The events of test_crash_replay.crash_items and the 1 s topic's partition that a
    crash-free accounting agent publishes for them, ending with a Tick far in the future."""
    events, items, walls = crash_items(seed)
    table: dict[bytes, bytes] = {}
    windows = open_partition_windows(0, table, SETTINGS)
    published = Published()
    counters: dict[bytes, bytes] = {}
    for offset, item in enumerate(items):
        _feed_worker(windows, item, offset, walls[offset], counters, table, published)
    published.publish(windows, windows.on_tick(FAR, len(items)))  # every window closes
    assert published.stats_1s[-1] == FINAL_MARKER
    return events, [as_read(r) for r in published.stats_1s]


def with_copies(topic: Sequence[Record], copies: Copies) -> list[Record]:
    """The topic with a copy of record ``a`` (a fraction of its length) inserted further on
    (``b``: a fraction of the rest), always before the final marker: a window's revision
    sent again (by the stage below after a crash), or a marker sent again."""
    n = len(topic)
    inserts: dict[int, list[Record]] = {}
    for a, b in copies:
        source = min(int(a * (n - 1)), n - 2)  # any record but the final marker
        before = min(source + 1 + int(b * (n - 1 - source)), n - 1)
        inserts.setdefault(before, []).append(topic[source])
    out: list[Record] = []
    for index, record in enumerate(topic):
        out += inserts.get(index, [])
        out.append(record)
    return out


def feed(stage: RollupWindows, record: Record, offset: int, committed: int) -> list[Record]:
    """One input record, as app.py's rollup agent handles it: what it publishes, in order.
    ``committed``: the group's committed input offset as the agent sees it then."""
    if isinstance(record, Emission):
        made: list[Record] = list(stage.on_window(record, offset))
    else:
        made = list(stage.on_watermark(record, offset, committed))
    marker = stage.take_marker()
    return made + ([] if marker is None else [marker])


def crash_free(records: Sequence[Record], inner_ns: int, length_ns: int,
               keep_ns: int = 0) -> list[Record]:
    stage = open_rollup_windows(0, {}, SETTINGS, inner_ns, length_ns, keep_ns)
    out: list[Record] = []
    for offset, record in enumerate(records):
        out += feed(stage, record, offset, offset)  # no crash: all before it has landed
    return [as_read(r) for r in out]


def point(data: st.DataObject, low: int, high: int, label: str) -> int:
    """Any integer in [low, high], either end often: nothing or everything since the commit
    (processed, logged, landed) is where replays and redos have the most to do."""
    return data.draw(st.one_of(st.sampled_from((low, high)), st.integers(low, high)),
                     label=label)


def messages_kept(data: st.DataObject, since: list[tuple[bytes, bytes | None]],
                  label: str) -> int:
    """How many of the changelog messages since the commit landed: any number, often none
    or all, and often just past a journal message: in the middle of a journal of several
    chunks (not whole: no redo, the unit is lost), or just past one with none or one of its
    unit's writes (its redo)."""
    journal = [b"|journal|" in key for key, _ in since] + [False]
    cut = [k + 1 for k in range(len(since)) if journal[k] and journal[k + 1]]
    whole = [k + d for k in range(len(since)) if journal[k] and not journal[k + 1]
             for d in (1, 2) if k + d <= len(since)]
    choices = [st.sampled_from((0, len(since))), st.integers(0, len(since))]
    choices += [st.sampled_from(found) for found in (cut, whole) if found]
    return data.draw(st.one_of(*choices), label=label)


def feed_step(stage: RollupWindows, records: Sequence[Record], first: int, committed: int
              ) -> list[Record]:
    """Records at offsets ``first``.. as one step of the batched rollup agent (app.py:
    ``on_inputs``): what it publishes, in order."""
    out: list[Record] = []
    inputs = [(record, first + k) for k, record in enumerate(records)]
    for made, marker in stage.on_inputs(inputs, committed):
        out += made + ([] if marker is None else [marker])
    return out


def step_bounds(n: int, sizes: Sequence[int] | None) -> list[int]:
    """Where the agent's steps over ``n`` records start and end: 0, ..., n (None: a step
    per record; else steps of these sizes, repeated, the last cut at n)."""
    if not sizes:
        return list(range(n + 1))
    bounds, at, k = [0], 0, 0
    while at < n:
        at = min(n, at + sizes[k % len(sizes)])
        bounds.append(at)
        k += 1
    return bounds


def boundary(data: st.DataObject, bounds: Sequence[int], low: int, high: int, label: str
             ) -> int:
    """:func:`point` among the step boundaries in [low, high]: a crash or a commit falls
    between two steps (an agent commits only what a whole step handled)."""
    found = [b for b in bounds if low <= b <= high]
    return data.draw(st.one_of(st.sampled_from((found[0], found[-1])), st.sampled_from(found)),
                     label=label)


def with_crashes(records: Sequence[Record], inner_ns: int, length_ns: int,
                 data: st.DataObject, crashes: int, name: str, keep_ns: int = 0,
                 chunk_bytes: int = JOURNAL_CHUNK_BYTES,
                 steps: Sequence[int] | None = None) -> list[Record]:
    """The stage over ``records`` with ``crashes`` kill -9s, each between any two of its
    changelog messages (every table write is one), each after any commit and with any
    prefix of the outputs since the commit landed. The group's committed offset as the
    agent sees it: the step's first offset up to the commit (all before it has landed),
    then the commit's. ``steps``: the agent takes the records in steps of these sizes
    (:func:`feed_step`; None: one by one, :func:`feed`), and crashes and commits fall
    between steps. Returns what landed, in order."""
    n = len(records)
    state: dict[bytes, bytes] = {}  # the table as the next owner restores it
    landed: list[Record] = []
    committed = 0
    for run in range(crashes + 1):
        bounds = [committed] + [committed + b for b in step_bounds(n - committed, steps)[1:]]
        table = Changelogged(dict(state))
        stage = open_rollup_windows(0, table, SETTINGS, inner_ns, length_ns, keep_ns, chunk_bytes)
        last = run == crashes
        crashed = n if last else boundary(data, bounds, committed, n, f"{name} crash {run}")
        commit = committed if last else boundary(data, bounds, committed, crashed,
                                                 f"{name} commit {run}")
        at_commit = (dict(table.data), 0, 0)  # commit == committed: nothing new has landed
        sent: list[Record] = []
        if run:  # a new owner: first what was made since the commit, again, and the marker
            sent += stage.replay_outputs(committed)
            marker = stage.take_marker()
            sent += [] if marker is None else [marker]
        for lo, hi in zip(bounds, bounds[1:], strict=False):
            if lo >= crashed:
                break
            if lo == commit and commit > committed:  # all made before it has landed
                at_commit = (dict(table.data), len(table.log), len(sent))
            seen = lo if last else min(lo, commit)
            if steps:
                sent += feed_step(stage, records[lo:hi], lo, seen)
            else:
                sent += feed(stage, records[lo], lo, seen)
        if last:
            landed += sent
            break
        if crashed == commit and commit > committed:
            at_commit = (dict(table.data), len(table.log), len(sent))
        data_at_commit, logged, published = at_commit
        since = table.log[logged:]
        kept = messages_kept(data, since, f"{name} changelog messages kept {run}")
        state = restored(data_at_commit, since[:kept])
        landed += sent[:point(data, published, len(sent), f"{name} outputs kept {run}")]
        committed = commit
    return [as_read(r) for r in landed]


def assert_right(events: list[dict[str, Any]], records: Sequence[Record],
                 length_ns: int) -> None:
    """The latest revision of every window is the oracle's, no two records of a revision
    differ, and the last record is the final marker."""
    assert conflicts(records) == [], "same-revision conflicts"
    assert latest(records, length_ns) == windows_oracle(events, length_ns)
    assert records[-1] == FINAL_MARKER


def latest(records: Sequence[Record], length_ns: int) -> dict[tuple[str, int], dict[str, Any]]:
    """The statistics of the latest revision of every window (a later record wins a tie)."""
    found: dict[tuple[str, int], tuple[int, dict[str, Any]]] = {}
    for e in records:
        if isinstance(e, Emission):
            assert e.acc.window_len_ns == length_ns
            key = (e.volume_id, e.acc.window_start_ns)
            if key not in found or found[key][0] <= e.revision:
                found[key] = (e.revision, window_stats(e.volume_id, e.tenant_id, e.acc))
    return {key: stats for key, (_, stats) in found.items()}


def conflicts(records: Sequence[Record]) -> list[tuple[str, int, int]]:
    """(volume, start, revision) of the windows with two records of one revision that differ."""
    seen: dict[tuple[str, int, int], dict[str, Any]] = {}
    bad = []
    for e in records:
        if isinstance(e, Emission):
            key = (e.volume_id, e.acc.window_start_ns, e.revision)
            stats = window_stats(e.volume_id, e.tenant_id, e.acc)
            if seen.setdefault(key, stats) != stats:
                bad.append(key)
    return bad


def markers(records: Sequence[Record]) -> list[int]:
    return [r for r in records if isinstance(r, int)]


copies_strategy = st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), max_size=12)
keeps = st.sampled_from([0, KEEP_1M])  # the 1 m windows kept past the horizon, or not


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32), copies=copies_strategy, keep_ns=keeps)
def test_crash_free_rollups_equal_the_oracle_and_copies_change_nothing(
    seed: int, copies: Copies, keep_ns: int,
) -> None:
    events, topic = stats_1s_topic(seed)
    assert latest(topic, NS_PER_S) == windows_oracle(events, NS_PER_S)  # the input is right
    minutes = crash_free(topic, NS_PER_S, MINUTE, keep_ns)
    assert_right(events, minutes, MINUTE)
    assert any(isinstance(r, Emission) and r.revision for r in minutes), "no revision made"
    hours = crash_free(minutes, MINUTE, HOUR, keep_ns)
    assert_right(events, hours, HOUR)
    # Records sent again are taken once: the very same records come out, in the same order.
    assert crash_free(with_copies(topic, copies), NS_PER_S, MINUTE, keep_ns) == minutes
    assert crash_free(with_copies(minutes, copies), MINUTE, HOUR, keep_ns) == hours


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), data=st.data(), copies=copies_strategy, keep_ns=keeps)
def test_a_crash_of_the_1m_stage_between_any_two_changelog_messages(
    seed: int, data: st.DataObject, copies: Copies, keep_ns: int,
) -> None:
    """The 1 m stage crashes once anywhere; the 1 h stage reads the 1 m topic as it landed."""
    events, topic = stats_1s_topic(seed)
    minutes = with_crashes(with_copies(topic, copies), NS_PER_S, MINUTE, data, 1, "1m",
                           keep_ns)
    assert_right(events, minutes, MINUTE)
    assert_right(events, crash_free(minutes, MINUTE, HOUR), HOUR)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32), data=st.data(), crashes=st.integers(1, 2),
       chunk_bytes=st.sampled_from([1000, 350, 150]))
def test_journal_chunks_of_a_rollup_stage_survive_any_crash(
    seed: int, data: st.DataObject, crashes: int, chunk_bytes: int,
) -> None:
    """``chunk_bytes``: over it a unit's journal takes several messages, any prefix of which
    may land (the other tests: the default, 512 KiB, one message). A unit here journals
    about 50 to 500 bytes, packed (1000 splits only the final marker's): 350 splits some
    units, 150 nearly all of those that write two entries or more. Two crashes: the first owner's
    redo, journaled again by the next one, cut again."""
    events, topic = stats_1s_topic(seed)
    minutes = with_crashes(topic, NS_PER_S, MINUTE, data, crashes, "1m",
                           chunk_bytes=chunk_bytes)
    assert_right(events, minutes, MINUTE)
    hours = with_crashes(minutes, MINUTE, HOUR, data, crashes, "1h", chunk_bytes=chunk_bytes)
    assert_right(events, hours, HOUR)


def test_small_chunks_do_split_the_journals_of_a_rollup_stage() -> None:
    """What the previous test relies on: before the final marker (where the crashes are),
    some units of the 1 m stage at 350 bytes, and of both stages at 150, are journaled in
    several messages (a chunk key past the first one is written)."""
    _, topic = stats_1s_topic(0)
    minutes = crash_free(topic, NS_PER_S, MINUTE)
    for records, inner_ns, length_ns, chunk_bytes in [(topic, NS_PER_S, MINUTE, 350),
                                                      (topic, NS_PER_S, MINUTE, 150),
                                                      (minutes, MINUTE, HOUR, 150)]:
        table = Changelogged({})
        stage = open_rollup_windows(0, table, SETTINGS, inner_ns, length_ns, 0, chunk_bytes)
        for offset, record in enumerate(records[:-1]):
            feed(stage, record, offset, offset)
        journal = b"0|r%d|journal|" % (length_ns // NS_PER_S)
        split = [key for key, _ in table.log if key.startswith(journal)
                 and not key.endswith(b"|0")]
        assert split, (length_ns, chunk_bytes)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), data=st.data(), copies=copies_strategy,
       crashes=st.integers(1, 2), keep_ns=keeps)
def test_no_two_records_of_a_window_share_a_revision_with_other_statistics(
    seed: int, data: st.DataObject, copies: Copies, crashes: int, keep_ns: int,
) -> None:
    """Both stages crash, once or twice each (then once during a recovery): every record
    that landed, of every revision, agrees with every other record of its revision."""
    events, topic = stats_1s_topic(seed)
    minutes = with_crashes(with_copies(topic, copies), NS_PER_S, MINUTE, data, crashes, "1m",
                           keep_ns)
    hours = with_crashes(minutes, MINUTE, HOUR, data, crashes, "1h", keep_ns)
    assert conflicts(minutes) == []
    assert conflicts(hours) == []
    assert_right(events, minutes, MINUTE)
    assert_right(events, hours, HOUR)


def without_journals(table: dict[bytes, bytes]) -> dict[bytes, bytes]:
    return {key: value for key, value in table.items() if b"|journal|" not in key}


step_sizes = st.lists(st.integers(1, 40), min_size=1, max_size=5)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32), copies=copies_strategy, keep_ns=keeps, sizes=step_sizes)
def test_steps_of_records_make_what_records_one_by_one_make(
    seed: int, copies: Copies, keep_ns: int, sizes: list[int],
) -> None:
    """The batched agent (on_inputs, steps of any sizes) publishes the very records the
    agent of one record at a time does, in the same order, and leaves the same table
    bytes, in both stages; and fewer journals (the point of it)."""
    _, topic = stats_1s_topic(seed)
    topic = with_copies(topic, copies)
    minutes: list[Record] = []
    for inner_ns, length_ns in ((NS_PER_S, MINUTE), (MINUTE, HOUR)):
        records = topic if length_ns == MINUTE else minutes
        one, many = Changelogged({}), Changelogged({})
        by_one = open_rollup_windows(0, one, SETTINGS, inner_ns, length_ns, keep_ns)
        by_step = open_rollup_windows(0, many, SETTINGS, inner_ns, length_ns, keep_ns)
        out_one: list[Record] = []
        out_many: list[Record] = []
        bounds = step_bounds(len(records), sizes)
        for lo, hi in zip(bounds, bounds[1:], strict=False):
            # the group's commit as the agent sees it: where the step starts (eviction
            # keeps what was emitted at or past it)
            for offset in range(lo, hi):
                out_one += feed(by_one, records[offset], offset, lo)
            out_many += feed_step(by_step, records[lo:hi], lo, lo)
        assert [as_read(r) for r in out_many] == [as_read(r) for r in out_one]
        assert [r.offset for r in out_many if isinstance(r, Emission)] == [
            r.offset for r in out_one if isinstance(r, Emission)]
        assert without_journals(many.data) == without_journals(one.data)
        journals = [sum(b"|journal|" in key for key, _ in t.log) for t in (one, many)]
        assert journals[1] <= journals[0]
        if max(sizes) > 1:
            assert journals[1] < journals[0]
        minutes = [as_read(r) for r in out_one]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), data=st.data(), copies=copies_strategy,
       crashes=st.integers(1, 2), sizes=step_sizes,
       chunk_bytes=st.sampled_from([JOURNAL_CHUNK_BYTES, 2000, 350]))
def test_a_crash_of_batched_rollup_stages_between_any_two_changelog_messages(
    seed: int, data: st.DataObject, copies: Copies, crashes: int, sizes: list[int],
    chunk_bytes: int,
) -> None:
    """Both stages take their input in steps and crash once or twice each, between any two
    changelog messages of a step's unit (its journal of several chunks too): every window's
    latest revision is the oracle's, and no two records of a revision differ."""
    events, topic = stats_1s_topic(seed)
    minutes = with_crashes(with_copies(topic, copies), NS_PER_S, MINUTE, data, crashes, "1m",
                           chunk_bytes=chunk_bytes, steps=sizes)
    hours = with_crashes(minutes, MINUTE, HOUR, data, crashes, "1h", chunk_bytes=chunk_bytes,
                         steps=sizes)
    assert conflicts(minutes) == [] and conflicts(hours) == []
    assert_right(events, minutes, MINUTE)
    assert_right(events, hours, HOUR)


# --- a marker past the revision horizon: the windows and parts it evicts -----------------

T0 = window_start_ns(1_700_000_000 * NS_PER_S, HOUR)
PAST_THE_HORIZON = T0 + MINUTE + 2 * HOUR  # a watermark jump: an outage, a rollup catching up


def part(second: int, ios: int) -> Emission:
    """A 1 s window record of vol-1 (revision 0): ``ios`` reads of 4 KiB, 1 ms each."""
    acc = WindowAcc(T0 + second * NS_PER_S, NS_PER_S)
    for _ in range(ios):
        scalar_twin.add_completion(acc, 0, 0, 4096, 10**6)
    return Emission("vol-1", "t-1", acc, 0)


def reads(records: Sequence[Record]) -> list[tuple[int, int]]:
    """(revision, reads) of each window record: all of vol-1's minute T0 here."""
    return [(e.revision, e.acc.ops[0].ios) for e in records if isinstance(e, Emission)]


@pytest.mark.parametrize("keep_ns", [0, KEEP_1M])
def test_a_part_sent_again_after_a_marker_past_the_horizon_changes_nothing(
    keep_ns: int,
) -> None:
    """The accounting agent sends again a 1 s window it made since its commit, after the
    marker of a watermark jump past the horizon, which evicted the minute's parts (once
    failed: keep 0 made the minute again, [(0, 2)], a same-revision conflict; 47 h gave it
    a new revision with the part counted twice, [(1, 5)])."""
    stage = open_rollup_windows(0, {}, SETTINGS, NS_PER_S, MINUTE, keep_ns)
    landed = feed(stage, part(0, 1), 0, 0) + feed(stage, part(1, 2), 1, 1)
    landed += feed(stage, PAST_THE_HORIZON, 2, 2)
    assert reads(landed) == [(0, 3)]
    assert not list(stage.rollup.parts), "the parts past the horizon are evicted"
    assert reads(feed(stage, part(1, 2), 3, 3)) == []


@pytest.mark.parametrize("keep_ns", [0, KEEP_1M])
def test_a_crash_after_a_marker_past_the_horizon(keep_ns: int) -> None:
    """The 1 m stage reads two parts and a marker 2 h on, and dies with its input committed
    up to the second part, the changelog all landed, and what it published since lost (once
    failed: the minute was evicted with its record unsent, then made again from the second
    part alone, [(0, 2)]; or, kept, revised with that part twice, [(0, 3), (1, 5)])."""
    table: dict[bytes, bytes] = {}
    stage = open_rollup_windows(0, table, SETTINGS, NS_PER_S, MINUTE, keep_ns)
    records: list[Record] = [part(0, 1), part(1, 2), PAST_THE_HORIZON]
    landed = feed(stage, records[0], 0, 0)
    lost = feed(stage, records[1], 1, 1) + feed(stage, records[2], 2, 1)
    assert (reads(landed), reads(lost)) == ([], [(0, 3)])
    stage = open_rollup_windows(0, table, SETTINGS, NS_PER_S, MINUTE, keep_ns)  # the next owner
    landed += stage.replay_outputs(1)
    for offset in (1, 2):
        landed += feed(stage, records[offset], offset, 1)
    assert reads(landed) == [(0, 3)]
