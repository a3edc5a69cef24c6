"""The packed form of stored windows, parts and billing entries: it round-trips exactly
(Python ints of any size; busy intervals, which lie in their window, int64), the older
JSON still loads, and it is small."""

from __future__ import annotations

import functools
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.batch import EventBatch
from streams.core.billing import BillingEntry
from streams.core.counters import N_SLOTS, SLOTS_PER_OP, table_json
from streams.core.events import OPS
from streams.core.times import NS_PER_S
from streams.core.windows.acc import N_BINS, NO_BUSY, OpAcc, WindowAcc
from streams.core.windows.book import WindowBook, WindowEntry, WindowSettings
from streams.core.windows.columns import gather_fitting, to_accs
from streams.core.windows.exphist import ExpHistogram
from streams.core.windows.packed import (
    PACKED_VERSION,
    pack_billing,
    pack_billings,
    pack_entries,
    pack_entry,
    unpack_billing,
    unpack_columns,
    unpack_entry,
)
from streams.core.windows.stores import BillingStore, EntryStore, PartsStore
from tests.unit.core.windows.strategies import int64_op_accs, ints

# Mostly zeros and small values, sometimes far past int64 (either sign).
BIG = st.one_of(st.just(0), st.integers(-5, 300), st.integers(-(2**64), 2**64),
                st.integers(-(2**200), 2**200))
MAYBE = st.one_of(st.none(), BIG)
INT64 = 1 << 63


COUNT = st.one_of(st.integers(0, 3), st.integers(0, 2**70))


@st.composite
def exp_histograms(draw: st.DrawFn) -> ExpHistogram:
    """Non-empty and trimmed, as an op with a timed event has it."""
    counts = draw(st.lists(COUNT, max_size=40))
    if counts:
        counts[0] = counts[-1] = draw(st.integers(1, 2**70))
    zero = draw(COUNT) if counts else draw(st.integers(1, 2**70))
    return ExpHistogram(draw(BIG) if counts else 0, counts, zero)


@st.composite
def op_accs(draw: st.DrawFn, bins: int = N_BINS) -> OpAcc:
    min_ns = draw(MAYBE)
    # acc.OpAcc: empty exactly when min_ns is None, None (not known) only when it is not
    exp = ExpHistogram() if min_ns is None else draw(st.one_of(st.none(), exp_histograms()))
    return OpAcc(draw(st.lists(BIG, min_size=SLOTS_PER_OP, max_size=SLOTS_PER_OP)),
                 min_ns, draw(MAYBE), draw(st.lists(BIG, min_size=bins, max_size=bins)),
                 draw(BIG), exp)


@st.composite
def window_accs(draw: st.DrawFn) -> WindowAcc:
    bins = draw(st.sampled_from([N_BINS, N_BINS, 0, 3]))
    ops = draw(st.lists(op_accs(bins), min_size=len(OPS), max_size=len(OPS)))
    for at in draw(st.sets(st.integers(0, len(OPS) - 1))):  # quiet ops: most windows have
        ops[at] = OpAcc([0] * SLOTS_PER_OP, None, None, [0] * bins, 0, ExpHistogram())
    if draw(st.booleans()):  # an op whose empty histogram is not the usual length
        ops[0].histogram = [0] * draw(st.integers(0, 30))
    start, length = draw(BIG), draw(BIG)
    if draw(st.booleans()) and -INT64 <= start and start + abs(length) < INT64:
        # as a window has them: sorted, disjoint, inside it; many (read by numpy), or few
        bounds = sorted(set(draw(st.lists(st.integers(start, start + abs(length)),
                                          max_size=draw(st.sampled_from([7, 80]))))))
        busy = [bounds[i:i + 2] for i in range(0, len(bounds) - 1, 2)]
    else:  # anything int64 holds, in any order (packed one by one, read back exactly)
        busy = draw(st.lists(st.lists(st.integers(-INT64, INT64 - 1), min_size=2, max_size=2),
                             max_size=8))
    return WindowAcc(start, length, ops, busy, draw(BIG))


