"""A worker killed with -9 between its tables' and its outputs' writes, modelled without faust.

The counters table and the windows table are two changelog topics: a crash can leave
each of them with the writes of a different prefix of the records processed since the
last commit (writes to one changelog partition land in order, so a prefix). The new
owner restores both and re-reads the raw records from the committed offset. Whatever
the two prefixes, the counters and the windows must end up holding every event exactly
once: each table keeps its own replay check (the counters their per-volume seqs, the
windows `PartitionWindows.applied`). And the records the worker publishes (windows,
billing) can be lost for the records past the commit while the tables that say they were
sent landed: the new owner sends them again from its state before anything else
(`PartitionWindows.replay_outputs`), so the latest revision of every window and the
ledger end up equal to the oracles.

The last test goes down to single changelog messages: a crash can cut the writes of one
record (or Tick) anywhere, which `PartitionWindows` survives by journaling each call's
writes in one message before making them (`JournaledTable`).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.billing import BillingRecord
from streams.core.codec import default_schemas
from streams.core.counters import COUNTER_NAMES, VolumeState, named_counters
from streams.core.ingest import Limits, Placement, account_record, legacy_event_batch
from streams.core.times import HOUR_NS, MINUTE_NS, NS_PER_S
from streams.core.windows.acc import WINDOW_LENGTHS_NS, window_stats
from streams.core.windows.book import Emission, WindowSettings
from streams.core.windows.stages import PartitionWindows
from streams.state.journal import JOURNAL_CHUNK_BYTES, write_each
from streams.state.stages import open_partition_windows
from tests.oracles.counters import billing_oracle, counters_oracle, latency_histogram_oracle
from tests.oracles.windows import windows_oracle
from tests.unit.core.ingest_records import histograms_of
from tests.unit.core.test_ingest import NOW, fleet_events, records_of

SCHEMAS = default_schemas()
LIMITS = Limits(10**18, 10**18)  # nothing is too old or too new here: the model is the point


Stats = Emission | int  # a record of a stats topic: a window, or a watermark marker


def by_topic(windows: PartitionWindows, emissions: list[Emission]
             ) -> tuple[list[Stats], list[Stats], list[Stats]]:
    """What publishing a unit's emissions sends to ``ioacct.stats.1s``, ``.1m`` and ``.1h``,
    as publish.py does: each window to the topic of its length, then the markers of the
    first two."""
    topics: dict[int, list[Stats]] = {length: [] for length in WINDOW_LENGTHS_NS}
    for e in emissions:
        topics[e.acc.window_len_ns].append(e)
    for length, marker in ((NS_PER_S, windows.take_marker()),
                           (MINUTE_NS, windows.take_minute_marker())):
        topics[length] += [] if marker is None else [marker]
    return topics[NS_PER_S], topics[MINUTE_NS], topics[HOUR_NS]


class Outputs:
    """What reached the output topics: the latest revision per window and every billing
    record by id (a record sent twice is one)."""

    def __init__(self) -> None:
        self.windows: dict[tuple[int, str, int], tuple[int, dict[str, Any]]] = {}
        self.billing: dict[str, BillingRecord] = {}

    def publish(self, windows: PartitionWindows, emissions: list[Emission]) -> None:
        self.add(*by_topic(windows, emissions), windows.take_billing())

    def add(self, stats_1s: list[Stats], stats_1m: list[Stats], stats_1h: list[Stats],
            billing: list[BillingRecord]) -> None:
        for e in stats_1s + stats_1m + stats_1h:
            if isinstance(e, Emission):
                self._window(e)
        for record in billing:
            assert self.billing.get(record.record_id, record) == record, "same id, other data"
            self.billing[record.record_id] = record

    def _window(self, e: Emission) -> None:
        key = (e.acc.window_len_ns, e.volume_id, e.acc.window_start_ns)
        if key not in self.windows or self.windows[key][0] <= e.revision:
            self.windows[key] = (e.revision, window_stats(e.volume_id, e.tenant_id, e.acc))


def _process(payload: bytes, counters: dict[bytes, bytes],
             windows_table: MutableMapping[bytes, bytes],
             count: bool = True, window: bool = True, offset: int = -1,
             out: Outputs | None = None, wall_ns: int = NOW,
             windows: PartitionWindows | None = None) -> list[Emission]:
    """One raw record, as app.py's _account_record does it, into either table or both
    (``windows``: the worker's, kept across records; by default one rebuilt from the table).
    Returns the window records it made; its billing records wait in the windows."""
    def load(volume_id: str) -> VolumeState | None:
        snapshot = counters.get(volume_id.encode())
        return None if snapshot is None else VolumeState.from_snapshot(snapshot)

    key = SCHEMAS.decode(payload)[1]["volume_id"].encode()  # as a producer keys it
    outcome = account_record(payload, Placement(key, 0, 1), load, SCHEMAS, NOW, LIMITS)
    for volume in outcome.volumes:
        if count and volume.state is not None:
            counters[volume.volume_id.encode()] = volume.state.snapshot()
    emitted: list[Emission] = []
    for volume in outcome.volumes if window else []:
        if windows is None:
            windows = open_partition_windows(0, windows_table, WindowSettings())
        made = windows.on_events(legacy_event_batch(volume), wall_ns, volume.producer, offset)
        if out is not None:
            out.publish(windows, made)
        emitted += made
    return emitted


def _stored_windows(table: dict[bytes, bytes]) -> dict[tuple[str, int], dict[str, Any]]:
    book = open_partition_windows(0, table, WindowSettings()).books[0]
    return {key: window_stats(key[0], entry.tenant_id, entry.acc)
            for key, entry in book.store.items()}


def _stored_counters(table: dict[bytes, bytes]) -> dict[str, dict[str, Any]]:
    return {key.decode(): VolumeState.from_snapshot(value).counters_json(key.decode(), NOW)
            for key, value in table.items()}


def _stored_histograms(table: dict[bytes, bytes]) -> dict[str, dict[str, Any]]:
    stored = {key.decode(): histograms_of(VolumeState.from_snapshot(value))
              for key, value in table.items()}
    return {volume_id: ops for volume_id, ops in stored.items() if ops}


Item = bytes | int  # a raw record's payload, or a Tick's wall clock


def _feed(item: Item, offset: int, counters: dict[bytes, bytes], table: dict[bytes, bytes],
          out: Outputs) -> None:
    if isinstance(item, bytes):
        _process(item, counters, table, offset=offset, out=out)
    else:  # a Tick: windows and hours may close
        windows = open_partition_windows(0, table, WindowSettings())
        out.publish(windows, windows.on_tick(item, offset))


def _run_and_crash(items: list[Item], crashed: int, kept: tuple[int, int, int]
                   ) -> tuple[dict[bytes, bytes], dict[bytes, bytes], Outputs]:
    """Process items [0, crashed) with the whole state in memory, as a worker does, then
    crash: each table keeps what its changelog had, the state after items [0, m) for its
    own m in ``kept`` = (counters, windows, outputs); the outputs made by items from the
    third m on are lost. Returns the two restored tables and what reached the topics."""
    counters: dict[bytes, bytes] = {}
    table: dict[bytes, bytes] = {}
    out, lost = Outputs(), Outputs()
    snapshots = [(dict(counters), dict(table))]
    for i, item in enumerate(items[:crashed]):
        _feed(item, i, counters, table, out if i < kept[2] else lost)
        snapshots.append((dict(counters), dict(table)))
    return dict(snapshots[kept[0]][0]), dict(snapshots[kept[1]][1]), out


def _assert_outputs_equal_the_oracles(out: Outputs, events: list[dict[str, Any]]) -> None:
    """The latest revision of every window of every length, and the ledger by hour."""
    for length in WINDOW_LENGTHS_NS:
        got = {(v, s): stats for (n_, v, s), (_, stats) in out.windows.items() if n_ == length}
        assert got == windows_oracle(events, length), f"windows of {length} ns"
    names = dict(COUNTER_NAMES)
    want = {key: {k: v for k, v in row.items() if k in names}
            for key, row in billing_oracle(events).items()}
    assert _ledger(out.billing) == want


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), cuts=st.lists(st.floats(0, 1), min_size=4, max_size=4))
def test_any_crash_between_the_two_tables_counts_every_event_once(
    seed: int, cuts: list[float],
) -> None:
    events = fleet_events()[0][:600]
    payloads = records_of(events, [1, 3, 7], random.Random(seed), producers=2)
    n = len(payloads)
    committed, crashed = sorted(int(c * n) for c in cuts[:2])
    # What each table's changelog kept: the writes of records [0, m) with committed <= m
    # <= crashed, independently for the two tables.
    kept = (committed + int(cuts[2] * (crashed - committed)),
            committed + int(cuts[3] * (crashed - committed)), crashed)
    counters, windows_table, _ = _run_and_crash(list(payloads), crashed, kept)
    # The new owner: both tables as restored, the raw records again from the commit on.
    for payload in payloads[committed:]:
        _process(payload, counters, windows_table)
    # ... and a producer's duplicate of every record, which must change nothing.
    for payload in payloads:
        _process(payload, counters, windows_table)

    want_counters = counters_oracle(events, now_ns=NOW, retention_ns=10**18, future_ns=10**18)
    got_counters = _stored_counters(counters)
    assert {v: {k: got_counters[v][k] for k in want} for v, want in want_counters.items()} \
        == want_counters
    assert _stored_histograms(counters) == latency_histogram_oracle(
        events, now_ns=NOW, retention_ns=10**18, future_ns=10**18)
    assert _stored_windows(windows_table) == windows_oracle(events, NS_PER_S)


def _ledger(records: dict[str, BillingRecord]) -> dict[tuple[str, int], dict[str, int]]:
    sums: dict[tuple[str, int], dict[str, int]] = {}
    for record in records.values():
        row = sums.setdefault((record.volume_id, record.hour_start_ns), {})
        for name, value in named_counters(record.counters).items():
            row[name] = row.get(name, 0) + value
    return sums


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32), cuts=st.lists(st.floats(0, 1), min_size=4, max_size=4),
       late=st.booleans())
def test_outputs_lost_in_a_crash_are_sent_again_from_the_state(
    seed: int, cuts: list[float], late: bool,
) -> None:
    events = fleet_events()[0][:400]
    if late:  # 30 min late, in the hour before (closed at once): revisions, adjustments
        events = events + [{**e, "complete_ns": e["complete_ns"] - 1800 * NS_PER_S,
                            "submit_ns": e["submit_ns"] - 1800 * NS_PER_S}
                           for e in events[:40]]
    payloads = records_of(events, [1, 4, 9], random.Random(seed), producers=2)
    items: list[Item] = []
    for k, payload in enumerate(payloads):  # a Tick after every 10 records, 10 s apart
        items.append(payload)
        if k % 10 == 9:
            items.append(NOW + (k + 1) * NS_PER_S)
    n = len(items)
    committed, crashed = sorted(int(c * n) for c in cuts[:2])
    kept = (crashed, committed + int(cuts[2] * (crashed - committed)),
            committed + int(cuts[3] * (crashed - committed)))  # outputs may be ahead or behind
    counters, table, out = _run_and_crash(items, crashed, kept)
    # The new owner: state as restored; first what was made since the commit, again; then
    # the input from the commit on (records and Ticks alike).
    windows = open_partition_windows(0, table, WindowSettings())
    out.publish(windows, windows.replay_outputs(committed))
    for offset, item in enumerate(items[committed:], committed):
        _feed(item, offset, counters, table, out)
    windows = open_partition_windows(0, table, WindowSettings())
    out.publish(windows, windows.on_tick(10**19, n))  # every window and hour closes

    _assert_outputs_equal_the_oracles(out, events)


# --- a crash at the granularity of changelog messages ------------------------------------------

class Changelogged(MutableMapping[bytes, bytes]):
    """A table that also keeps, in order, every message its changelog partition receives:
    (key, value), or (key, None) for a delete. With ``whole_bytes``, a ``write_many`` call
    of at most that many bytes of keys and values lands whole, as one Kafka record batch
    of the worker's (pipeline/changelogs.py): a crash cuts the log before or after it,
    never inside (:meth:`kept`)."""

    def __init__(self, data: dict[bytes, bytes], whole_bytes: int | None = None) -> None:
        self.data = data
        self.log: list[tuple[bytes, bytes | None]] = []
        self.whole_bytes = whole_bytes
        self.inside: set[int] = set()  # prefix lengths that would cut a batch
        self.whole_calls = 0

    def lands_whole(self, writes: Iterable[tuple[bytes, bytes | None]]) -> bool:
        return self.whole_bytes is not None and sum(
            len(key) + len(value or b"") for key, value in writes) <= self.whole_bytes

    def write_many(self, writes: list[tuple[bytes, bytes | None]]) -> None:
        start = len(self.log)
        write_each(self, writes)
        if self.lands_whole(writes):
            self.whole_calls += 1
            self.inside.update(range(start + 1, len(self.log)))

    def kept(self, count: int, since: int = 0) -> list[tuple[bytes, bytes | None]]:
        """The messages after the first ``since`` that a crash keeps when it would keep
        ``count`` of them: fewer, if that cut a batch that lands whole."""
        at = since + count
        while at in self.inside:
            at -= 1
        return self.log[since:at]

    def __getitem__(self, key: bytes) -> bytes:
        return self.data[key]

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def __setitem__(self, key: bytes, value: bytes) -> None:
        assert isinstance(key, bytes) and isinstance(value, bytes)
        self.data[key] = value
        self.log.append((key, value))

    def __delitem__(self, key: bytes) -> None:
        del self.data[key]
        self.log.append((key, None))

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def restored(state: dict[bytes, bytes], messages: list[tuple[bytes, bytes | None]]
             ) -> dict[bytes, bytes]:
    """What a new owner's table holds: ``state`` with these changelog messages applied."""
    table = dict(state)
    for key, value in messages:
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    return table


class Published:
    """Every output partition's records, in the order the worker sends them: the 1 s, 1 m
    and 1 h topics' (window records and watermark markers) and the billing records."""

    def __init__(self) -> None:
        self.topics: list[list[Any]] = [[], [], [], []]  # stats 1s, 1m, 1h; billing

    def publish(self, windows: PartitionWindows, emissions: list[Emission]) -> None:
        made: list[list[Any]] = [*by_topic(windows, emissions), windows.take_billing()]
        for topic, records in zip(self.topics, made, strict=True):
            topic += records

    def lengths(self) -> list[int]:
        return [len(topic) for topic in self.topics]

    def landed(self, kept: list[int]) -> Outputs:
        """What reached the topics when each partition kept its first ``kept`` records."""
        out = Outputs()
        out.add(*(topic[:n] for topic, n in zip(self.topics, kept, strict=True)))
        return out


def stretched(events: list[dict[str, Any]], factor: int) -> list[dict[str, Any]]:
    """The events with their times ``factor`` times as far from the first one: more windows
    (and long requests over several), so closes, revisions and rollups all happen."""
    t0 = events[0]["submit_ns"]
    return [{**e, "submit_ns": t0 + (e["submit_ns"] - t0) * factor,
             "complete_ns": t0 + (e["complete_ns"] - t0) * factor} for e in events]


def crash_items(seed: int, stretch: int = 150
                ) -> tuple[list[dict[str, Any]], list[Item], list[int]]:
    """Events, the raw partition's items (records, and a Tick after every 8 records) and each
    item's Kafka timestamp: the wall clock the worker gives it, the same on every read.
    ``stretch``: how far apart in event time (150: ~66 s, 7 volumes, 2 minutes)."""
    events = stretched(fleet_events()[0][:500], stretch)
    # 20 min late, in the hour before: revisions of closed windows, billing adjustments
    events = events + [{**e, "complete_ns": e["complete_ns"] - 1200 * NS_PER_S,
                        "submit_ns": e["submit_ns"] - 1200 * NS_PER_S} for e in events[:160:4]]
    rng = random.Random(seed)
    payloads = records_of(events, [1, 4, 9], rng, producers=2)
    items: list[Item] = []
    walls: list[int] = []
    wall = events[0]["complete_ns"]
    for k, payload in enumerate(payloads):
        wall += 400 * NS_PER_S // 1000
        items.append(payload)
        walls.append(wall)
        if k % 8 == 7:  # 6 s of silence, then a Tick: the idle partition's watermark moves
            wall += 6 * NS_PER_S
            items.append(wall)
            walls.append(wall)
    return events, items, walls


def _feed_worker(windows: PartitionWindows, item: Item, offset: int, wall_ns: int,
                 counters: dict[bytes, bytes], table: MutableMapping[bytes, bytes],
                 published: Published | Outputs) -> None:
    """One item into the worker's (long-lived) windows, as app.py does."""
    if isinstance(item, bytes):
        emitted = _process(item, counters, table, offset=offset, wall_ns=wall_ns,
                           windows=windows)
    else:
        emitted = windows.on_tick(wall_ns, offset)
    published.publish(windows, emitted)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), data=st.data(),
       chunk_bytes=st.sampled_from([JOURNAL_CHUNK_BYTES, 800]),
       whole_bytes=st.sampled_from([None, 600, 1 << 20]))
