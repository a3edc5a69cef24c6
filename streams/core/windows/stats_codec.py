"""The ``WindowStats`` records of many windows, encoded at once.

Pure logic: no faust, no aiokafka. Publishing a 1 s window built its record as a dict
(:func:`acc.window_stats`, ~100 µs on the bench's fleet: four percentiles per op, each a
walk of the histogram from its first bucket) and fastavro encoded it (~70 µs: some 300
values, most of them histogram counts, each through fastavro's per-value dispatch):
together ~28 % of the (c) worker's busy time (docs/performance.md, session 15). Here the
fields of a record are laid out as the Avro binary encoding has them, as one run of
integers (longs, ints, union branches, array block counts, all zigzag varints) and a few
doubles in place; the runs of every record of a publish are varint-encoded together with
numpy, and each record is its header and strings (kept per volume) and its slice.

The bytes are those of :class:`codec.SchemaSet` ``encode("WindowStats", ...)`` of
:func:`acc.window_stats` with the revision, which stays the oracle (tests compare them
byte for byte); the layout is checked against ``schemas/window_stats.avsc`` when an
encoder is made, so a schema change without a change here is an error at start, never a
record that readers misread.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

from streams.core.codec import SchemaSet
from streams.core.counters import OP_COUNTER_NAMES
from streams.core.events import OPS
from streams.core.windows.acc import PERCENTILES, OpAcc, WindowAcc, percentile_ns
from streams.core.windows.exphist import ExpHistogram, representative_ns
from streams.core.windows.varints import zigzag_runs

_EMPTY_EXP = ExpHistogram()  # published when a window's exponential histogram is unknown
_SLOTS = tuple(tuple(slot for _, slot in names) for names in OP_COUNTER_NAMES)

WindowItem = tuple[str, str, WindowAcc, int]  # volume_id, tenant_id, acc, revision


def _expected_fields() -> list[tuple[str, Any]]:
    """The schema's (field name, type) as this encoder writes them."""
    fields: list[tuple[str, Any]] = [("volume_id", "string"), ("tenant_id", "string"),
                                     ("window_start_ns", "long"), ("window_length_ns", "long"),
                                     ("revision", "int")]
    for op_code, op in enumerate(OPS):
        fields += [(name, "long") for name, _ in OP_COUNTER_NAMES[op_code]]
        fields += [(f"avg_{op}_latency_ns", ["null", "double"]),
                   (f"min_{op}_latency_ns", ["null", "long"]),
                   (f"max_{op}_latency_ns", ["null", "long"]),
                   (f"{op}_latency_histogram", "array<long>"),
                   (f"{op}_latency_exp", "ExpHistogram")]
        fields += [(f"{name}_{op}_latency_ns", ["null", "long"]) for name, _, _ in PERCENTILES]
        fields += [(f"{op}_inflight_time_ns", "long"), (f"avg_{op}_queue_depth", "double")]
    return fields + [("busy_time_ns", "long"), ("idle_time_ns", "long"), ("util", "double")]


def _type_of(avro_type: Any) -> Any:
    """A field type of a parsed schema in the short form of :func:`_expected_fields`."""
    if isinstance(avro_type, dict):
        if avro_type.get("type") == "array" and avro_type.get("items") == "long":
            return "array<long>"
        if avro_type.get("type") == "record":
            inner = [(f["name"], f["type"]) for f in avro_type["fields"]]
            if inner == [("offset", "int"), ("counts", {"type": "array", "items": "long"}),
                         ("zero", "long")]:
                return "ExpHistogram"
        return avro_type
    if isinstance(avro_type, str) and avro_type.endswith("ExpHistogram"):
        return "ExpHistogram"  # a named reference to the record defined before
    return avro_type


def check_layout(schema: dict[str, Any]) -> None:
    """Raise if ``schema`` (WindowStats, parsed) is not the layout this encoder writes."""
    got, want = [(f["name"], _type_of(f["type"])) for f in schema["fields"]], _expected_fields()
    if got != want:
        wrong = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
                     min(len(got), len(want)))
        raise ValueError(f"schemas/window_stats.avsc changed (field {wrong}: "
                         f"{got[wrong] if wrong < len(got) else 'none'}); "
                         f"streams/core/windows/stats_codec.py must write it")


