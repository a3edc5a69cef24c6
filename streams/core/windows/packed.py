"""The packed binary form of stored windows, rollup parts and billing entries.

Pure logic. A stored value starts with :data:`PACKED_VERSION`; the compact JSON the
previous versions wrote starts with ``[`` (0x5b), so a reader tells them apart by the first
byte and a recovering worker still reads a changelog written before (stores.py).

Every integer is a LEB128 varint of its zigzag form, so a Python int of any size round-trips
exactly (no int64 limit). Only what is not zero is written: a presence bitmap says which
fields follow; a histogram is its non-zero bins as (index gap, count) pairs; the exponential
histogram is its offset, length, and counts with each run of zero buckets as one number
(:func:`_write_exp`); busy intervals are gaps and lengths from the window start. A quiet op
of a window costs one byte. A value written before the exponential histogram has no bit for
it: its ops read as "not known" when they have a timed event (acc.OpAcc).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from streams.core.counters import SLOTS_PER_OP
from streams.core.windows import kernels
from streams.core.windows.acc import N_BINS, NO_BUSY, OpAcc, WindowAcc, busy_array
from streams.core.windows.columns import (
    N_OPS,
    Layout,
    WindowColumns,
    gather_fitting,
    to_accs,
    unsigned,
)
from streams.core.windows.exphist import ExpHistogram
from streams.core.windows.varints import zigzag_runs

PACKED_VERSION = 1  # the first byte of every packed value; never '[' or '{'
# OpAcc presence bits
_MIN, _MAX, _HIST, _INFLIGHT, _EXP = range(SLOTS_PER_OP, SLOTS_PER_OP + 5)
_EMITTED, _HAS_COUNTERS = 1, 2  # entry flags


class _Writer:
    __slots__ = ("out",)

    def __init__(self) -> None:
        self.out = bytearray((PACKED_VERSION,))

    def uint(self, n: int) -> None:
        out = self.out
        while n > 0x7F:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)

    def sint(self, n: int) -> None:
        self.uint(n << 1 if n >= 0 else ((-n) << 1) - 1)  # zigzag, for any size

    def text(self, s: str) -> None:
        data = s.encode()
        self.uint(len(data))
        self.out += data

    def ints(self, values: list[int]) -> None:
        """A list of integers, sparse: its length, a bitmap of non-zeros, then those."""
        self.uint(len(values))
        self.uint(sum(1 << i for i, v in enumerate(values) if v))
        for v in values:
            if v:
                self.sint(v)


class _Reader:
    __slots__ = ("data", "at")

    def __init__(self, data: bytes) -> None:
        if not data or data[0] != PACKED_VERSION:
            raise ValueError(f"not a packed value (first byte {data[:1]!r})")
        self.data = data
        self.at = 1

    def uint(self) -> int:
        data, at = self.data, self.at
        byte = data[at]
        n, shift = byte & 0x7F, 7
        at += 1
        while byte & 0x80:
            byte = data[at]
            n |= (byte & 0x7F) << shift
            shift += 7
            at += 1
        self.at = at
        return n

    def sint(self) -> int:
        z = self.uint()
        return z >> 1 if not z & 1 else -((z + 1) >> 1)

    def text(self) -> str:
        size = self.uint()
        start = self.at
        self.at += size
        return self.data[start:self.at].decode()

    def ints(self) -> list[int]:
        size, bits = self.uint(), self.uint()
        return [self.sint() if bits >> i & 1 else 0 for i in range(size)]

    def end(self) -> None:
        if self.at != len(self.data):
            raise ValueError(f"{len(self.data) - self.at} bytes after a packed value")


def _write_op(w: _Writer, op: OpAcc, bins: int) -> None:
    counts, hist = op.counts, op.histogram
    nonzero = [i for i, c in enumerate(hist) if c]
    sparse = bool(nonzero) or len(hist) != bins
    bits = sum(1 << i for i, c in enumerate(counts) if c)
    exp = op.exp
    has_exp = exp is not None and bool(exp.counts or exp.zero)
    bits |= ((op.min_ns is not None) << _MIN | (op.max_ns is not None) << _MAX
             | sparse << _HIST | bool(op.inflight_ns) << _INFLIGHT | has_exp << _EXP)
    w.uint(bits)
    for c in counts:
        if c:
            w.sint(c)
    if op.min_ns is not None:
        w.sint(op.min_ns)
    if op.max_ns is not None:
        w.sint(op.max_ns)
    if sparse:  # bins, pairs of non-zero bins (index gap, count); all bins else are 0
        w.uint(len(hist))
        w.uint(len(nonzero))
        last = -1
        for i in nonzero:
            w.uint(i - last)
            w.sint(hist[i])
            last = i
    if op.inflight_ns:
        w.sint(op.inflight_ns)
    if has_exp:
        assert exp is not None
        _write_exp(w, exp.trimmed())


def _write_exp(w: _Writer, exp: ExpHistogram) -> None:
    """offset, zero, bucket count, then per bucket 2 * count, or for a run of k zero
    buckets 2 * (k - 1) + 1: a sparse window's empty stretches cost a byte each."""
    w.sint(exp.offset)
    w.uint(exp.zero)
    counts = exp.counts
    w.uint(len(counts))
    run = 0
    for c in counts:
        if c:
            if run:
                w.uint((run - 1) << 1 | 1)
                run = 0
            w.uint(c << 1)
        else:
            run += 1  # trimmed: a run always ends before the last bucket


