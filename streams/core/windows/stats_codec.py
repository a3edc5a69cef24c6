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

import functools
import io
from collections.abc import Sequence
from typing import Any, Self

import fastavro
import numpy as np

from streams.core.codec import SchemaSet
from streams.core.counters import ERRORS, IOS, OP_COUNTER_NAMES, SLOTS_PER_OP, TIME
from streams.core.events import OPS
from streams.core.windows import kernels
from streams.core.windows.acc import N_BINS, PERCENTILES, WindowAcc, window_stats
from streams.core.windows.book import Emission
from streams.core.windows.columns import (
    N_OPS,
    Layout,
    WindowColumns,
    by_batch,
    divide,
    gather_fitting,
    to_accs,
)
from streams.core.windows.exphist import MAX_INDEX, MIN_INDEX, representative_ns
from streams.core.windows.varints import zigzag_runs

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


# Volumes whose record prefix is kept: a worker's busiest ones, not one entry per volume it
# ever saw (each costs ~300 B; (f) counts the bytes a volume costs; a prefix is a few
# hundred ns to make again).
PREFIXES_MAX = 1 << 14


class ColumnsEncoder:
    """Single-object encoded records of many windows at once, each laid out from the
    windows' columns (a subclass's :meth:`layout`), or made one by one by fastavro
    (:meth:`_encode_one`, the oracle) for the windows the columns cannot lay out exactly."""

    schema_name = ""  # the record's schema

    def __init__(self, schema: dict[str, Any], header: bytes) -> None:
        self.check_layout(schema)
        self.schema = schema
        self.header = header
        self._prefixes: dict[tuple[str, str], bytes] = {}

    @classmethod
    def of(cls, schemas: SchemaSet) -> Self:
        """The encoder of the current schema of ``schemas`` of its records."""
        return cls(schemas.current[cls.schema_name], schemas.headers[cls.schema_name])

    @staticmethod
    def check_layout(schema: dict[str, Any]) -> None:
        """Raise if ``schema`` (parsed) is not the layout this encoder writes."""
        raise NotImplementedError

    def layout(self, cols: WindowColumns) -> tuple[Layout, np.ndarray]:
        """The integers of each window's record after its strings, and the windows they
        are wrong for (odd)."""
        raise NotImplementedError

    def record(self, volume_id: str, tenant_id: str, acc: WindowAcc, revision: int
               ) -> dict[str, Any]:
        """The record of one window as a dict: what fastavro encodes (the oracle)."""
        raise NotImplementedError

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
        cols, fits = gather_fitting([acc for _, _, acc, _ in items],
                                    [(revision,) for _, _, _, revision in items])
        out: list[bytes] = [b""] * len(items)
        if cols is not None:
            indexes = np.flatnonzero(fits)
            made, odd = self._encode_columns(cols, [items[k][:2] for k in indexes.tolist()])
            for k, value in zip(indexes.tolist(), made, strict=True):
                out[k] = value
            fits[indexes[odd]] = False
        for k in np.flatnonzero(~fits).tolist():
            out[k] = self._encode_one(*items[k])
        return out

    def encode_emissions(self, emissions: Sequence[Emission]) -> list[bytes]:
        """Each emission's record, in order: those made from columns (book.EmittedRows)
        laid out from them, without their objects."""
        out: list[bytes] = [b""] * len(emissions)
        from_rows, plain = by_batch(e.source for e in emissions)
        for rows, at, ks in from_rows:
            whole = ks == list(range(len(rows.names)))
            cols = rows.cols if whole else rows.cols.take_index(np.array(ks, dtype=np.intp))
            names = rows.names if whole else [rows.names[k] for k in ks]
            for i, value in zip(at, self.encode_columns(cols, names), strict=True):
                out[i] = value
        made = self.encode([(emissions[i].volume_id, emissions[i].tenant_id, emissions[i].acc,
                             emissions[i].revision) for i in plain])
        for i, value in zip(plain, made, strict=True):
            out[i] = value
        return out

    def encode_columns(self, cols: WindowColumns, names: Sequence[tuple[str, str]]
                       ) -> list[bytes]:
        """The records of windows held as columns (``cols.extra[:, 0]``: each one's
        revision; ``names``: its (volume_id, tenant_id)), in order."""
        made, odd = self._encode_columns(cols, names)
        if odd.any():
            accs = iter(to_accs(cols.take(odd)))
            for k in np.flatnonzero(odd).tolist():
                volume_id, tenant_id = names[k]
                made[k] = self._encode_one(volume_id, tenant_id, next(accs),
                                           int(cols.extra[k, 0]))
        return made

    def _encode_columns(self, cols: WindowColumns, names: Sequence[tuple[str, str]]
                        ) -> tuple[list[bytes], np.ndarray]:
        """The records of the windows the columns lay out exactly, b"" for the others, and
        which those are (odd: :meth:`layout`)."""
        lay, odd = self.layout(cols)
        values, ends, doubles, at = lay.build()
        blob, bounds = zigzag_runs(values, ends, doubles, at)
        return [b"" if odd[k] else self._prefix(volume_id, tenant_id)
                + blob[bounds[k]:bounds[k + 1]]
                for k, (volume_id, tenant_id) in enumerate(names)], odd

    def _encode_one(self, volume_id: str, tenant_id: str, acc: WindowAcc, revision: int
                    ) -> bytes:
        """fastavro's record of one window the columns do not hold (an older stored window,
        an integer outside int64: OverflowError, as fastavro raises)."""
        buf = io.BytesIO()
        buf.write(self.header)
        fastavro.schemaless_writer(buf, self.schema,
                                   self.record(volume_id, tenant_id, acc, revision))
        return buf.getvalue()