ENTRIES = st.builds(WindowEntry, st.text(max_size=12), window_accs(), BIG, st.booleans(), BIG)


@settings(max_examples=300, deadline=None)
@given(ENTRIES)
def test_a_window_entry_round_trips_exactly(entry: WindowEntry) -> None:
    store = EntryStore({}, b"0|w1|")
    data = store.encode(entry)
    assert data[0] == PACKED_VERSION
    assert store.decode(data) == entry


@settings(max_examples=200, deadline=None)
@given(BIG, window_accs())
def test_a_rollup_part_round_trips_exactly(revision: int, acc: WindowAcc) -> None:
    store = PartsStore({}, b"0|r60|p|")
    assert store.decode(store.encode((revision, acc))) == (revision, acc)


COUNTERS = st.lists(BIG, min_size=N_SLOTS, max_size=N_SLOTS)


@settings(max_examples=200, deadline=None)
@given(st.builds(BillingEntry, st.text(max_size=12), st.one_of(st.none(), COUNTERS), BIG,
                 st.lists(st.tuples(BIG, BIG, COUNTERS).map(list), max_size=3)))
def test_a_billing_entry_round_trips_exactly(entry: BillingEntry) -> None:
    store = BillingStore({}, b"0|b|")
    assert store.decode(store.encode(entry)) == entry


HOURS = st.tuples(st.text(max_size=12), st.one_of(st.none(), COUNTERS), BIG,
                  st.lists(st.tuples(BIG, BIG, COUNTERS).map(list), max_size=2))
INT64_COUNTERS = st.lists(st.one_of(st.just(0), st.integers(-(1 << 63), (1 << 63) - 1)),
                          min_size=N_SLOTS, max_size=N_SLOTS)
OPEN_HOURS = st.tuples(st.sampled_from(["t1", "t2", "ténant", ""]), INT64_COUNTERS,
                       st.integers(0, 1 << 40), st.just([]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(OPEN_HOURS, HOURS), max_size=12))
def test_billing_hours_packed_at_once_are_byte_for_byte_those_packed_one_by_one(
        hours: list[Any]) -> None:
    """pack_billings (the vectorised write-back) against pack_billing, its oracle: open
    hours with int64 counters (laid out at once), and any others (one by one; a counter
    past int64 sends them all that way)."""
    assert pack_billings(hours) == [pack_billing(*hour) for hour in hours]
    store = BillingStore({}, b"0|b|")
    entries = [BillingEntry(*hour) for hour in hours]
    assert [store.decode(v) for v in store.encode_many(entries)] == entries


def test_counter_lists_of_other_lengths_are_packed_one_by_one() -> None:
    hours = [("t", [1, 0, 3], 0, []), ("t", [0] * N_SLOTS, 2, []), ("u", [5] * 62, 1, []),
             ("u", [7] * 63, 1, [])]
    assert pack_billings(hours) == [pack_billing(*hour) for hour in hours]
    assert pack_billings(hours[2:3]) == [pack_billing(*hours[2])]  # 62 counters: at once
    assert pack_billings(hours[3:]) == [pack_billing(*hours[3])]  # 63: one by one


def test_empty_values_round_trip() -> None:
    entry = WindowEntry("", WindowAcc(0, NS_PER_S))
    assert unpack_entry(pack_entry("", entry.acc, 0, False, -1)) == ("", entry.acc, 0, False, -1)
    assert BillingStore({}, b"").decode(BillingStore({}, b"").encode(BillingEntry("t"))) == \
        BillingEntry("t")
    assert unpack_billing(BillingStore({}, b"").encode(BillingEntry("t", None)))[1] is None


@settings(max_examples=100, deadline=None)
@given(ENTRIES)
def test_the_older_json_still_loads(entry: WindowEntry) -> None:
    """A changelog written by the previous version: its values are compact JSON."""
    values = [entry.tenant_id, entry.acc.to_list(), entry.revision, entry.emitted,
              entry.emitted_offset]
    if any(not -(2**63) <= v < 2**63 for v in _ints(values)):
        return  # orjson cannot write these, so no older value holds them
    old = table_json(values)
    assert EntryStore({}, b"").decode(old) == entry
    part = table_json([entry.revision, entry.acc.to_list()])
    assert PartsStore({}, b"").decode(part) == (entry.revision, entry.acc)