def _read_exp(r: _Reader) -> ExpHistogram:
    offset, zero, size = r.sint(), r.uint(), r.uint()
    counts: list[int] = []
    while len(counts) < size:
        token = r.uint()
        if token & 1:
            counts.extend([0] * ((token >> 1) + 1))
        else:
            counts.append(token >> 1)
    return ExpHistogram(offset, counts, zero)


def _read_op(r: _Reader, bins: int) -> OpAcc:
    bits = r.uint()
    counts = [r.sint() if bits >> i & 1 else 0 for i in range(SLOTS_PER_OP)]
    min_ns = r.sint() if bits >> _MIN & 1 else None
    max_ns = r.sint() if bits >> _MAX & 1 else None
    hist = [0] * bins
    if bits >> _HIST & 1:
        hist = [0] * r.uint()
        at = -1
        for _ in range(r.uint()):
            at += r.uint()
            hist[at] = r.sint()
    inflight = r.sint() if bits >> _INFLIGHT & 1 else 0
    exp = _read_exp(r) if bits >> _EXP & 1 else ExpHistogram() if min_ns is None else None
    return OpAcc(counts, min_ns, max_ns, hist, inflight, exp)


def _write_acc(w: _Writer, acc: WindowAcc) -> None:
    w.sint(acc.window_start_ns)
    w.sint(acc.window_len_ns)
    w.uint(len(acc.ops))
    bins = len(acc.ops[0].histogram) if acc.ops else 0
    w.uint(bins)  # an op's histogram that is all zeros and this long is left out
    for op in acc.ops:
        _write_op(w, op, bins)
    w.uint(len(acc.busy))
    last = acc.window_start_ns
    for lo, hi in acc.busy.tolist():  # sorted and disjoint: small gaps and lengths
        w.sint(lo - last)
        w.sint(hi - lo)
        last = hi
    w.sint(acc.busy_ns)


def _read_acc(r: _Reader) -> WindowAcc:
    start, length = r.sint(), r.sint()
    n_ops, bins = r.uint(), r.uint()
    ops = [_read_op(r, bins) for _ in range(n_ops)]
    n_busy = r.uint()
    busy = _read_busy(r, start, n_busy) if n_busy else NO_BUSY
    return WindowAcc(start, length, ops, busy, r.sint())


_BUSY_VECTOR_MIN = 4  # fewer intervals than this: read in Python (numpy's calls cost more)
_INT64 = 1 << 63
_SPAN_MAX = 1 << 62  # busy intervals within this of their window's start: int64 differences
_LOW7 = np.uint8(0x7F)


