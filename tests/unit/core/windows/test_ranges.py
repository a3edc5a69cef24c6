"""Eviction reads what it drops: the stores' start-ordered keys, their range scans, and
eviction by range against the full-scan rules it replaced, which are written out here.

Also the upgrade: a table written in the earlier layout (``prefix + volume|start``) is
moved over once when a stage is built on it, and nothing in it is lost.
"""

from __future__ import annotations

import random
from collections.abc import MutableMapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streams.core.windows.stages as stages
from streams.core.batch import EventBatch
from streams.core.billing import BillingBook, BillingEntry
from streams.core.counters import N_SLOTS
from streams.core.events import OP_CODE, STATUS_CODE
from streams.core.times import HOUR_NS, MINUTE_NS, NS_PER_S
from streams.core.windows.acc import WindowAcc, window_start_ns
from streams.core.windows.book import WindowBook, WindowEntry, WindowSettings
from streams.core.windows.packed import entry_emission
from streams.core.windows.ranges import entries_between
from streams.core.windows.stages import PartitionWindows
from streams.core.windows.stores import BillingStore, EntryStore, PartsStore, SeqStore
from streams.state.journal import JournaledTable
from streams.state.stages import open_partition_windows
from tests.unit.core.windows.test_packed import ENTRIES
from tests.unit.core.windows.test_windowing import make_event

T0 = 1_700_000_000 * NS_PER_S
SETTINGS = WindowSettings(horizon_ns=120 * NS_PER_S)
VOLUMES = ["v", "v|1", "vol-2", "é", "vol-10", ""]
STARTS = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-5, 5),
                   st.integers(T0, T0 + 20 * NS_PER_S))


def _bound() -> st.SearchStrategy[int | None]:
    return st.one_of(st.none(), STARTS)


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(st.tuples(st.sampled_from(VOLUMES), STARTS), max_size=40),
       lo=_bound(), hi=_bound(), journaled=st.booleans(), data=st.data())
def test_a_stores_range_scan_is_the_filter_of_every_entry_in_start_order(
    keys: list[tuple[str, int]], lo: int | None, hi: int | None, journaled: bool,
    data: st.DataObject,
) -> None:
    """Over a dict and over a journaled table with pending writes and deletes; other
    prefixes' keys (another store, the replay marks) are never read."""
    under: dict[bytes, bytes] = {}
    table: MutableMapping[bytes, bytes] = JournaledTable(under, b"0|journal") if journaled \
        else under
    store = PartsStore(table, b"0|P|")
    neighbour, marks = PartsStore(table, b"0|Q|"), SeqStore(table, b"0|q|")
    for n, key in enumerate(keys):
        store[key] = neighbour[key] = (n, WindowAcc(key[1] % 7, NS_PER_S))
        marks[key] = {"p": n}
        if journaled and data.draw(st.booleans()):
            table.commit()  # type: ignore[attr-defined]
    for key in data.draw(st.lists(st.sampled_from(keys), max_size=5)) if keys else []:
        if key in store:
            del store[key]  # pending (journaled) or gone
    got = list(entries_between(store, lo, hi))
    want = sorted(((k, store[k]) for k in {k for k in keys if k in store}
                   if (lo is None or k[1] >= lo) and (hi is None or k[1] < hi)),
                  key=lambda kv: (kv[0][1], kv[0][0].encode()))
    assert got == want
    assert dict(store.items()) == {k: store[k] for k in keys if k in store}
    assert sorted(store) == sorted({k for k in keys if k in store})


# --- eviction: exactly what the full-scan rules dropped ----------------------------------

def _old_window_rule(book: WindowBook, watermark_ns: int, committed: int | None
                     ) -> set[tuple[str, int]]:
    """WindowBook.evictable before session 10: a scan of every stored window."""
    frozen_before = watermark_ns - book.settings.horizon_ns
    return {key for key, entry in list(book.store.items())
            if entry.emitted and key[1] + book.window_len_ns <= frozen_before
            and (committed is None or entry.emitted_offset < committed)}


def _store(kind: str, entries: type[EntryStore] | type[PartsStore] | type[BillingStore],
           ) -> tuple[MutableMapping[Any, Any], JournaledTable | None]:
    if kind == "dict":
        return {}, None
    table = JournaledTable({}, b"0|journal")
    return entries(table, b"0|W|"), table


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from(["dict", "journaled"]), seed=st.integers(0, 2**32),
       length=st.sampled_from([NS_PER_S, 60 * NS_PER_S]), steps=st.integers(1, 12))