def test_older_billing_json_still_loads() -> None:
    old = table_json(["t", [1] * N_SLOTS, 3, [[5, 2, [0] * N_SLOTS]]])
    assert BillingStore({}, b"").decode(old) == BillingEntry("t", [1] * N_SLOTS, 3,
                                                             [[5, 2, [0] * N_SLOTS]])


def test_bytes_after_a_value_are_an_error() -> None:
    with pytest.raises(ValueError, match="after a packed value"):
        unpack_entry(pack_entry("t", WindowAcc(0, NS_PER_S), 0, False, -1) + b"\0")


def _ints(values: object) -> list[int]:
    if isinstance(values, list):
        return [i for v in values for i in _ints(v)]
    return [values] if isinstance(values, int) and not isinstance(values, bool) else []


def realistic_window(events: int = 300, seed: int = 7) -> WindowEntry:
    """One volume's 1 s window of a few hundred reads and writes (the WindowBook makes it)."""
    rng = random.Random(seed)
    start = 1_764_800_000 * NS_PER_S
    complete = sorted(start + rng.randrange(NS_PER_S) for _ in range(events))
    latency = [rng.randrange(50_000, 3_000_000) for _ in range(events)]
    batch = EventBatch(
        "vol-000123", "tenant-0042", bytes(rng.choice((0, 1)) for _ in range(events)),
        bytes(events), [rng.choice((4096, 8192, 65536)) for _ in range(events)],
        [c - lat for c, lat in zip(complete, latency, strict=True)], complete, range(events))
    book = WindowBook(WindowSettings(), {})  # type: ignore[arg-type]
    book.add_events(batch, None)
    return book.store[("vol-000123", start)]


def test_a_realistic_window_is_small_and_far_smaller_than_json() -> None:
    """The figure the bench's (j) reports per stored window, made from a real window."""
    entry = realistic_window()
    packed = EntryStore({}, b"").encode(entry)
    old = table_json([entry.tenant_id, entry.acc.to_list(), entry.revision, entry.emitted,
                      entry.emitted_offset])
    assert EntryStore({}, b"").decode(packed) == entry
    assert len(entry.acc.busy) > 50  # the busy intervals are in it: most of its bytes
    assert len(packed) * 4 < len(old)
    entry.acc.busy = NO_BUSY  # past the revision horizon a window keeps only busy_ns
    exps = [op.exp for op in entry.acc.ops]
    with_exp = len(EntryStore({}, b"").encode(entry))
    for op in entry.acc.ops:
        op.exp = None if op.min_ns is not None else op.exp
    assert len(EntryStore({}, b"").encode(entry)) <= 256
    # The exponential histograms add at most a byte per bucket of their span, plus a few.
    spans = sum(len(e.counts) + 8 for e in exps if e is not None and e.counts)
    assert with_exp <= 256 + spans


def test_a_window_stored_before_the_exponential_histogram_reads_as_not_known() -> None:
    """Packed values and older JSON written before it have no exp: an op with a timed event
    reads back None (its percentiles then come from the 20-bin histogram), others empty."""
    entry = realistic_window()
    acc = entry.acc
    for op in acc.ops:
        op.exp = None if op.min_ns is not None else op.exp
    old_json = table_json([entry.tenant_id, [acc.window_start_ns, acc.window_len_ns,
                                             [o.to_list()[:-1] for o in acc.ops], acc.busy.tolist(),
                                             acc.busy_ns], 0, False])
    packed = pack_entry(entry.tenant_id, acc, 0, False, -1)  # writes no exp for None
    for data in (old_json, packed):
        back = EntryStore({}, b"").decode(data).acc
        assert [o.exp for o in back.ops] == [None if o.min_ns is not None else ExpHistogram()
                                             for o in acc.ops]
    assert any(o.exp is None for o in acc.ops) and any(o.exp is not None for o in acc.ops)


