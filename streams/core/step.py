"""A step's raw records of one partition judged per volume at once (DESIGN.md decision 2).

Pure logic: no faust, no aiokafka. :func:`account_step` does what
:func:`~streams.core.ingest.account_record` does record after record, for all the
records of a step in one pass: each record is decoded and judged whole as before, then
the parts (a record's events of one volume) are grouped per volume: one owner check,
one replay pass (core/marks.py) and one counter update per volume per step, and the
windows get the step's parts as one value (:class:`~streams.core.windows.book.Parts`).

It covers what a healthy fleet sends: records whole-rejected (undecodable, bad key...)
and bad events included, replays included. When any volume of the step would be
rejected (ids, placement, owner, a conflicting record, a counter past int64), it returns
None having changed nothing, and the caller judges the step record by record with
``account_record``: those reasons depend on the order of the records, and are rare.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np

from streams.core.batch import Columns
from streams.core.codec import CodecError, SchemaSet
from streams.core.counters import (
    COUNTER_NAMES,
    VolumeState,
    latency_bin_rows,
    latest_complete,
    record_digest,
    slot_sums,
)
from streams.core.dead_letters import Rejection
from streams.core.events import INT64_MAX, bad_event_mask
from streams.core.ingest import (
    Limits,
    Placement,
    RecordOutcome,
    _id_errors,
    _rejection,
    any_misplaced,
    decode_raw,
    judge_decoded,
    record_error,
)
from streams.core.marks import judge_marks
from streams.core.raw import (
    PACKED_COLUMNS,
    RawBatch,
    packed_columns,
    packed_events,
    packed_fields,
    raw_batch,
)
from streams.core.sorting import first_and_last, stable_order
from streams.core.windows.book import Parts

__all__ = ["StepOutcome", "StepRecord", "account_step"]


@dataclass(slots=True)
class StepRecord:
    """What became of one record of the step: events counted, volumes skipped as
    replays, its one rejection, and how many events it hands the windows."""

    counted: int = 0
    replays: int = 0
    rejection: Rejection | None = None
    valid: int = 0


@dataclass
class StepOutcome:
    """The step's records' fates (in order), the new state of each volume counted (one
    per volume), and the valid events of every accepted part, part after part (record
    order, then the record's volume order), for the windows."""

    records: list[StepRecord]
    states: dict[str, VolumeState] = field(default_factory=dict)
    events: Columns | None = None  # volumes: the step's table
    bounds: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.intp))
    part_record: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.intp))
    part_volume: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.intp))
    part_producer: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.intp))
    part_seq: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    producers: list[str] = field(default_factory=list)

    def parts(self, lo: int, hi: int) -> Parts | None:
        """The parts of records ``lo`` to ``hi`` - 1 for the windows (None: none), their
        volume table in order of first appearance, as Columns.concat makes it."""
        first, last = np.searchsorted(self.part_record, (lo, hi)).tolist()
        if first == last or self.events is None:
            return None
        volume = self.part_volume[first:last]
        seen, at = np.unique(volume, return_index=True)
        table = seen[np.argsort(at, kind="stable")]
        code = np.empty(len(self.events.volumes), dtype=np.intp)
        code[table] = np.arange(len(table))
        ev = self.events
        lo_e, hi_e = int(self.bounds[first]), int(self.bounds[last])
        volumes = tuple(ev.volumes[v] for v in table.tolist())
        tenants = tuple(ev.tenants[v] for v in table.tolist())
        cols = Columns(volumes, tenants, code[ev.volume[lo_e:hi_e]], ev.op[lo_e:hi_e],
                       ev.status[lo_e:hi_e], ev.nbytes[lo_e:hi_e], ev.submit_ns[lo_e:hi_e],
                       ev.complete_ns[lo_e:hi_e])
        return Parts(cols, self.bounds[first:last + 1] - lo_e, code[volume], self.producers,
                     self.part_producer[first:last], self.part_seq[first:last])