class WindowStatsEncoder(ColumnsEncoder):
    """``WindowStats`` records (single-object encoded) of many windows at once."""

    schema_name = "WindowStats"
    check_layout = staticmethod(check_layout)

    def layout(self, cols: WindowColumns) -> tuple[Layout, np.ndarray]:
        return stats_layout(cols)

    def record(self, volume_id: str, tenant_id: str, acc: WindowAcc, revision: int
               ) -> dict[str, Any]:
        record = window_stats(volume_id, tenant_id, acc)
        record["revision"] = revision
        return record


_PUBLISHED = np.array([[any(slot == s for _, s in names) for slot in range(SLOTS_PER_OP)]
                       for names in OP_COUNTER_NAMES], dtype=bool)  # a record's counters
_COUNT_MAX = 1 << 32  # an exponential histogram's bucket or zero count laid out in columns


@functools.lru_cache(maxsize=1)
def _representatives() -> np.ndarray:
    """representative_ns of every bucket index from MIN_INDEX, as uint64 (the last ones
    are past int64)."""
    return np.array([representative_ns(i) for i in range(MIN_INDEX, MAX_INDEX + 1)],
                    dtype=np.uint64)


def stats_layout(cols: WindowColumns) -> tuple[Layout, np.ndarray]:
    """The integers of each window's record after its strings, as :func:`acc.window_stats`
    makes them (``cols.extra[:, 0]``: the revision), and the windows the columns cannot
    make exactly (odd: an exponential histogram not known, counts past 2**32, an integer
    sum or representative past int64), whose runs are then wrong: those records are made
    one by one."""
    n = len(cols)
    op = cols.row_op()
    window = cols.row_window()
    odd_rows = ~cols.exp_known
    lay = Layout(n)
    lay.one("head", cols.start)
    lay.one("head", cols.length)
    lay.one("head", cols.extra[:, 0])
    counts = cols.counts
    published = _PUBLISHED[op]
    for slot in range(SLOTS_PER_OP):
        lay.maybe("ops", published[:, slot], counts[:, slot])
    ios, errors = counts[:, IOS], counts[:, ERRORS]
    timed = ios + errors
    odd_rows |= ((ios ^ timed) & (errors ^ timed)) < 0  # the sum left int64
    some = timed != 0
    lay.one("ops", some.astype(np.int64))  # the union's branch: null, double
    lay.double("ops", some, divide(counts[:, TIME], np.where(some, timed, 1)))
    for present, value in ((cols.has_min, cols.min_ns), (cols.has_max, cols.max_ns)):
        lay.one("ops", present.astype(np.int64))
        lay.maybe("ops", present, value)
    lay.one("ops", N_BINS)
    lay.many("ops", np.full(len(op), N_BINS), cols.histogram.reshape(-1))
    lay.one("ops", 0)
    listed = cols.exp_len > 0
    lay.one("ops", cols.exp_offset)
    lay.maybe("ops", listed, cols.exp_len)
    lay.many("ops", cols.exp_len, cols.exp_counts)
    lay.one("ops", 0)
    lay.one("ops", cols.exp_zero)
    ranks, known, odd = _percentiles(cols)
    odd_rows |= odd
    for p in range(len(PERCENTILES)):
        lay.one("ops", known.astype(np.int64))
        lay.maybe("ops", known, ranks[:, p])
    lay.one("ops", cols.inflight_ns)
    lay.double("ops", np.ones(len(op), dtype=bool), divide(cols.inflight_ns,
                                                            cols.length[window]))
    busy, length = cols.busy_ns, cols.length
    idle = length - busy
    lay.one("tail", busy)
    lay.one("tail", idle)
    lay.double("tail", np.ones(n, dtype=bool), divide(busy, length))
    odd = odd_rows.reshape(n, N_OPS).any(axis=1) | (((length ^ busy) & (length ^ idle)) < 0)
    return lay, odd


def _percentiles(cols: WindowColumns) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:meth:`ExpHistogram.percentile_ns` of every percentile of every row, in one
    compiled pass over the rows (kernels.percentiles): (values, one per percentile;
    whether the row has them (a latency counted); rows the columns cannot make them
    for)."""
    return kernels.percentiles(  # type: ignore[no-any-return]
        cols.exp_counts, cols.exp_len, cols.exp_zero, cols.exp_offset, cols.has_min,
        cols.min_ns, cols.has_max, cols.max_ns, _NUMS, _DENS, _representatives(),
        _COUNT_MAX, MIN_INDEX, MAX_INDEX)


_NUMS = np.array([num for _, num, _ in PERCENTILES], dtype=np.int64)
_DENS = np.array([den for _, _, den in PERCENTILES], dtype=np.int64)


def _varint(n: int) -> bytes:
    """The zigzag varint of a non-negative int (a string's length)."""
    z, out = n << 1, bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)