@settings(max_examples=150, deadline=None)
@given(st.lists(ENTRIES, max_size=8))
def test_many_windows_pack_as_each_alone(entries: list[WindowEntry]) -> None:
    """The batch packer (one numpy pass over all their integers) writes pack_entry's bytes;
    values past int64 (BIG) take the one-by-one path."""
    items = [(e.tenant_id, e.acc, e.revision, e.emitted, e.emitted_offset) for e in entries]
    assert pack_entries(items) == [pack_entry(*item) for item in items]


# What the columns (columns.py) hold: int64 values, trimmed histograms with runs of zeros.
I64 = ints(2**62)
columnar_ops = functools.partial(int64_op_accs, 2**62, 2**40, 40, I64)


@st.composite
def columnar_entries(draw: st.DrawFn) -> WindowEntry:
    ops = draw(st.lists(columnar_ops(), min_size=len(OPS), max_size=len(OPS)))
    for at in draw(st.sets(st.integers(0, len(OPS) - 1))):
        ops[at] = WindowAcc.empty(0, 1).ops[at]
    start, length = draw(I64), draw(st.integers(1, 2**40))
    bounds = sorted(set(draw(st.lists(st.integers(start, start + length),
                                      max_size=draw(st.sampled_from([0, 7, 80]))))))
    busy = [bounds[i:i + 2] for i in range(0, len(bounds) - 1, 2)]
    return WindowEntry(draw(st.text(max_size=5)), WindowAcc(start, length, ops, busy, draw(I64)),
                       draw(I64), draw(st.booleans()), draw(I64))


@settings(max_examples=200, deadline=None)
@given(st.lists(columnar_entries(), min_size=1, max_size=8))
def test_windows_the_columns_hold_pack_as_each_alone(entries: list[WindowEntry]) -> None:
    """The same, where every window is laid out by the columns (none packed alone)."""
    items = [(e.tenant_id, e.acc, e.revision, e.emitted, e.emitted_offset) for e in entries]
    cols, fits = gather_fitting([e.acc for e in entries],
                                [(e.revision, e.emitted_offset) for e in entries])
    assert cols is not None and fits.all()
    assert pack_entries(items) == [pack_entry(*item) for item in items]
    assert [unpack_entry(data)[1] for data in pack_entries(items)] == [e.acc for e in entries]


def _entry(start: int) -> WindowEntry:
    acc = WindowAcc.empty(start, NS_PER_S)
    acc.ops[0].counts[0], acc.ops[0].min_ns, acc.ops[0].max_ns = 3, 10, 70_000
    acc.ops[0].exp = ExpHistogram(400, [1, 0, 0, 2], 0)
    return WindowEntry("t", acc, 1, True, 7)


def test_a_sealed_window_is_written_at_the_units_end_and_never_changed_after() -> None:
    """seal(): what an emission carries. A get (to change it) reads a copy, which is
    written at once; peek (to read it) the object itself; write_back writes the rest."""
    table: dict[bytes, bytes] = {}
    store = EntryStore(table, b"0|W1|")
    emitted, other = _entry(0), _entry(NS_PER_S)
    store[("v", 0)] = emitted
    store[("v", NS_PER_S)] = other
    store.seal(("v", 0))
    store.seal(("v", NS_PER_S))
    assert table == {} and store.peek(("v", 0)) is emitted and ("v", 0) in store
    copy = store.get(("v", 0))
    assert copy == emitted and copy is not emitted
    assert table == {store._key(("v", 0)): store.encode(emitted)}
    copy.acc.ops[0].counts[0] += 1  # a late event's revision
    store[("v", 0)] = copy
    assert emitted.acc.ops[0].counts[0] == 3 and store.peek(("v", 0)) is copy
    store.write_back()
    assert table == {store._key(("v", 0)): store.encode(copy),
                     store._key(("v", NS_PER_S)): store.encode(other)}
    # a write-back keeps no object of a volume the write-back before did not write
    assert store.peek(("v", 0)) == copy and store.peek(("v", 0)) is not copy