@dataclass
class _Accepted:
    """The records of the step that passed the record-level rules, and their events as
    layout 2's packed columns (a layout 1 record's made so): read together, once a step,
    not a record at a time (docs/performance.md, session 25)."""

    index: list[int] = field(default_factory=list)  # position in the step
    names: list[str] = field(default_factory=list)  # the record's schema
    records: list[dict[str, Any]] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    volumes: list[Sequence[str]] = field(default_factory=list)  # each record's table
    tenants: list[Sequence[str]] = field(default_factory=list)
    packed: list[tuple[bytes, ...]] = field(default_factory=list)  # PACKED_COLUMNS order
    lengths: list[int] = field(default_factory=list)  # events

    def add(self, i: int, name: str, record: dict[str, Any], payload: bytes,
            refs: tuple[Sequence[str], Sequence[str]], packed: tuple[bytes, ...],
            n_events: int) -> None:
        self.index.append(i)
        self.names.append(name)
        self.records.append(record)
        self.payloads.append(payload)
        self.volumes.append(refs[0])
        self.tenants.append(refs[1])
        self.packed.append(packed)
        self.lengths.append(n_events)

    def raw(self, r: int) -> RawBatch:
        """Record ``r`` as a RawBatch (for its rejection's reasons: rare)."""
        return raw_batch(self.names[r], self.records[r])


def _whole(payload: bytes, placement: Placement, schemas: SchemaSet, limits: Limits,
           accepted: _Accepted, i: int) -> StepRecord | None:
    """Record-level rules (they depend on no state): a whole rejection, or None and the
    record joins ``accepted``. A layout 2 record that passes is not made into arrays:
    its volume indexes are checked with the step's (``_within_tables``)."""
    try:
        name, record = decode_raw(payload, schemas)
    except CodecError as exc:
        return StepRecord(rejection=Rejection(str(exc), 0, payload=payload))
    if name == "IoBatch2":
        n_events = packed_events(record)
        if n_events is not None:
            refs = record["volumes"]
            volumes = [ref["volume_id"] for ref in refs]
            tenants = [ref["tenant_id"] for ref in refs]
            if record_error(2, volumes, tenants, n_events, placement, limits) is None:
                accepted.add(i, name, record, payload, (volumes, tenants),
                             packed_fields(record), n_events)
                return None
    whole = judge_decoded(name, record, payload, placement, limits)
    if isinstance(whole, RecordOutcome):
        return StepRecord(rejection=whole.rejection)
    record, raw = whole
    cols = raw.columns
    accepted.add(i, name, record, payload, (cols.volumes, cols.tenants), packed_columns(raw),
                 len(raw))
    return None


def account_step(
    records: Sequence[tuple[bytes, Placement]], load_state: Callable[[str], VolumeState | None],
    schemas: SchemaSet, now_ns: int, limits: Limits,
    tenant_of: Callable[[str], str | None] | None = None,
) -> StepOutcome | None:
    """``account_record`` over ``records`` (one partition's, in order) as one pass, or
    None (nothing changed) when a volume would be rejected: judge them one by one then.
    ``tenant_of``: the registry's tenant of a volume (None: not registered, or not yet
    known: the record-by-record path waits for the registry); None: no registry."""
    if len({(p.partition, p.partitions) for _, p in records}) > 1:
        return None
    accepted = _Accepted()
    out = [_whole(payload, placement, schemas, limits, accepted, i) or StepRecord()
           for i, (payload, placement) in enumerate(records)]
    kept = _within_tables(accepted, out, records, limits)
    if kept is None:
        return None
    if not kept.records:
        return StepOutcome(out)
    step = _gather(kept)
    if step is None or not _volumes_ok(step, records[0][1], load_state, tenant_of):
        return None
    judged = _judge_parts(step, kept, load_state)
    if judged is None:
        return None
    return _count(step, kept, judged, out, load_state, now_ns, limits)


@dataclass
class _Gathered:
    """The accepted records' events in part order, over the step's volume table."""

    volumes: list[str]
    tenants: list[str]
    events: Columns
    offset: np.ndarray  # byte offsets, for the event rules
    record: np.ndarray  # per event: index into _Accepted
    position: np.ndarray  # per event: its index within its record
    bounds: np.ndarray  # part k: events [bounds[k], bounds[k + 1])
    part_record: np.ndarray
    part_volume: np.ndarray


def _packed_column(acc: _Accepted, k: int) -> np.ndarray:
    """Column ``k`` of :data:`PACKED_COLUMNS` over the step's records, as one writable
    array (the windows get them)."""
    return np.frombuffer(bytearray().join(map(itemgetter(k), acc.packed)),
                         PACKED_COLUMNS[k][1])