def test_eviction_drops_exactly_what_the_full_scan_rule_dropped(
    kind: str, seed: int, length: int, steps: int,
) -> None:
    """Windows open and emitted, at offsets either side of the committed one, added as a
    stage would (never past the horizon), evicted as the watermark moves on; the kept
    windows below the horizon are read again, the dropped ones never."""
    rng = random.Random(seed)
    store, table = _store(kind, EntryStore)
    book = WindowBook(SETTINGS, store, length)
    watermark, committed = T0, 0
    for _ in range(steps):
        frozen_before = watermark - SETTINGS.horizon_ns
        for _ in range(rng.randrange(30)):  # new windows only where an event may land
            start = window_start_ns(frozen_before + rng.randrange(4 * length + 3 * HOUR_NS // 60),
                                    length) + length
            store[(f"vol-{rng.randrange(5)}", start)] = WindowEntry(
                "t", WindowAcc(start, length), 1, rng.random() < 0.8, rng.randrange(100))
        if table is not None and rng.random() < 0.7:
            table.commit()
        watermark += rng.choice([0, 1, length, 30 * NS_PER_S, 5 * length])
        committed = max(committed, rng.randrange(120))
        limit = None if rng.random() < 0.2 else committed
        want = set(store) - _old_window_rule(book, watermark, limit)
        assert set(book.evictable(watermark, limit)) == set(store) - want
        book.evict(watermark, limit)
        assert set(store) == want


@settings(max_examples=100, deadline=None)
@given(kind=st.sampled_from(["dict", "journaled"]), seed=st.integers(0, 2**32))
def test_billing_eviction_drops_exactly_what_the_full_scan_rule_dropped(
    kind: str, seed: int,
) -> None:
    rng = random.Random(seed)
    store, _ = _store(kind, BillingStore)
    book = BillingBook(store)
    for _ in range(60):
        start = T0 + rng.randrange(-30, 30) * HOUR_NS
        store[(f"vol-{rng.randrange(4)}", start)] = BillingEntry(
            "t", None if rng.random() < 0.7 else [1] * N_SLOTS)
    for oldest in (T0 - 40 * HOUR_NS, T0 - HOUR_NS + 1, T0, T0 + 2 * HOUR_NS, T0 + 40 * HOUR_NS):
        want = {key for key, entry in list(store.items())  # before session 10
                if entry.counters is None and key[1] + 2 * HOUR_NS <= oldest}
        assert set(book.evictable(oldest)) == want


# --- a stage drives it: eviction, queries and the upgrade --------------------------------

def _open(table: dict[bytes, bytes]) -> PartitionWindows:
    return open_partition_windows(0, table, SETTINGS, keep_ns=(30 * NS_PER_S, 60 * NS_PER_S, 0),
                                  retention_ns=HOUR_NS)


def _chain_run(table: dict[bytes, bytes], seed: int, chain: PartitionWindows | None = None,
               from_ns: int = T0) -> tuple[PartitionWindows, list[Any]]:
    """Three volumes over three and a half hours of event time from ``from_ns``, a record
    every 7 s of event time, with ticks: every book evicts, several times."""
    rng = random.Random(seed)
    chain = chain or _open(table)
    out: list[Any] = []
    for t in range(0, int(3.5 * 3600), 7):
        complete = from_ns + t * NS_PER_S + rng.randrange(NS_PER_S)
        batch = [make_event(rng.randrange(3), "read", "ok", complete, rng.randrange(1, NS_PER_S))]
        out += chain.on_events(_batch(batch), complete, (f"p{seed}", t))
        if t % 60 == 0:
            out += chain.on_tick(complete + 90 * NS_PER_S)
    return chain, out


def _batch(events: list[dict[str, Any]]) -> EventBatch:
    first = events[0]
    return EventBatch(first["volume_id"], first["tenant_id"],
                      ops=bytes(OP_CODE[e["op"]] for e in events),
                      statuses=bytes(STATUS_CODE[e["status"]] for e in events),
                      nbytes=[e["bytes"] for e in events],
                      submit_ns=[e["submit_ns"] for e in events],
                      complete_ns=[e["complete_ns"] for e in events], indexes=range(len(events)))


def test_a_stage_evicts_by_range_what_the_full_scan_rules_evict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each eviction of each book, in a run, checked against the old rules on the state
    it starts from."""
    checked = {NS_PER_S: 0, MINUTE_NS: 0, HOUR_NS: 0}
    evict = WindowBook.evict

    def checked_evict(book: WindowBook, watermark_ns: int | None,
                      committed: int | None = None) -> int:
        assert watermark_ns is not None
        want = set(book.store) - _old_window_rule(book, watermark_ns, committed)
        dropped = evict(book, watermark_ns, committed)
        assert set(book.store) == want
        checked[book.window_len_ns] += dropped
        return dropped

    monkeypatch.setattr(WindowBook, "evict", checked_evict)
    chain, _ = _chain_run({}, 3)
    assert checked[NS_PER_S] > 1000 and checked[MINUTE_NS] > 100 and checked[HOUR_NS], checked
    assert len(chain.books[0].store) < 400  # 30 s + 120 s horizon of 3 volumes


# The layout before session 10: ``prefix + volume_id|start`` under these prefixes.
OLDER_PREFIXES = {b"0|W1|": b"0|w%d|" % NS_PER_S, b"0|B|": b"0|b|",
                  b"0|r60|W|": b"0|r60|w|", b"0|r60|P|": b"0|r60|p|",
                  b"0|r3600|W|": b"0|r3600|w|", b"0|r3600|P|": b"0|r3600|p|"}


def _older_layout(table: dict[bytes, bytes]) -> tuple[dict[bytes, bytes], int]:
    """The same state as a changelog of the earlier layout holds it (but the journals:
    every write of theirs landed, so they redo nothing)."""
    older: dict[bytes, bytes] = {}
    moved = 0
    for key, value in table.items():
        if b"|journal" in key:
            continue
        for new, old in OLDER_PREFIXES.items():
            if key.startswith(new):
                volume, start = EntryStore(table, new)._decode_key(key)
                key = b"%s%s|%d" % (old, volume.encode(), start)
                moved += 1
                break
        older[key] = value
    return older, moved


def _contents(chain: PartitionWindows) -> list[dict[Any, Any]]:
    return ([dict(book.store.items()) for book in chain.books]
            + [dict(chain.billing.store.items()), dict(chain.applied.items())])


def test_a_table_of_the_older_layout_is_moved_over_once_and_loses_nothing() -> None:
    table: dict[bytes, bytes] = {}
    chain, _ = _chain_run(table, 5)
    before = _contents(chain)
    assert all(before), "every kind of entry is there to move"
    older, moved = _older_layout(table)
    assert moved > 200
    upgraded = _open(older)
    assert upgraded.adopted == moved
    assert _contents(upgraded) == before  # found through the new keys, before a commit
    upgraded.on_tick(T0 + 4 * HOUR_NS)  # the first unit lands the moves
    chain.on_tick(T0 + 4 * HOUR_NS)
    journals = {k for k in table if b"|journal" in k}
    assert {k: v for k, v in older.items() if k not in journals} == \
        {k: v for k, v in table.items() if k not in journals}  # as if written in the new layout
    again = open_partition_windows(0, older, SETTINGS)
    assert again.adopted == 0


def test_an_upgraded_stage_continues_as_one_that_never_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stage rebuilt from a table converted to the earlier layout and one rebuilt from
    the same table as it is, each with a unit that fails at once (the upgraded one's
    discarded writes held the moves), then fed the same: the same outputs, the same
    table."""
    table: dict[bytes, bytes] = {}
    _chain_run(table, 9)
    older, _ = _older_layout(table)
    outputs = []
    for start in (table, older):
        stage = _open(start)
        with monkeypatch.context() as patch:
            patch.setattr(stage.books[0], "add_columns",
                          lambda *a, **k: (_ for _ in ()).throw(OSError()))
            with pytest.raises(OSError):
                _chain_run(start, 11, stage, T0 + 3 * HOUR_NS)
        outputs.append((_contents(stage), _chain_run(start, 11, stage, T0 + 3 * HOUR_NS)[1]))
    assert outputs[0] == outputs[1] and len(outputs[0][1]) > 100
    journals = {k for k in table if b"|journal" in k}
    assert {k: v for k, v in older.items() if k not in journals} == \
        {k: v for k, v in table.items() if k not in journals}


def test_queries_over_a_long_range_read_the_range_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chain, _ = _chain_run({}, 4)
    store = chain.books[0].store
    stored = sorted(store, key=lambda k: k[1])
    lo, hi = stored[0][1], stored[-1][1] + NS_PER_S
    for direct_max in (0, 10_000):
        monkeypatch.setattr(stages, "DIRECT_LOOKUPS_MAX", direct_max)
        for volume in ("vol-0", "vol-1", "vol-9"):
            want = [store[k] for k in stored if k[0] == volume]
            assert chain.windows_of(volume, NS_PER_S, lo, hi) == want


@settings(max_examples=200, deadline=None)
@given(ENTRIES)
def test_evictions_reader_of_a_packed_window_agrees_with_its_whole_decoding(
    entry: WindowEntry,
) -> None:
    assert entry_emission(EntryStore({}, b"").encode(entry)) == (entry.emitted,
                                                                 entry.emitted_offset)