def test_a_busy_volumes_values_written_back_are_read_again_as_objects() -> None:
    """What a unit wrote (not sealed) of a volume the unit before wrote too is kept as
    objects: a get returns the object (no longer kept: the caller may change it and
    writes it back). The next write-back, a delete or a failed unit drops it, and the
    table's bytes are read anew; a volume written once (a quiet one) is never kept."""
    table: dict[bytes, bytes] = {}
    store = EntryStore(table, b"0|W1|")
    first, second, quiet = _entry(0), _entry(NS_PER_S), _entry(0)
    store[("v", 0)] = first
    store.write_back()  # v written once: nothing kept
    assert store.peek(("v", 0)) == first and store.peek(("v", 0)) is not first
    store[("v", 0)] = first
    store[("q", 0)] = quiet
    store.write_back()  # v written twice in a row: kept; q once: not
    assert store.peek(("q", 0)) == quiet and store.peek(("q", 0)) is not quiet
    got = store.get(("v", 0))
    assert got is first
    got.acc.ops[0].counts[0] += 1
    store[("v", 0)] = got
    store[("v", NS_PER_S)] = second
    store.write_back()
    assert table[store._key(("v", 0))] == store.encode(got)
    assert store.peek(("v", 0)) is got and store.peek(("v", NS_PER_S)) is second
    store[("v", NS_PER_S)] = second
    store.write_back()  # a unit that did not write ("v", 0)
    assert store.get(("v", 0)) == got and store.peek(("v", 0)) is not got
    assert store.peek(("v", NS_PER_S)) is second
    store.forget_unwritten()  # a failed unit may have changed the kept objects
    assert store.peek(("v", NS_PER_S)) == second and store.peek(("v", NS_PER_S)) is not second
    for _ in range(2):
        store[("v", NS_PER_S)] = second
        store.write_back()
    assert store.peek(("v", NS_PER_S)) is second
    del store[("v", NS_PER_S)]
    assert store.get(("v", NS_PER_S)) is None and store.peek(("v", NS_PER_S)) is None
    assert store._key(("v", NS_PER_S)) not in table


def test_a_sealed_window_deleted_or_forgotten_is_not_written() -> None:
    table: dict[bytes, bytes] = {}
    store = EntryStore(table, b"0|W1|")
    store[("v", 0)] = _entry(0)
    store.seal(("v", 0))
    del store[("v", 0)]
    assert ("v", 0) not in store and store.get(("v", 0)) is None
    store[("v", 0)] = _entry(0)
    store.seal(("v", 0))
    store.forget_unwritten()
    store.write_back()
    assert table == {} and store.peek(("v", 0)) is None
    with pytest.raises(KeyError):
        store[("v", 0)]


@settings(max_examples=200, deadline=None)
@given(st.lists(columnar_entries(), min_size=1, max_size=8))
def test_windows_read_at_once_as_columns_are_each_read_alone(
        entries: list[WindowEntry]) -> None:
    """unpack_columns of packed windows the columns hold is unpack_entry of each."""
    datas = [pack_entry(e.tenant_id, e.acc, e.revision, e.emitted, e.emitted_offset)
             for e in entries]
    read = unpack_columns(datas)
    assert read is not None
    cols, tenants = read
    alone = [unpack_entry(data) for data in datas]
    assert tenants == [tenant for tenant, _, _, _, _ in alone]
    assert to_accs(cols) == [acc for _, acc, _, _, _ in alone]
    assert cols.extra.tolist() == [[revision, offset, int(emitted)]
                                   for _, _, revision, emitted, offset in alone]


@settings(max_examples=150, deadline=None)
@given(st.lists(ENTRIES, min_size=1, max_size=8))
def test_windows_the_columns_cannot_hold_are_refused_or_read_exactly(
        entries: list[WindowEntry]) -> None:
    """Values past int64, other histogram lengths, intervals anywhere: read at once
    exactly, or refused (None: the store reads them one by one)."""
    datas = [pack_entry(e.tenant_id, e.acc, e.revision, e.emitted, e.emitted_offset)
             for e in entries]
    read = unpack_columns(datas)
    if read is not None:
        assert to_accs(read[0]) == [unpack_entry(data)[1] for data in datas]