def _within_tables(acc: _Accepted, out: list[StepRecord],
                   records: Sequence[tuple[bytes, Placement]], limits: Limits
                   ) -> _Accepted | None:
    """The accepted records whose volume indexes all lie in their record's table; each
    other one is rejected whole in ``out``, for the reason record by record gives (one
    such record does not send its step record by record)."""
    if not acc.records:
        return acc
    widths = np.repeat([len(volumes) for volumes in acc.volumes], acc.lengths)
    past = _packed_column(acc, 0) >= widths
    if not past.any():
        return acc
    record = np.repeat(np.arange(len(acc.lengths)), acc.lengths)
    bad = set(record[past].tolist())
    kept = _Accepted()
    for r, i in enumerate(acc.index):
        if r not in bad:
            kept.add(i, acc.names[r], acc.records[r], acc.payloads[r],
                     (acc.volumes[r], acc.tenants[r]), acc.packed[r], acc.lengths[r])
            continue
        whole = judge_decoded(acc.names[r], acc.records[r], acc.payloads[r], records[i][1],
                              limits)
        if not isinstance(whole, RecordOutcome):
            return None  # (raw_batch refuses such an index: not reached)
        out[i] = StepRecord(rejection=whole.rejection)
    return kept


def _gather(acc: _Accepted) -> _Gathered | None:
    """One Columns of the step's events sorted by (record, the record's volume index),
    volumes in one table (every index within its record's: _within_tables); None if a
    volume comes with two tenants (rejected: the slow path says why)."""
    index: dict[str, int] = {}
    tenants: list[str] = []
    codes: list[int] = []  # each record's table as the step's volume codes, one after another
    for volumes, claimed in zip(acc.volumes, acc.tenants, strict=True):
        for volume_id, tenant_id in zip(volumes, claimed, strict=True):
            c = index.get(volume_id)
            if c is None:
                c = index[volume_id] = len(tenants)
                tenants.append(tenant_id)
            elif tenants[c] != tenant_id:
                return None
            codes.append(c)
    local, op, status, offset, nbytes, submit_ns, complete_ns = (
        _packed_column(acc, k) for k in range(len(PACKED_COLUMNS)))
    lengths = acc.lengths
    widths = [len(volumes) for volumes in acc.volumes]
    widest = max(widths)
    local = local.astype(np.intp)
    record = np.repeat(np.arange(len(lengths), dtype=np.intp), lengths)
    key = record * widest + local
    # The SDK sends a record's events by volume: then they are in order already, and
    # the sort and a gather of every column are skipped.
    order = None if bool((key[1:] >= key[:-1]).all()) else stable_order(key)

    def ordered(column: np.ndarray) -> np.ndarray:
        return column if order is None else column[order]

    key = ordered(key)
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    firsts = np.cumsum([0, *widths[:-1]])  # where each record's table starts in codes
    volume = ordered(np.asarray(codes, dtype=np.intp)[np.repeat(firsts, lengths) + local])
    events = Columns(tuple(index), tuple(tenants), volume, ordered(op), ordered(status),
                     ordered(nbytes), ordered(submit_ns), ordered(complete_ns))
    position = ordered(np.arange(len(key)) - np.repeat(np.cumsum([0, *lengths[:-1]]), lengths))
    return _Gathered(list(index), tenants, events, ordered(offset), ordered(record), position,
                     np.r_[starts, len(key)], key[starts] // widest, volume[starts])


def _tenant_ok(tenant_of: Callable[[str], str | None] | None, volume_id: str,
               tenant_id: str, known: VolumeState | None) -> bool:
    if tenant_of is not None and tenant_of(volume_id) != tenant_id:
        return False
    return known is None or known.tenant_id == tenant_id


def _volumes_ok(step: _Gathered, placement: Placement,
                load_state: Callable[[str], VolumeState | None],
                tenant_of: Callable[[str], str | None] | None) -> bool:
    """Every volume passes its ids, placement and owner rules (once per step)."""
    pairs = list(zip(step.volumes, step.tenants, strict=True))
    if any(_id_errors(volume_id, tenant_id) for volume_id, tenant_id in pairs):
        return False
    if any_misplaced(step.volumes, placement):  # valid ids: short ones, one numpy pass
        return False
    return all(_tenant_ok(tenant_of, volume_id, tenant_id, load_state(volume_id))
               for volume_id, tenant_id in pairs)


class _Digests:
    """Each accepted record's digest (record_digest of its payload), made when first asked:
    only the record that leaves a (volume, producer) mark, or meets one, needs it."""

    def __init__(self, payloads: list[bytes]) -> None:
        self._payloads = payloads
        self._made: dict[int, str] = {}

    def __getitem__(self, r: int) -> str:
        digest = self._made.get(r)
        if digest is None:
            digest = self._made[r] = record_digest(self._payloads[r])
        return digest


@dataclass
class _Judged:
    counted: np.ndarray  # per part: counted (else a replay)
    group: np.ndarray  # per part: its (volume, producer) pair's index
    producer: np.ndarray  # per part: index into producers
    seq: np.ndarray
    producers: list[str]
    digests: _Digests  # per accepted record


def _judge_parts(step: _Gathered, acc: _Accepted,
                 load_state: Callable[[str], VolumeState | None]) -> _Judged | None:
    """The counters' replay check of every part against its volume's marks, in one pass;
    None if a part conflicts (the last applied seq with other content)."""
    producers: dict[str, int] = {}
    record_producer = np.array([producers.setdefault(r["producer_id"], len(producers))
                                for r in acc.records], dtype=np.intp)
    record_seq = np.array([r["seq"] for r in acc.records], dtype=np.int64)
    producer = record_producer[step.part_record]
    seq = record_seq[step.part_record]
    pair = step.part_volume * len(producers) + producer
    groups, group = np.unique(pair, return_inverse=True)
    names = list(producers)
    initial = np.full(len(groups), -1, dtype=np.int64)
    has = np.ones(len(groups), dtype=bool)
    for g, (v, p) in enumerate(zip((groups // len(names)).tolist(),
                                   (groups % len(names)).tolist(), strict=True)):
        known = load_state(step.volumes[v])
        if known is None:
            has[g] = False
        else:
            initial[g] = known.producer_seqs.get(names[p], -1)
    new, met = judge_marks(group, seq, initial, has)
    digests = _Digests(acc.payloads)
    if met.any() and _conflicts(step, acc, group, seq, met, groups, names, digests,
                                load_state):
        return None
    return _Judged(new, group, producer, seq, names, digests)


def _conflicts(step: _Gathered, acc: _Accepted, group: np.ndarray, seq: np.ndarray,
               met: np.ndarray, groups: np.ndarray, names: list[str], digests: _Digests,
               load_state: Callable[[str], VolumeState | None]) -> bool:
    """Whether a part meeting its mark has other content than the record that set it
    (the state's, or an earlier part of the step: the first with that seq)."""
    first: dict[tuple[int, int], int] = {}  # (group, seq) -> the step's first record
    for k in range(len(seq)):
        g, s = int(group[k]), int(seq[k])
        first.setdefault((g, s), int(step.part_record[k]))
        if not met[k]:
            continue
        v, p = divmod(int(groups[g]), len(names))
        known = load_state(step.volumes[v])
        if first[(g, s)] == step.part_record[k]:  # the state's mark
            applied = None if known is None or names[p] not in known.producer_seqs \
                else known.producer_digests.get(names[p])
        else:
            applied = digests[first[(g, s)]]
        if applied is not None and applied != digests[int(step.part_record[k])]:
            return True
    return False


def _count(step: _Gathered, acc: _Accepted, judged: _Judged, out: list[StepRecord],
           load_state: Callable[[str], VolumeState | None], now_ns: int, limits: Limits
           ) -> StepOutcome | None:
    """Counters, marks and rejections of the counted parts; the windows' parts."""
    ev = step.events
    bad = bad_event_mask(ev.op, ev.status, step.offset, ev.nbytes, ev.submit_ns,
                         ev.complete_ns, now_ns, limits.retention_ns, limits.future_tolerance_ns)
    part_of = np.repeat(np.arange(len(judged.counted)), np.diff(step.bounds))
    in_counted = judged.counted[part_of]
    counted = in_counted & ~bad
    take = ev if bool(counted.all()) else ev.take(counted)
    sums, latest, bins = slot_sums(take), latest_complete(take), latency_bin_rows(take)
    n_vol = len(step.volumes)
    bad_of = np.bincount(ev.volume[bad & in_counted], minlength=n_vol).tolist()
    states = _states(step, judged, (sums, latest, bins), bad_of, load_state)
    if states is None:
        return None
    n_rec = len(acc.records)
    per_record = [np.bincount(step.record[m], minlength=n_rec).tolist()
                  for m in (counted, ~bad, bad & in_counted)]
    replays = np.bincount(step.part_record[~judged.counted], minlength=n_rec).tolist()
    for r, i in enumerate(acc.index):
        out[i] = StepRecord(per_record[0][r], replays[r], None, per_record[1][r])
        if per_record[2][r]:
            out[i].rejection = _record_rejection(step, acc, r, bad & in_counted, now_ns, limits)
    valid = np.flatnonzero(~bad)
    bounds = np.searchsorted(valid, step.bounds)
    return StepOutcome(out, states, ev if len(valid) == len(ev) else ev.take(valid), bounds,
                       np.asarray(acc.index, dtype=np.intp)[step.part_record],
                       step.part_volume, judged.producer, judged.seq, judged.producers)


def _states(step: _Gathered, judged: _Judged,
            added: tuple[list[list[int]], list[int | None], np.ndarray],
            bad_of: list[int],
            load_state: Callable[[str], VolumeState | None]) -> dict[str, VolumeState] | None:
    """Each counted volume's new state (the loaded one, changed), in order of its first
    counted part; None (nothing changed) if a counter would pass int64. ``added``: per
    volume, its slot sums, latest completion and latency bins."""
    sums, latest, bins = added
    parts = np.flatnonzero(judged.counted)
    volumes = step.part_volume[parts].tolist()
    touched = list(dict.fromkeys(volumes))
    known = [load_state(step.volumes[v]) for v in touched]
    counters = _added([None if s is None else s.counters for s in known],
                      [sums[v] for v in touched], _COUNTER_SLOTS)
    if counters is None:
        return None
    latency_bins = _added([None if s is None else s.latency_bins for s in known],
                          bins[touched], ())
    assert latency_bins is not None  # (no slot of them is bounded)
    row_of = {v: i for i, v in enumerate(touched)}
    # Per (volume, producer) counted: its first part (the order producers enter a state's
    # marks, as record by record) and its last (the mark it leaves: seqs only rise).
    group = judged.group[parts]
    first, last = first_and_last(group)
    order = np.argsort(first, kind="stable")
    states: dict[str, VolumeState] = {}
    for f, k in zip(first[order].tolist(), parts[last[order]].tolist(), strict=True):
        v = volumes[f]
        volume_id = step.volumes[v]
        state = states.get(volume_id)
        if state is None:
            state = states[volume_id] = known[row_of[v]] or VolumeState(step.tenants[v])
            state.counters, state.latency_bins = counters[row_of[v]], latency_bins[row_of[v]]
            state.completed_at(latest[v])
            state.rejected += bad_of[v]
        state.mark_applied(judged.producers[int(judged.producer[k])], int(judged.seq[k]),
                           judged.digests[int(step.part_record[k])])
    return states


_COUNTER_SLOTS = tuple(slot for _, slot in COUNTER_NAMES)  # a sum past int64 is rejected


def _added(bases: list[list[int] | None], adds: list[list[int]] | np.ndarray,
           bounded: Sequence[int]) -> list[list[int]] | None:
    """Each base (None: zeros) plus its row of ``adds``, slot by slot, as new lists of
    Python ints (exact), or None if a sum of a ``bounded`` slot passes INT64_MAX. Only
    the adds that are not zero are made (a volume's events of a step add to a few of its
    counters and latency bins): a loop over them, not over every slot of every volume.
    A stored counter is within int64 (this rule kept it so): only the sums are checked."""
    width = len(adds[0]) if len(adds) else 0
    try:
        add = np.asarray(adds, dtype=np.int64).reshape(len(bases), width)
    except OverflowError:  # a sum past int64 (absurd but valid): Python ints all along
        rows = [[x + y for x, y in zip(b or [0] * width, a, strict=True)]
                for b, a in zip(bases, adds, strict=True)]
        past = any(row[slot] > INT64_MAX for row in rows for slot in bounded)
        return None if past else rows
    rows = [[0] * width if b is None else list(b) for b in bases]
    row, slot = np.nonzero(add)
    for i, j, value in zip(row.tolist(), slot.tolist(), add[row, slot].tolist(), strict=True):
        rows[i][j] += value
    checked = np.isin(slot, np.asarray(bounded, dtype=np.intp))
    if any(rows[i][j] > INT64_MAX
           for i, j in zip(row[checked].tolist(), slot[checked].tolist(), strict=True)):
        return None
    return rows


def _record_rejection(step: _Gathered, acc: _Accepted, r: int, rejected: np.ndarray,
                      now_ns: int, limits: Limits) -> Rejection | None:
    """Record ``r``'s one rejection: its bad events in counted volumes."""
    raw = acc.raw(r)
    mask = np.zeros(len(raw), dtype=bool)
    mask[step.position[rejected & (step.record == r)]] = True
    return _rejection(acc.records[r], acc.payloads[r], raw, [None] * len(raw.columns.volumes),
                      mask, now_ns, limits)
