"""JournaledTable: the writes of a unit land all or none, whatever prefix of the changelog
messages a crash leaves."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.batch import EventBatch
from streams.core.times import NS_PER_S
from streams.core.windows.book import WindowSettings
from streams.core.windows.ranges import table_items_between
from streams.core.windows.stages import PartitionWindows
from streams.state.journal import JOURNAL_FORMAT, JournaledTable, decode_journal
from streams.state.stages import open_partition_windows
from tests.unit.state.test_crash_replay import Changelogged, restored

JOURNAL = b"0|journal"
FIRST = b"0|journal|0|0"  # slot 0, chunk 0


def data_of(table: JournaledTable | dict[bytes, bytes]) -> dict[bytes, bytes]:
    """The table's keys but the journal's."""
    return {k: table[k] for k in table if not k.startswith(JOURNAL)}


def test_reads_see_the_pending_writes_and_deletes_first() -> None:
    under = {b"a": b"1", b"b": b"2"}
    table = JournaledTable(under, JOURNAL)
    table[b"a"] = b"10"
    table[b"c"] = b"3"
    del table[b"b"]
    assert under == {b"a": b"1", b"b": b"2"}  # nothing written before the commit
    assert table[b"a"] == b"10" and table.get(b"c") == b"3"
    assert b"b" not in table and table.get(b"b") is None and table.get(b"b", b"x") == b"x"
    with pytest.raises(KeyError):
        table[b"b"]
    with pytest.raises(KeyError):
        del table[b"b"]
    assert sorted(table) == [b"a", b"c"] and len(table) == 2
    table[b"b"] = b"20"  # written again after its delete
    assert sorted(table) == [b"a", b"b", b"c"]


class _ManyReads(dict[bytes, bytes]):
    """A table that reads many keys at once (as pipeline/tables.py's), counting calls."""

    calls: list[list[bytes]]

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        self.calls = [*getattr(self, "calls", []), keys]
        return [self.get(key) for key in keys]


@pytest.mark.parametrize("under", [{b"a": b"1", b"b": b"2", b"d": b"4"},
                                   _ManyReads({b"a": b"1", b"b": b"2", b"d": b"4"})])
def test_many_reads_at_once_see_the_pending_writes_and_deletes_first(
        under: dict[bytes, bytes]) -> None:
    table = JournaledTable(under, JOURNAL)
    table[b"a"] = b"10"
    table[b"c"] = b"3"
    del table[b"b"]
    keys = [b"a", b"b", b"c", b"d", b"e"]
    assert table.get_many(keys) == [table.get(key) for key in keys] == [
        b"10", None, b"3", b"4", None]
    if isinstance(under, _ManyReads):  # the table is asked once, for what is not pending
        assert under.calls == [[b"d", b"e"]]


def test_a_commit_writes_the_journal_first_then_what_changed() -> None:
    under = Changelogged({b"a": b"1", b"b": b"2", b"c": b"3"})
    table = JournaledTable(under, JOURNAL)
    table[b"a"] = b"10"
    del table[b"c"]
    table[b"d"] = b"4"
    del table[b"d"]  # made and dropped in the same unit: nothing to write
    table[b"a"] = b"11"  # the last write of a key wins
    assert table.commit() == 2
    assert [key for key, _ in under.log] == [FIRST, b"a", b"c"]
    journal = under.log[0][1]
    assert journal is not None and journal[0] == JOURNAL_FORMAT
    assert list(decode_journal(journal)) == [(b"a", b"11"), (b"c", None)]
    assert under.data == {b"a": b"11", b"b": b"2", FIRST: journal}
    assert table.commit() == 0 and len(under.log) == 3  # nothing pending: nothing written
    table[b"b"] = b"3"
    assert table.commit() == 1
    assert [key for key, _ in under.log[3:]] == [b"0|journal|1|0", b"b"]  # the other slot


def test_a_discarded_unit_writes_nothing() -> None:
    under = Changelogged({b"a": b"1"})
    table = JournaledTable(under, JOURNAL)
    table[b"a"] = b"2"
    del table[b"a"]
    table.discard()
    assert table.commit() == 0 and under.log == [] and table[b"a"] == b"1"


def test_an_unknown_journal_format_is_refused() -> None:
    with pytest.raises(ValueError, match="format"):
        JournaledTable({FIRST: b"\x63" + bytes(16)}, JOURNAL)


KEYS = [b"k%d" % i for i in range(6)]
units = st.lists(  # a unit: writes (value) and deletes (None), over a few keys
    st.lists(st.tuples(st.sampled_from(KEYS), st.none() | st.binary(max_size=40)), max_size=8),
    max_size=6)


def run(table: JournaledTable, unit: list[tuple[bytes, bytes | None]]) -> None:
    for key, value in unit:
        if value is None:
            if key in table:
                del table[key]
        else:
            table[key] = value
    table.commit()


def crash_and_rebuild(state: dict[bytes, bytes], work: list[list[tuple[bytes, bytes | None]]],
                      cut: float, chunk_bytes: int, whole_bytes: int | None = None
                      ) -> tuple[dict[bytes, bytes], list[dict[bytes, bytes]]]:
    """Run the units on a table holding ``state``; a crash keeps a prefix of the messages
    (none that cuts a unit's writes that land whole, under ``whole_bytes``). Returns the
    restored table and the states the units left, the first before them."""
    under = Changelogged(dict(state), whole_bytes)
    table = JournaledTable(under, JOURNAL, chunk_bytes)
    states = [data_of(table)]
    for unit in work:
        run(table, unit)
        states.append(data_of(table))
    return restored(state, under.kept(int(cut * (len(under.log) + 1)))), states


@settings(max_examples=300, deadline=None)
@given(before=units, first=units, second=units, cuts=st.tuples(st.floats(0, 1), st.floats(0, 1)),
       chunk_bytes=st.sampled_from([1, 30, 100, 1 << 20]),
       whole_bytes=st.sampled_from([None, 0, 90, 1 << 20]))
def test_any_crash_leaves_the_state_between_two_units(
    before: list[list[tuple[bytes, bytes | None]]], first: list[list[tuple[bytes, bytes | None]]],
    second: list[list[tuple[bytes, bytes | None]]], cuts: tuple[float, float], chunk_bytes: int,
    whole_bytes: int | None,
) -> None:
    """Small chunk sizes journal a unit in several messages: the unit is redone only if
    they all landed. Two crashes in a row: the first one's redo goes into the next unit.
    Units whose writes land whole (``whole_bytes``) journal nothing but that they came,
    mixed with units that journal (90 bytes: some do, some do not)."""
    committed, _ = crash_and_rebuild({}, before, 1.0, chunk_bytes, whole_bytes)
    table, states = crash_and_rebuild(committed, first, cuts[0], chunk_bytes, whole_bytes)
    seen = data_of(JournaledTable(dict(table), JOURNAL, chunk_bytes))
    assert seen in states
    table, states = crash_and_rebuild(table, second, cuts[1], chunk_bytes, whole_bytes)
    assert states[0] == seen
    assert data_of(JournaledTable(dict(table), JOURNAL, chunk_bytes)) in states


def test_a_unit_that_lands_whole_is_journaled_empty_and_no_older_one_is_redone() -> None:
    """A journaled unit, then one that lands whole over the same keys: its journal carries
    no copy, and a table restored after it redoes nothing of the older unit's journal."""
    under = Changelogged({}, whole_bytes=200)
    table = JournaledTable(under, JOURNAL)
    for key in KEYS:
        table[key] = b"x" * 40  # 6 x 42 bytes: journaled
    table.commit()
    assert under.whole_calls == 0
    journaled, logged = dict(under.data), len(under.log)
    table[KEYS[0]] = b"y"
    table.commit()
    assert under.whole_calls == 1
    empty = [v for k, v in under.log[logged:] if k.startswith(JOURNAL)]
    assert [list(decode_journal(v)) for v in empty if v is not None] == [[]]
    again = JournaledTable(dict(under.data), JOURNAL)
    assert again.redone == 0 and data_of(again)[KEYS[0]] == b"y"
    # a crash inside the second unit's batch keeps none of it
    assert data_of(JournaledTable(restored({}, under.kept(logged + 1)),
                                  JOURNAL)) == data_of(journaled)


def test_stale_chunks_of_a_bigger_unit_are_not_redone() -> None:
    under = Changelogged({})
    table = JournaledTable(under, JOURNAL, chunk_bytes=20)
    states = [{}]
    for value in (b"x" * 10, b"y", b"z"):  # units of 6, 1 and 1 chunks; 1 and 3 in slot 0
        for key in KEYS if len(value) > 1 else KEYS[:1]:
            table[key] = value
        table.commit()
        states.append(data_of(table))
    assert sorted(k for k in under.data if k.startswith(JOURNAL)) == [  # stale ones dropped
        b"0|journal|0|0", b"0|journal|1|0"]
    for cut in range(len(under.log) + 1):
        assert data_of(JournaledTable(restored({}, under.log[:cut]), JOURNAL, 20)) in states


def test_a_cut_journal_in_several_chunks_keeps_the_redo_it_carried() -> None:
    """The crash lands a unit's journal but none of its writes; the next owner's first unit
    carries them in its journal of two chunks, and a crash lands only the first chunk:
    the unit before it is still whole in the other slot, and redone."""
    under = Changelogged({})
    table = JournaledTable(under, JOURNAL, chunk_bytes=1)
    table[b"k0"], table[b"k1"] = b"a", b"b"
    table.commit()
    journal = [m for m in under.log if m[0].startswith(JOURNAL)]
    assert len(journal) == 2
    restarted_with = restored({}, journal)
    under = Changelogged(dict(restarted_with))
    table = JournaledTable(under, JOURNAL, chunk_bytes=1)
    assert table.redone == 2 and data_of(table) == {b"k0": b"a", b"k1": b"b"}
    table.commit()
    assert under.log[0][0] == b"0|journal|1|0"
    restarted = JournaledTable(restored(restarted_with, under.log[:1]), JOURNAL, chunk_bytes=1)
    assert data_of(restarted) == {b"k0": b"a", b"k1": b"b"}


def test_a_failed_call_of_partition_windows_writes_nothing() -> None:
    table: dict[bytes, bytes] = {}
    windows = open_partition_windows(0, table, WindowSettings())
    t = 1_700_000_000 * NS_PER_S

    def events(windows: PartitionWindows, start: int) -> list:
        batch = EventBatch("v", "t", bytes(3), bytes(3), [4096] * 3, [start] * 3,
                           [start + 1000, start + NS_PER_S, start + 5 * NS_PER_S], [0, 1, 2])
        return windows.on_events(batch, start, ("p", start))

    events(windows, t)
    before = dict(table)

    close_for = windows.billing.close_for

    def broken(watermark_ns: int | None, offset: int = -1) -> list:
        close_for(watermark_ns, offset)  # the billing hour closes, then the call fails
        raise RuntimeError("half-way")

    windows.billing.close_for = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        events(windows, t + 10 * NS_PER_S)  # 1 s windows close (written) before the failure
    assert table == before and windows.take_billing() == []
    windows.billing.close_for = close_for  # type: ignore[method-assign]
    again = events(windows, t + 10 * NS_PER_S)
    fresh_table = dict(before)
    fresh = open_partition_windows(0, fresh_table, WindowSettings())
    assert again == events(fresh, t + 10 * NS_PER_S)
    assert table == fresh_table


@settings(max_examples=200, deadline=None)
@given(under=st.dictionaries(st.binary(max_size=4), st.binary(max_size=3), max_size=20),
       writes=st.dictionaries(st.binary(max_size=4), st.one_of(st.none(), st.binary(max_size=3)),
                              max_size=10),
       lo=st.binary(max_size=3), hi=st.binary(max_size=3))
def test_a_journaled_tables_range_scan_sees_its_pending_writes_and_deletes(
    under: dict[bytes, bytes], writes: dict[bytes, bytes | None], lo: bytes, hi: bytes,
) -> None:
    table = JournaledTable(dict(under), b"\xfe")
    for key, value in writes.items():
        if value is not None:
            table[key] = value
        elif key in table:
            del table[key]
    seen = {k: table[k] for k in table}
    want = sorted((k, v) for k, v in seen.items() if lo <= k < hi)
    assert list(table.items_between(lo, hi)) == want
    assert list(table_items_between(table, lo, hi)) == want
    table.commit()  # written through: the same (and the journal, if in range)
    assert list(table.items_between(lo, hi)) == sorted((k, table[k]) for k in table
                                                       if lo <= k < hi)
    assert [kv for kv in table.items_between(lo, hi) if not kv[0].startswith(b"\xfe")] == \
        [kv for kv in want if not kv[0].startswith(b"\xfe")]