def _read_busy(r: _Reader, start: int, n: int) -> np.ndarray:
    """``n`` busy intervals: 2n varints, (gap from the last end, length) each; their
    running sum from ``start`` is the intervals' bounds, in order. Decoded in one numpy
    pass when they are many and each fits in 63 bits (9 bytes), else one by one (which
    raises for a value outside int64, as :func:`busy_array` does)."""
    if n >= _BUSY_VECTOR_MIN and -_INT64 <= start < _INT64:
        rest = np.frombuffer(r.data, dtype=np.uint8, offset=r.at)
        ends = np.flatnonzero(rest < 0x80)[:2 * n]  # the last byte of each varint
        if len(ends) == 2 * n:
            size = int(ends[-1]) + 1
            firsts = np.r_[0, ends[:-1] + 1]
            place = np.arange(size) - np.repeat(firsts, ends - firsts + 1)  # byte k of one
            if int(place.max()) < 9:
                bits = (rest[:size] & _LOW7).astype(np.uint64) << (place * 7).astype(np.uint64)
                zigzag = np.bitwise_or.reduceat(bits, firsts)
                values = ((zigzag >> np.uint64(1)).view(np.int64)
                          ^ -(zigzag & np.uint64(1)).view(np.int64))
                r.at += size
                return (np.cumsum(values) + start).reshape(-1, 2)  # within the window
    flat, last = [], start
    for _ in range(2 * n):
        last += r.sint()
        flat.append(last)
    return busy_array(flat)


def pack_entry(tenant_id: str, acc: WindowAcc, revision: int, emitted: bool,
               emitted_offset: int) -> bytes:
    """A stored window (a WindowEntry's fields)."""
    w = _Writer()
    w.uint(_EMITTED if emitted else 0)
    w.text(tenant_id)
    w.sint(revision)
    w.sint(emitted_offset)
    _write_acc(w, acc)
    return bytes(w.out)


def pack_entries(items: Sequence[tuple[str, WindowAcc, int, bool, int]]) -> list[bytes]:
    """:func:`pack_entry` of many stored windows (its arguments each), the same bytes: their
    integers laid out by numpy over all of them (:func:`pack_columns`). A window the
    columns do not hold (an integer outside int64, an older layout) is packed alone."""
    if not items:
        return []
    out: list[bytes] = [b""] * len(items)
    cols, fits = gather_fitting([acc for _, acc, _, _, _ in items],
                                [(revision, offset) for _, _, revision, _, offset in items])
    if cols is not None:
        kept = np.flatnonzero(fits).tolist()
        made = pack_columns(cols, [items[k][0] for k in kept], [items[k][3] for k in kept])
        for k, data in zip(kept, made, strict=True):
            out[k] = data
    for k in np.flatnonzero(~fits).tolist():
        out[k] = pack_entry(*items[k])
    return out


def pack_columns(cols: WindowColumns, tenants: Sequence[str], emitted: Sequence[bool]
                 ) -> list[bytes]:
    """:func:`pack_entry`'s bytes of windows held as columns (``cols.extra[:, 0]`` and
    ``[:, 1]``: each one's revision and emitted offset): laid out by numpy over all of
    them and varint-encoded together (varints.py). A window whose busy intervals lie too
    far from its start for int64 differences is packed alone, exactly."""
    out: list[bytes] = [b""] * len(cols)
    odd = _odd_busy(cols)
    if odd.any():
        for k, acc in zip(np.flatnonzero(odd).tolist(), to_accs(cols.take(odd)), strict=True):
            out[k] = pack_entry(tenants[k], acc, int(cols.extra[k, 0]), emitted[k],
                                int(cols.extra[k, 1]))
        cols = cols.take(~odd)
    values, ends, _, _ = entry_layout(cols).build()
    blob, bounds = zigzag_runs(values, ends)
    for j, k in enumerate(np.flatnonzero(~odd).tolist()):
        out[k] = _entry_head(tenants[k], emitted[k]) + blob[bounds[j]:bounds[j + 1]]
    return out