def exp_percentiles_ns(exp: ExpHistogram, min_ns: int | None, max_ns: int | None
                       ) -> list[int | None]:
    """:meth:`ExpHistogram.percentile_ns` of every percentile of :data:`PERCENTILES`: the
    cumulative counts once, then a bisection per rank."""
    zero = exp.zero
    cumulative = list(accumulate(exp.counts))
    n = zero + (cumulative[-1] if cumulative else 0)
    if n == 0:
        return [None] * len(PERCENTILES)
    low = 0 if min_ns is None else min_ns
    out: list[int | None] = []
    for _, num, den in PERCENTILES:
        rank = -(-n * num // den)
        if rank <= zero:
            out.append(0)
            continue
        value = representative_ns(exp.offset + bisect_left(cumulative, rank - zero))
        out.append(min(max(value, low), value if max_ns is None else max_ns))
    return out


# Volumes whose record prefix is kept: a worker's busiest ones, not one entry per volume it
# ever saw (each costs ~300 B; (f) counts the bytes a volume costs; a prefix is a few
# hundred ns to make again).
PREFIXES_MAX = 1 << 14


class WindowStatsEncoder:
    """``WindowStats`` records (single-object encoded) of many windows at once."""

    def __init__(self, schema: dict[str, Any], header: bytes) -> None:
        check_layout(schema)
        self.header = header
        self._prefixes: dict[tuple[str, str], bytes] = {}

    @classmethod
    def of(cls, schemas: SchemaSet) -> WindowStatsEncoder:
        """The encoder of the current WindowStats schema of ``schemas``."""
        return cls(schemas.current["WindowStats"], schemas.headers["WindowStats"])

    def _prefix(self, volume_id: str, tenant_id: str) -> bytes:
        """The header and the two strings of a volume's records."""
        prefix = self._prefixes.get((volume_id, tenant_id))
        if prefix is None:
            parts = [self.header]
            for text in (volume_id, tenant_id):
                raw = text.encode("utf-8")
                parts += [_varint(len(raw)), raw]
            prefix = b"".join(parts)
            if len(self._prefixes) >= PREFIXES_MAX:  # volumes come and go: keep it bounded
                self._prefixes.clear()
            self._prefixes[(volume_id, tenant_id)] = prefix
        return prefix

    def encode(self, items: Sequence[WindowItem]) -> list[bytes]:
        """Each window's record, in order."""
        if not items:
            return []
        values: list[int] = []  # every record's integers, placeholders for doubles
        doubles: list[float] = []
        at: list[int] = []  # the index in ``values`` of each double's placeholder
        ends: list[int] = []  # per record: len(values) after it
        for _, _, acc, revision in items:
            _lay_out(acc, revision, values, doubles, at)
            ends.append(len(values))
        blob, bounds = zigzag_runs(values, ends, doubles, at)
        return [self._prefix(volume_id, tenant_id) + blob[bounds[k]:bounds[k + 1]]
                for k, (volume_id, tenant_id, _, _) in enumerate(items)]


def _lay_out(acc: WindowAcc, revision: int, values: list[int], doubles: list[float],
             at: list[int]) -> None:
    """One record's fields after its strings, as :func:`acc.window_stats` makes them."""
    length = acc.window_len_ns
    values += (acc.window_start_ns, length, revision)
    for op_code, op in enumerate(acc.ops):
        if op.is_quiet():  # a constant run; its one double (the queue depth) is 0.0
            at.append(len(values) + _QUIET_DOUBLE_AT[op_code])
            values += _QUIET[op_code]
            doubles.append(0.0)
        else:
            _lay_out_op(op_code, op, length, values, doubles, at)
    busy = acc.busy_ns
    values += (busy, length - busy)
    at.append(len(values))
    values.append(0)
    doubles.append(busy / length)


def _lay_out_op(op_code: int, op: OpAcc, length: int, values: list[int],
                doubles: list[float], at: list[int]) -> None:
    """One op's fields of a record (:func:`_lay_out`)."""
    append, extend = values.append, values.extend
    counts = op.counts
    extend([counts[slot] for slot in _SLOTS[op_code]])
    timed = op.ios + op.errors
    if timed:
        append(1)
        at.append(len(values))
        append(0)
        doubles.append(op.time_ns / timed)
    else:
        append(0)
    min_ns, max_ns = op.min_ns, op.max_ns
    values += (0,) if min_ns is None else (1, min_ns)
    values += (0,) if max_ns is None else (1, max_ns)
    histogram = op.histogram
    append(len(histogram))
    if histogram:
        extend(histogram)
        append(0)
    exp = _EMPTY_EXP if op.exp is None else op.exp.read_trimmed()
    append(exp.offset)
    if exp.counts:
        append(len(exp.counts))
        extend(exp.counts)
    append(0)
    append(exp.zero)
    if op.exp is None:
        ranks = [percentile_ns(histogram, num, den, max_ns) for _, num, den in PERCENTILES]
    else:
        ranks = exp_percentiles_ns(exp, min_ns, max_ns)
    for value in ranks:
        values += (0,) if value is None else (1, value)
    append(op.inflight_ns)
    at.append(len(values))
    append(0)
    doubles.append(op.inflight_ns / length)


def _quiet_runs() -> tuple[list[tuple[int, ...]], list[int]]:
    """What :func:`_lay_out` lays out for a quiet op (acc.OpAcc.is_quiet) of each op, and
    where in it the placeholder of its double is: laid out once, by :func:`_lay_out_op`."""
    runs, double_at = [], []
    for op_code in range(len(OPS)):
        values: list[int] = []
        at: list[int] = []
        _lay_out_op(op_code, WindowAcc.empty(0, 1).ops[op_code], 1, values, [], at)
        runs.append(tuple(values))
        double_at.append(at[0])
    return runs, double_at


_QUIET, _QUIET_DOUBLE_AT = _quiet_runs()


def _varint(n: int) -> bytes:
    """The zigzag varint of a non-negative int (a string's length)."""
    z, out = n << 1, bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)