def test_a_crash_between_any_two_changelog_messages_counts_every_event_once(
    seed: int, data: st.DataObject, chunk_bytes: int, whole_bytes: int | None,
) -> None:
    """``chunk_bytes``: the size over which a journal takes several messages (small: often);
    ``whole_bytes``: the size up to which a unit's writes land whole, in one record batch,
    with an empty journal (None: never; 600: about half the units do, the others journal)."""
    events, items, walls = crash_items(seed)
    n = len(items)
    crashed = data.draw(st.integers(0, n), label="crashed")
    committed = data.draw(st.integers(0, crashed), label="committed")

    # The worker until the crash: one PartitionWindows, every table write a message.
    counters: dict[bytes, bytes] = {}
    table = Changelogged({}, whole_bytes)
    windows = open_partition_windows(0, table, WindowSettings(), journal_chunk_bytes=chunk_bytes)
    published = Published()
    counter_states = []
    for offset, item in enumerate(items[:crashed]):
        if offset == committed:  # all it made before has landed: the commit waits for that
            at_commit = (dict(table.data), len(table.log), published.lengths())
        counter_states.append(dict(counters))
        _feed_worker(windows, item, offset, walls[offset], counters, table, published)
    counter_states.append(dict(counters))
    if crashed == committed:
        at_commit = (dict(table.data), len(table.log), published.lengths())
    state, logged, lengths = at_commit

    # The crash: each changelog and output partition kept any prefix of what came after.
    kept_messages = data.draw(st.integers(0, len(table.log) - logged),
                              label="changelog messages kept")
    windows_table = restored(state, table.kept(kept_messages, logged))
    counters = dict(counter_states[data.draw(st.integers(committed, crashed),
                                             label="counters kept up to")])
    kept = [lengths[k] + data.draw(st.integers(0, total - lengths[k]), label=f"outputs {k}")
            for k, total in enumerate(published.lengths())]
    out = published.landed(kept)

    # The new owner: the table as restored, the outputs made since the commit sent again,
    # then the raw partition from the commit on, each record with its own timestamp.
    windows = open_partition_windows(0, windows_table, WindowSettings(),
                                     journal_chunk_bytes=chunk_bytes)
    out.publish(windows, windows.replay_outputs(committed))
    for offset in range(committed, n):
        _feed_worker(windows, items[offset], offset, walls[offset], counters, windows_table,
                     out)
    # ... and a producer's duplicate of the records around the crash: they change nothing.
    for offset in range(committed, crashed):
        if isinstance(items[offset], bytes):
            _feed_worker(windows, items[offset], n + offset, walls[-1], counters, windows_table,
                         out)
    out.publish(windows, windows.on_tick(10**19, 2 * n))  # every window and hour closes

    _assert_outputs_equal_the_oracles(out, events)
    want_counters = counters_oracle(events, now_ns=NOW, retention_ns=10**18, future_ns=10**18)
    got_counters = _stored_counters(counters)
    assert {v: {k: got_counters[v][k] for k in want} for v, want in want_counters.items()} \
        == want_counters
    assert _stored_histograms(counters) == latency_histogram_oracle(
        events, now_ns=NOW, retention_ns=10**18, future_ns=10**18)