def _odd_busy(cols: WindowColumns) -> np.ndarray:
    """The windows whose busy intervals do not all lie within 2**62 after their start
    (a difference between two of them could then leave int64: pack_entry writes those)."""
    odd = np.zeros(len(cols), dtype=bool)
    some = np.flatnonzero(cols.busy_len)
    if len(some):
        flat = cols.busy.reshape(-1)
        firsts = 2 * (np.cumsum(cols.busy_len) - cols.busy_len)[some]
        start = cols.start[some]
        low, high = np.minimum.reduceat(flat, firsts), np.maximum.reduceat(flat, firsts)
        odd[some] = ~((low >= start)
                      & ((high.view(np.uint64) - start.view(np.uint64)) <= _SPAN_MAX))
    return odd


_U_OPS, _U_BINS = (int(u) for u in unsigned(np.array([N_OPS, N_BINS])))


def entry_layout(cols: WindowColumns) -> Layout:
    """The integers :func:`pack_entry` writes after a window's head (flags, tenant), each as
    the signed value whose zigzag varint it writes (an unsigned one through
    :func:`columns.unsigned`); ``cols.extra``: (revision, emitted offset) per window."""
    lay = Layout(len(cols))
    for values in (cols.extra[:, 0], cols.extra[:, 1], cols.start, cols.length):
        lay.one("head", values)
    lay.one("head", _U_OPS)
    lay.one("head", _U_BINS)
    _op_fields(cols, lay)
    lay.one("tail", unsigned(cols.busy_len))
    flat = cols.busy.reshape(-1)
    diffs = np.empty_like(flat)
    if len(flat):
        diffs[1:] = flat[1:] - flat[:-1]
        some = np.flatnonzero(cols.busy_len)
        firsts = 2 * (np.cumsum(cols.busy_len) - cols.busy_len)[some]
        diffs[firsts] = flat[firsts] - cols.start[some]
    lay.many("tail", 2 * cols.busy_len, diffs)
    lay.one("tail", cols.busy_ns)
    return lay


def _op_fields(cols: WindowColumns, lay: Layout) -> None:
    """:func:`_write_op`'s integers of every (window, op) row."""
    counts, hist = cols.counts, cols.histogram
    nonzero = hist != 0
    sparse = nonzero.any(axis=1)
    has_exp = cols.exp_known & (cols.exp_listed | (cols.exp_zero != 0))
    bits = ((counts != 0) << np.arange(SLOTS_PER_OP)).sum(axis=1)
    bits |= (cols.has_min.astype(np.int64) << _MIN | cols.has_max.astype(np.int64) << _MAX
             | sparse.astype(np.int64) << _HIST
             | (cols.inflight_ns != 0).astype(np.int64) << _INFLIGHT
             | has_exp.astype(np.int64) << _EXP)
    lay.one("ops", unsigned(bits))
    for slot in range(SLOTS_PER_OP):
        lay.maybe("ops", counts[:, slot] != 0, counts[:, slot])
    lay.maybe("ops", cols.has_min, cols.min_ns)
    lay.maybe("ops", cols.has_max, cols.max_ns)
    # a histogram with a count: bins, then pairs of non-zero bins (index gap, count)
    n_nonzero = nonzero.sum(axis=1)
    lay.maybe("ops", sparse, _U_BINS)
    lay.maybe("ops", sparse, unsigned(n_nonzero))
    where = np.flatnonzero(nonzero.reshape(-1))
    column = where % N_BINS
    gap = column + 1
    later = np.zeros(len(where), dtype=bool)  # a non-zero bin after another of its row
    later[1:] = where[1:] // N_BINS == where[:-1] // N_BINS
    gap[later] = column[later] - column[np.flatnonzero(later) - 1]
    pairs = np.stack((unsigned(gap), hist.reshape(-1)[where]), axis=1).reshape(-1)
    lay.many("ops", 2 * n_nonzero, pairs)
    lay.maybe("ops", cols.inflight_ns != 0, cols.inflight_ns)
    # the exponential histogram: offset, zero, bucket count, then its tokens (_write_exp)
    lay.maybe("ops", has_exp, cols.exp_offset)
    lay.maybe("ops", has_exp, unsigned(cols.exp_zero))
    lay.maybe("ops", has_exp, unsigned(cols.exp_len))
    tokens, n_tokens = _exp_tokens(cols)
    lay.many("ops", n_tokens, tokens)


