"""The 1 s windows kept as columns (columnar.py) against the WindowBook of objects, integer
for integer: the same emissions, the same stored windows, the same late count and windows
to close, whatever the batches (several volumes, requests spanning many windows, late
events, the horizon, latencies past int64, which take the objects' way)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.core.times import MINUTE_NS, NS_PER_S
from streams.core.windows import columnar as columnar_module
from streams.core.windows.acc import WindowAcc
from streams.core.windows.book import Emission, WindowBook, WindowSettings
from streams.core.windows.columnar import ColumnarBook
from streams.core.windows.columns import gather
from streams.core.windows.stores import RowsEntryStore
from tests.unit.core.windows.test_columns import windows
from tests.unit.core.windows.test_vector import T0, columns_of, events_st, make_event


def _emitted(emissions: list[Emission]) -> list[tuple[Any, ...]]:
    return [(e.volume_id, e.tenant_id, e.start_ns, e.length_ns, e.revision, e.offset,
             e.acc.to_list()) for e in emissions]


def _stored(store: RowsEntryStore) -> dict[Any, Any]:
    return {key: (entry.tenant_id, entry.acc.to_list(), entry.revision, entry.emitted,
                  entry.emitted_offset) for key, entry in store.items()}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=events_st, cuts=st.lists(st.integers(0, 80), max_size=5),
       watermarks=st.lists(st.one_of(st.none(), st.integers(T0 - 60 * NS_PER_S,
                                                            T0 + 130 * NS_PER_S)),
                           min_size=6, max_size=6),
       horizon_s=st.sampled_from([10, 45, 3600]), write_back=st.booleans())
def test_the_columnar_book_equals_the_book_of_objects(
    events: list[dict[str, Any]], cuts: list[int], watermarks: list[int | None],
    horizon_s: int, write_back: bool,
) -> None:
    window_settings = WindowSettings(horizon_ns=horizon_s * NS_PER_S)
    store = RowsEntryStore({}, b"W1|")
    columnar, objects = ColumnarBook(window_settings, store), WindowBook(window_settings, {})
    bounds = sorted({0, len(events), *(c for c in cuts if c < len(events))})
    for n, (lo, hi) in enumerate(zip(bounds, bounds[1:], strict=False)):
        record = columns_of(events[lo:hi])
        watermark = watermarks[n]
        assert _emitted(columnar.add_columns(record, watermark, offset=n)) == _emitted(
            objects.add_columns(record, watermark, offset=n))
        if watermark is not None:
            assert _emitted(columnar.close_for(watermark, n)) == _emitted(
                objects.close_for(watermark, n))
        if write_back:  # a unit ends: the columns are packed (else they stay as they are)
            store.write_back()
    assert _stored(store) == {key: (e.tenant_id, e.acc.to_list(), e.revision, e.emitted,
                                    e.emitted_offset) for key, e in objects.store.items()}
    assert columnar.late_beyond_horizon == objects.late_beyond_horizon
    assert columnar._closing.entries() == objects._closing.entries()


def _stream(seed: int) -> list[list[dict[str, Any]]]:
    """Five volumes' events over 30 s arriving in records of up to 40, each late by up to
    8 s (some past a closed window: revisions), requests of up to 3 s."""
    rnd = random.Random(seed)
    events = [make_event(rnd.randrange(5), rnd.choice(["read", "write", "flush", "discard"]),
                         rnd.choice(["ok", "ok", "ok", "failed", "invalid"]),
                         T0 + rnd.randrange(30 * NS_PER_S),
                         rnd.choice([0, rnd.randrange(1, 50_000), rnd.randrange(3 * NS_PER_S)]),
                         rnd.randrange(1 << 20)) for _ in range(600)]
    arrival = sorted(events, key=lambda e: e["complete_ns"] + rnd.randrange(8 * NS_PER_S))
    records, at = [], 0
    while at < len(arrival):
        size = rnd.randrange(1, 40)
        records.append(arrival[at:at + size])
        at += size
    return records


def _replay_stream(seed: int, window_settings: WindowSettings,
                   remake_every: int | None = None) -> tuple[int, int]:
    """The records of ``_stream(seed)`` into a columnar book and a book of objects, the
    watermark following them (grace 2 s) and closing windows, a unit ending after each
    record (the columnar book made again from its table alone every ``remake_every``-th,
    as a new owner's): the same emissions, windows and late count throughout. Returns the
    revisions made and the windows the objects' book made."""
    store = RowsEntryStore({}, b"W1|")
    columnar = ColumnarBook(window_settings, store)
    objects = WindowBook(window_settings, {})
    watermark: int | None = None
    revisions = made = 0
    for n, record in enumerate(_stream(seed)):
        if remake_every and n % remake_every == remake_every - 1:
            store = RowsEntryStore(store.table, b"W1|")
            columnar = ColumnarBook(window_settings, store)
            columnar.rebuild_index()
        batch, before = columns_of(record), len(objects.store)
        revised = columnar.add_columns(batch, watermark, offset=n)
        assert _emitted(revised) == _emitted(objects.add_columns(batch, watermark, offset=n))
        revisions += len(revised)
        made += len(objects.store) - before
        watermark = max(watermark or 0, max(e["complete_ns"] for e in record) - 2 * NS_PER_S)
        assert _emitted(columnar.close_for(watermark, n)) == _emitted(
            objects.close_for(watermark, n))
        store.write_back()
        _check_written_rows(store)
    assert _stored(store) == {key: (e.tenant_id, e.acc.to_list(), e.revision, e.emitted,
                                    e.emitted_offset) for key, e in objects.store.items()}
    assert columnar.late_beyond_horizon == objects.late_beyond_horizon
    return revisions, made


@pytest.mark.parametrize(("horizon_s", "chunk"), [(5, 4096), (3600, 4096), (3600, 3)])
def test_a_stream_with_late_events_is_the_same_as_objects(
        horizon_s: int, chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Records arriving late into closed windows (revisions) and past the horizon, closed
    as the watermark moves, a unit ending after each: the same emissions and windows,
    also when a call's windows go in chunks of 3."""
    monkeypatch.setattr(columnar_module, "CHUNK_WINDOWS", chunk)
    window_settings = WindowSettings(grace_ns=2 * NS_PER_S, horizon_ns=horizon_s * NS_PER_S)
    assert sum(_replay_stream(seed, window_settings)[0] for seed in range(6)) > 0


def test_the_windows_known_new_are_never_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    """The windows add_columns does not look up (ColumnarBook._surely_new) are none of the
    stored ones, also after the book is made again from its table (a new owner, which
    knows nothing until it closes windows), and most of a stream's new windows are known
    so; the outcome stays the objects' (late events, revisions, closes)."""
    checked: list[Any] = []
    take_rows = RowsEntryStore.take_rows

    def checking(self: RowsEntryStore, keys: Any, new: np.ndarray | None = None) -> Any:
        for key, is_new in zip(keys, [] if new is None else new.tolist(), strict=False):
            if is_new:
                assert self.peek(key) is None, key
                checked.append(key)
        return take_rows(self, keys, new)

    monkeypatch.setattr(RowsEntryStore, "take_rows", checking)
    window_settings = WindowSettings(grace_ns=2 * NS_PER_S, horizon_ns=3600 * NS_PER_S)
    made = sum(_replay_stream(seed, window_settings, remake_every=9)[1] for seed in range(4))
    assert len(checked) > made // 2, (len(checked), made)


def _check_written_rows(store: RowsEntryStore) -> None:
    """What a write-back keeps as columns for the next unit is what the table now holds,
    and its columns are those windows' alone (no other window's columns pinned with
    them), so the store holds at most one unit's windows besides the table."""
    pinned = {id(rows): rows for rows, _ in store._written_rows.values()}
    assert sum(len(rows.keys) for rows in pinned.values()) == len(store._written_rows)
    for key, (rows, k) in store._written_rows.items():
        assert rows.keys[k] == key
        entry, stored = rows.entry(k), store.decode(store.table[store._key(key)])
        assert (entry.tenant_id, entry.acc.to_list(), entry.revision, entry.emitted,
                entry.emitted_offset) == (stored.tenant_id, stored.acc.to_list(),
                                          stored.revision, stored.emitted,
                                          stored.emitted_offset)


@settings(max_examples=150, deadline=None)
@given(st.lists(windows(), min_size=1, max_size=12), st.data())
def test_rollup_parts_go_into_their_own_windows_whatever_the_chunks(
        accs: list[WindowAcc], data: st.DataObject) -> None:
    """ColumnarBook.add_parts (RollupBook.add_emitted's: parts, each naming its window),
    in two calls, the second into windows the first stored (and maybe emitted), its calls
    cut into chunks of any size: each window ends as merging its parts into it in turn
    makes it (WindowAcc.merge), and an emitted window changed gets a new revision."""
    n_keys = data.draw(st.integers(1, len(accs)))
    owner = [data.draw(st.integers(0, n_keys - 1)) for _ in accs]
    first = [data.draw(st.booleans()) for _ in accs]
    close_between = data.draw(st.booleans())
    keys = [(f"vol-{k:02d}", 0) for k in range(n_keys)]
    store = RowsEntryStore({}, b"M1|")
    book = ColumnarBook(WindowSettings(), store, MINUTE_NS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(columnar_module, "CHUNK_WINDOWS", data.draw(st.integers(1, 4)))
        for call in (True, False):
            picked = [i for i in range(len(accs)) if first[i] == call]
            reach = sorted({owner[i] for i in picked})
            if not reach:
                continue
            cols = gather([accs[i] for i in picked], [()] * len(picked))
            assert cols is not None
            made = book.add_parts([keys[k] for k in reach], ["tenant"] * len(reach), cols,
                                  np.array([reach.index(owner[i]) for i in picked]), 7)
            assert made is not None
            emitted_before = call is False and close_between
            assert [(e.volume_id, e.revision) for e in made] == (
                [(keys[k][0], 1) for k in reach if any(
                    first[i] and owner[i] == k for i in range(len(accs)))]
                if emitted_before else [])
            store.write_back()
            if close_between and call:
                book.close_for(10 * MINUTE_NS, 5)
                store.write_back()
    want = {}
    for k, key in enumerate(keys):
        mine = [i for i in range(len(accs)) if owner[i] == k]
        if mine:
            acc = WindowAcc.empty(0, MINUTE_NS)
            for i in sorted(mine, key=lambda i: not first[i]):  # the first call's first
                acc.merge(accs[i])
            want[key] = acc
    assert {key: entry.acc for key, entry in store.items()} == want