def _exp_tokens(cols: WindowColumns) -> tuple[np.ndarray, np.ndarray]:
    """Each row's exponential histogram counts as :func:`_write_exp` writes them: a count c
    as c (zigzag 2c), a run of k zero buckets as -k (zigzag 2(k - 1) + 1; trimmed: no run
    at either end of a row), and how many tokens each row has (kernels.exp_tokens)."""
    return kernels.exp_tokens(cols.exp_counts, cols.exp_len)  # type: ignore[no-any-return]


_HEADS: dict[tuple[str, bool], bytes] = {}


def _entry_head(tenant_id: str, emitted: bool) -> bytes:
    """What a packed window starts with: version, flags, tenant (few: kept)."""
    head = _HEADS.get((tenant_id, emitted))
    if head is None:
        w = _Writer()
        w.uint(_EMITTED if emitted else 0)
        w.text(tenant_id)
        head = bytes(w.out)
        if len(_HEADS) >= 1 << 16:
            _HEADS.clear()
        _HEADS[(tenant_id, emitted)] = head
    return head


def unpack_entry(data: bytes) -> tuple[str, WindowAcc, int, bool, int]:
    r = _Reader(data)
    flags = r.uint()
    tenant_id, revision, offset = r.text(), r.sint(), r.sint()
    acc = _read_acc(r)
    r.end()
    return tenant_id, acc, revision, bool(flags & _EMITTED), offset


def entry_emission(data: bytes) -> tuple[bool, int]:
    """A packed stored window's emitted flag and emission offset, the rest unread (what
    eviction asks of every window it reads)."""
    r = _Reader(data)
    flags = r.uint()
    tenant_bytes = r.uint()  # (not r.at += r.uint(): that reads r.at first)
    r.at += tenant_bytes
    r.sint()  # the revision
    return bool(flags & _EMITTED), r.sint()


def pack_part(revision: int, acc: WindowAcc) -> bytes:
    """A rollup's part: its revision and integers."""
    w = _Writer()
    w.sint(revision)
    _write_acc(w, acc)
    return bytes(w.out)


def unpack_part(data: bytes) -> tuple[int, WindowAcc]:
    r = _Reader(data)
    revision = r.sint()
    acc = _read_acc(r)
    r.end()
    return revision, acc


def pack_billing(tenant_id: str, counters: list[int] | None, next_sequence: int,
                 unconfirmed: list[list[Any]]) -> bytes:
    """A billing hour (a BillingEntry's fields); ``unconfirmed``: [offset, sequence,
    counters] each."""
    w = _Writer()
    w.uint(_HAS_COUNTERS if counters is not None else 0)
    w.text(tenant_id)
    if counters is not None:
        w.ints(counters)
    w.sint(next_sequence)
    w.uint(len(unconfirmed))
    for offset, sequence, record in unconfirmed:
        w.sint(offset)
        w.sint(sequence)
        w.ints(list(record))
    return bytes(w.out)


BillingHour = tuple[str, list[int] | None, int, list[list[Any]]]  # pack_billing's arguments
_BITMAP_MAX_WIDTH = 62  # counters a bitmap of which stays a non-negative int64


def pack_billings(hours: Sequence[BillingHour]) -> list[bytes]:
    """:func:`pack_billing` of each hour, byte for byte. The open hours with nothing
    unconfirmed (all but a few of a unit's: ~6-8 µs each one by one, ~2.4 at once, and
    ~52,000 a unit per 1,000,000 events at 100,000 volumes; docs/performance.md, session
    31) have their
    bitmaps, counters and sequence numbers written as the varints of all of them at once
    (:func:`zigzag_runs`); the others, and all of them when a counter is past int64 or
    the counter lists differ in length, one by one."""
    out = [b""] * len(hours)
    rows = [k for k, (_, counters, _, unconfirmed) in enumerate(hours)
            if counters is not None and not unconfirmed]
    made = _pack_open_hours([hours[k] for k in rows]) if rows else None
    if made is not None:
        for k, value in zip(rows, made, strict=True):
            out[k] = value
    for k, hour in enumerate(hours):
        if not out[k]:
            out[k] = pack_billing(*hour)
    return out


def _pack_open_hours(hours: Sequence[BillingHour]) -> list[bytes] | None:
    """The packed values of open hours with nothing unconfirmed; None when their counters
    do not fit one int64 array of at most _BITMAP_MAX_WIDTH columns."""
    try:
        counts = np.array([counters for _, counters, _, _ in hours], dtype=np.int64)
        seqs = np.array([seq for _, _, seq, _ in hours], dtype=np.int64)
    except (OverflowError, ValueError):  # past int64, or lists of other lengths
        return None
    if counts.ndim != 2 or counts.shape[1] > _BITMAP_MAX_WIDTH:
        return None
    nonzero = counts != 0
    bitmap = (nonzero.astype(np.int64) << np.arange(counts.shape[1], dtype=np.int64)).sum(1)
    # the bitmap is an unsigned varint: written as the value whose zigzag it is
    as_zigzag = np.where(bitmap & 1, -((bitmap + 1) >> 1), bitmap >> 1)
    nnz = nonzero.sum(1)
    ends = np.cumsum(nnz + 2)  # each hour's run: its bitmap, non-zero counters, sequence
    starts = ends - nnz - 2
    flat = np.empty(int(ends[-1]), dtype=np.int64)
    flat[starts] = as_zigzag
    flat[ends - 1] = seqs
    before = np.cumsum(nnz) - nnz  # non-zero counters of the hours before each
    flat[np.repeat(starts + 1 - before, nnz) + np.arange(int(nnz.sum()))] = counts[nonzero]
    blob, bounds = zigzag_runs(flat, ends)
    prefixes: dict[str, bytes] = {}
    width = counts.shape[1]
    made = []
    for k, (tenant_id, _, _, _) in enumerate(hours):
        prefix = prefixes.get(tenant_id)
        if prefix is None:
            w = _Writer()
            w.uint(_HAS_COUNTERS)
            w.text(tenant_id)
            w.uint(width)
            prefix = prefixes[tenant_id] = bytes(w.out)
        made.append(prefix + blob[bounds[k]:bounds[k + 1]] + b"\x00")  # none unconfirmed
    return made


def unpack_billing(data: bytes) -> tuple[str, list[int] | None, int, list[list[Any]]]:
    r = _Reader(data)
    flags = r.uint()
    tenant_id = r.text()
    counters = r.ints() if flags & _HAS_COUNTERS else None
    next_sequence = r.sint()
    unconfirmed: list[list[Any]] = [[r.sint(), r.sint(), r.ints()] for _ in range(r.uint())]
    r.end()
    return tenant_id, counters, next_sequence, unconfirmed


def is_packed(data: bytes) -> bool:
    """Whether a stored value is packed (else it is the older compact JSON)."""
    return data[:1] == b"\x01"


_TEN_BYTES_MAX = 1  # the 10th byte of a varint: only the 64th bit may be in it
_COVER_MAX = 1 << 20  # more buckets than an exponential histogram has (exphist.N_INDEXES)


def varints(data: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The LEB128 varints of a byte array, as uint64, and the byte where each ends; None
    when one does not fit 64 bits (a packed value may hold any Python int)."""
    ends = np.flatnonzero(data < 0x80)
    if not len(ends):
        return np.empty(0, dtype=np.uint64), ends
    firsts = np.r_[0, ends[:-1] + 1]
    sizes = ends - firsts + 1
    if int(sizes.max()) > 10 or (sizes == 10).any() and int(data[ends[sizes == 10]].max()) > \
            _TEN_BYTES_MAX:
        return None
    place = np.arange(int(ends[-1]) + 1) - np.repeat(firsts, sizes)
    bits = (data[:int(ends[-1]) + 1] & _LOW7).astype(np.uint64) << (place * 7).astype(np.uint64)
    return np.bitwise_or.reduceat(bits, firsts), ends


def _signed(z: np.ndarray) -> np.ndarray:
    """The int64 of zigzag uint64s."""
    return (z >> np.uint64(1)).view(np.int64) ^ -(z & np.uint64(1)).view(np.int64)


class _Cursor:
    """Reading the runs of many packed windows at once: ``at`` holds each one's position
    in the varints ``v``; a field is read where present and skipped elsewhere."""

    def __init__(self, v: np.ndarray, at: np.ndarray) -> None:
        self.v, self.at = v, at

    def uint(self, present: np.ndarray | None = None) -> np.ndarray:
        at = self.at
        values = self.v[np.minimum(at, len(self.v) - 1)].astype(np.int64)
        if present is None:
            self.at = at + 1
            return values
        self.at = at + present
        return np.where(present, values, 0)

    def sint(self, present: np.ndarray | None = None) -> np.ndarray:
        at = self.at
        values = _signed(self.v[np.minimum(at, len(self.v) - 1)])
        if present is None:
            self.at = at + 1
            return values
        self.at = at + present
        return np.where(present, values, 0)

    def span(self, count: np.ndarray) -> np.ndarray:
        """The positions of ``count`` values per row from here on, row after row; skips
        them."""
        positions = np.repeat(self.at - (np.cumsum(count) - count), count) + np.arange(
            int(count.sum()))
        self.at = self.at + count
        return positions


def unpack_columns(values: Sequence[bytes]) -> tuple[WindowColumns, list[str]] | None:
    """:func:`unpack_entry` of many packed windows at once, as columns (extra: revision,
    emitted offset, emitted) and their tenants; None when one is not this version's
    layout of the columns (another op count or bin count, an integer outside int64, a
    long tenant): then each is read alone."""
    n = len(values)
    tenants: list[str] = []
    emitted = np.zeros(n, dtype=np.int64)
    tails: list[bytes] = []
    for k, data in enumerate(values):
        if len(data) < 3 or data[0] != PACKED_VERSION or data[1] > 1 or data[2] > 0x7F:
            return None
        emitted[k] = data[1] & _EMITTED
        tenant_end = 3 + data[2]
        tenants.append(data[3:tenant_end].decode())
        tails.append(data[tenant_end:])
    lengths = np.array([len(t) for t in tails], dtype=np.int64)
    joined = np.frombuffer(b"".join(tails), dtype=np.uint8)
    read = varints(joined)
    if read is None or not len(read[1]):
        return None
    v, ends = read
    byte_starts = np.cumsum(lengths) - lengths
    first = np.searchsorted(ends, byte_starts)  # each window's first varint
    after = np.r_[first[1:], len(v)]
    if int(ends[-1]) + 1 != len(joined):
        return None
    c = _Cursor(v, first)
    revision, offset, start, length = c.sint(), c.sint(), c.sint(), c.sint()
    if (c.uint() != N_OPS).any() or (c.uint() != N_BINS).any():
        return None
    rows = n * N_OPS
    counts = np.zeros((n, N_OPS, SLOTS_PER_OP), dtype=np.int64)
    has_min = np.zeros((n, N_OPS), dtype=bool)
    has_max = np.zeros((n, N_OPS), dtype=bool)
    min_ns = np.zeros((n, N_OPS), dtype=np.int64)
    max_ns = np.zeros((n, N_OPS), dtype=np.int64)
    hist = np.zeros((n, N_OPS, N_BINS), dtype=np.int64)
    inflight = np.zeros((n, N_OPS), dtype=np.int64)
    known = np.ones((n, N_OPS), dtype=bool)
    exp_offset = np.zeros((n, N_OPS), dtype=np.int64)
    exp_zero = np.zeros((n, N_OPS), dtype=np.int64)
    exp_len = np.zeros((n, N_OPS), dtype=np.int64)
    exp_parts: list[tuple[np.ndarray, np.ndarray]] = []  # per op: counts, their windows
    # what each varint would cover as a token of an exponential histogram: a count one
    # bucket, a run of k zeros k (capped: no histogram has that many buckets)
    cover = np.minimum(np.where(v & np.uint64(1), (v >> np.uint64(1)) + np.uint64(1),
                                np.uint64(1)), np.uint64(_COVER_MAX)).astype(np.int64)
    covered = np.cumsum(cover)
    for op in range(N_OPS):
        bits = c.uint()
        for slot in range(SLOTS_PER_OP):
            counts[:, op, slot] = c.sint((bits >> slot & 1).astype(bool))
        present = (bits >> _MIN & 1).astype(bool)
        has_min[:, op], min_ns[:, op] = present, c.sint(present)
        present = (bits >> _MAX & 1).astype(bool)
        has_max[:, op], max_ns[:, op] = present, c.sint(present)
        sparse = (bits >> _HIST & 1).astype(bool)
        if (c.uint(sparse)[sparse] != N_BINS).any():
            return None
        nonzero = c.uint(sparse)
        pairs = c.span(2 * nonzero)
        gaps, bins = v[pairs[0::2]].astype(np.int64), _signed(v[pairs[1::2]])
        owner = np.repeat(np.arange(n), nonzero)
        if len(gaps) and (int(gaps.min()) < 1 or int(gaps.max()) > N_BINS):
            return None
        column = _segment_cumsum(gaps, nonzero) - 1
        if len(column) and int(column.max()) >= N_BINS:
            return None
        hist[owner, op, column] = bins
        present = (bits >> _INFLIGHT & 1).astype(bool)
        inflight[:, op] = c.sint(present)
        has_exp = (bits >> _EXP & 1).astype(bool)
        known[:, op] = has_exp | ~has_min[:, op]
        exp_offset[:, op] = c.sint(has_exp)
        exp_zero[:, op] = c.uint(has_exp)
        buckets = c.uint(has_exp)
        exp_len[:, op] = buckets
        # each row's tokens: as many as cover ``buckets`` (a count covers one, a run of k
        # zeros k), found on the running total of what each varint would cover
        some = buckets > 0
        at = c.at
        base = np.where(at > 0, covered[np.maximum(at - 1, 0)], 0)
        last = np.searchsorted(covered, base + buckets, side="left")
        tokens = np.where(some, last - at + 1, 0)
        if (some & (covered[np.minimum(last, len(covered) - 1)] != base + buckets)).any():
            return None
        where = c.span(tokens)
        token = v[where]
        odd = (token & np.uint64(1)).astype(bool)
        expanded = np.repeat(np.where(odd, 0, (token >> np.uint64(1)).astype(np.int64)),
                             cover[where])
        exp_parts.append((expanded, np.repeat(np.arange(n), buckets)))
    busy_n = c.uint()
    diffs = _signed(v[c.span(2 * busy_n)])
    if len(diffs) and (int(diffs.min()) < 0 or int(diffs.max()) > _SPAN_MAX):
        return None  # not sorted, or far apart: read alone (exactly, or its error)
    within = _segment_cumsum(diffs, 2 * busy_n)
    from_start = np.repeat(start, 2 * busy_n)
    busy = within + from_start
    if len(busy) and ((within < 0) | (within > _SPAN_MAX) | (busy < from_start)).any():
        return None
    busy = busy.reshape(-1, 2)
    busy_ns = c.sint()
    if (c.at != after).any():
        return None
    # the exponential histograms' counts in row order (window, then op)
    flat = np.concatenate([part for part, _ in exp_parts])
    row = np.concatenate([owner * N_OPS + op for op, (_, owner) in enumerate(exp_parts)])
    flat = flat[np.argsort(row, kind="stable")]
    return WindowColumns(
        start, length, counts.reshape(rows, SLOTS_PER_OP), has_min.reshape(-1),
        min_ns.reshape(-1), has_max.reshape(-1), max_ns.reshape(-1),
        hist.reshape(rows, N_BINS), inflight.reshape(-1), known.reshape(-1),
        (exp_len > 0).reshape(-1), exp_offset.reshape(-1), exp_zero.reshape(-1),
        exp_len.reshape(-1), flat, busy_n, busy, busy_ns,
        np.stack((revision, offset, emitted), axis=1)), tenants


def _segment_cumsum(values: np.ndarray, count: np.ndarray) -> np.ndarray:
    """The running sums of int64 ``values`` restarted at each row (``count`` values a
    row), modulo 2**64 (exact where a row's sums lie in int64, whatever the others')."""
    if not len(values):
        return values
    total = np.cumsum(values.view(np.uint64))
    firsts = np.cumsum(count) - count
    before = np.where(firsts > 0, total[np.maximum(firsts - 1, 0)], np.uint64(0))
    return (total - np.repeat(before, count)).view(np.int64)
