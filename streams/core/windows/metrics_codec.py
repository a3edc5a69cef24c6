"""The ``VolumeMetrics1m`` records of many 1 m windows, encoded at once.

Pure logic: no faust, no aiokafka. Each 1 m window the rollup publishes is also a
monitoring record (core/monitoring.py). Made one at a time, that was the whole
:func:`acc.window_stats` dict (four percentiles of four ops, every field) of an object made
from the window's columns, then :func:`monitoring_record`, then fastavro: ~11 % of the
worker's CPU at 100,000 volumes, where a volume's minute holds a few events and there are
about as many 1 m windows as 1 s ones (docs/performance.md, session 27). Here the few
fields a monitoring record has are laid out from the same columns as the WindowStats
records (stats_codec.py), p99 by the same search.

The bytes are those of fastavro's ``VolumeMetrics1m`` of :func:`monitoring_record` of
:func:`acc.window_stats`, which stays the oracle (tests compare them byte for byte);
every double is the correctly rounded quotient of exact integers, as there. Windows the
columns cannot make exactly are made by the oracle, one by one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streams.core.counters import BYTES, ERRORS, INVALID, IOS, TIME
from streams.core.events import OP_CODE, OPS
from streams.core.monitoring import MONITORING_PERIOD_S, MONITORING_WINDOW_NS, monitoring_record
from streams.core.times import NS_PER_S
from streams.core.windows.acc import PERCENTILES, WindowAcc, window_stats
from streams.core.windows.columns import N_OPS, Layout, WindowColumns, divide
from streams.core.windows.stats_codec import ColumnsEncoder, _percentiles

_READ, _WRITE, _FLUSH, _DISCARD = (OP_CODE[op] for op in ("read", "write", "flush", "discard"))
_P99 = next(k for k, (name, _, _) in enumerate(PERCENTILES) if name == "p99")
_INT64_MAX = (1 << 63) - 1
# ok + failed requests times NS_PER_S (the denominator of an average in seconds) and the
# sums of four ops' values stay within int64 below these; windows past them are odd.
_TIMED_MAX = _INT64_MAX // NS_PER_S
_QUARTER = _INT64_MAX // N_OPS

# The schema's fields in order, as this encoder writes them.
FIELDS: tuple[tuple[str, Any], ...] = (
    ("volume_id", "string"), ("tenant_id", "string"), ("timestamp_ns", "long"),
    ("period_s", "int"), ("revision", "int"),
    ("VolumeReadBytes", "long"), ("VolumeWriteBytes", "long"), ("VolumeReadOps", "long"),
    ("VolumeWriteOps", "long"), ("VolumeTotalReadTime", "double"),
    ("VolumeTotalWriteTime", "double"), ("VolumeIdleTime", "double"),
    ("VolumeQueueLength", "double"),
    ("VolumeAverageReadLatency", ["null", "double"]),
    ("VolumeAverageWriteLatency", ["null", "double"]),
    ("VolumeP99ReadLatency", ["null", "double"]), ("VolumeP99WriteLatency", ["null", "double"]),
    ("VolumeReadErrors", "long"), ("VolumeWriteErrors", "long"), ("VolumeFlushErrors", "long"),
    ("VolumeDiscardErrors", "long"), ("VolumeInvalidOps", "long"), ("VolumeFlushOps", "long"),
    ("VolumeDiscardOps", "long"), ("VolumeDiscardBytes", "long"),
    ("total_read_time_ns", "long"), ("total_write_time_ns", "long"), ("idle_time_ns", "long"),
)


def check_layout(schema: dict[str, Any]) -> None:
    """Raise if ``schema`` (VolumeMetrics1m, parsed) is not the layout this encoder writes."""
    got = [(f["name"], f["type"]) for f in schema["fields"]]
    if got != list(FIELDS):
        wrong = next((i for i, (a, b) in enumerate(zip(got, FIELDS, strict=False)) if a != b),
                     min(len(got), len(FIELDS)))
        raise ValueError(f"schemas/monitoring_1m.avsc changed (field {wrong}: "
                         f"{got[wrong] if wrong < len(got) else 'none'}); "
                         f"streams/core/windows/metrics_codec.py must write it")


def metrics_layout(cols: WindowColumns) -> tuple[Layout, np.ndarray]:
    """The integers of each window's VolumeMetrics1m record after its strings, and the
    windows they are wrong for (odd): a window not 1 m long (monitoring_record refuses it),
    one whose percentiles the columns cannot make (stats_codec), or one whose sums or
    averages here would leave int64 (the oracle then makes it, or fails as it would)."""
    n = len(cols)
    counts = cols.counts.reshape(n, N_OPS, -1)
    inflight = cols.inflight_ns.reshape(n, N_OPS)
    invalid = counts[:, :, INVALID]
    ranks, known, odd_rows = _percentiles(cols)
    p99, known = ranks[:, _P99].reshape(n, N_OPS), known.reshape(n, N_OPS)
    length, busy = cols.length, cols.busy_ns
    idle = length - busy
    ios, errors = counts[:, :, IOS], counts[:, :, ERRORS]
    odd = ((length != MONITORING_WINDOW_NS)
           | (~cols.exp_known | odd_rows).reshape(n, N_OPS).any(axis=1)
           | _outside(inflight, 0, _QUARTER) | _outside(invalid, 0, _QUARTER)
           | _outside(ios, 0, _TIMED_MAX // 2) | _outside(errors, 0, _TIMED_MAX // 2)
           | (((length ^ busy) & (length ^ idle)) < 0))
    timed = np.where(odd[:, None], 0, ios + errors)
    safe = ~odd
    every = np.ones(n, dtype=bool)
    second = np.full(n, NS_PER_S)  # the denominator of a value in seconds
    lay = Layout(n)
    head = "head"
    lay.one(head, cols.start)
    lay.one(head, MONITORING_PERIOD_S)
    lay.one(head, cols.extra[:, 0])
    for op, slot in ((_READ, BYTES), (_WRITE, BYTES), (_READ, IOS), (_WRITE, IOS)):
        lay.one(head, counts[:, op, slot])
    for op in (_READ, _WRITE):
        lay.double(head, every, divide(counts[:, op, TIME], second))
    lay.double(head, every, divide(np.where(safe, idle, 0), second))
    lay.double(head, every, divide(np.where(safe[:, None], inflight, 0).sum(axis=1),
                                   np.where(safe, length, 1)))
    for op in (_READ, _WRITE):
        some = timed[:, op] != 0
        lay.one(head, some.astype(np.int64))
        lay.double(head, some, divide(counts[:, op, TIME],
                                      np.where(some & safe, timed[:, op], 1) * NS_PER_S))
    for op in (_READ, _WRITE):
        lay.one(head, known[:, op].astype(np.int64))
        lay.double(head, known[:, op], divide(p99[:, op], second))
    for op in range(len(OPS)):
        lay.one(head, counts[:, op, ERRORS])
    lay.one(head, np.where(safe[:, None], invalid, 0).sum(axis=1))
    for op, slot in ((_FLUSH, IOS), (_DISCARD, IOS), (_DISCARD, BYTES)):
        lay.one(head, counts[:, op, slot])
    lay.one(head, counts[:, _READ, TIME])
    lay.one(head, counts[:, _WRITE, TIME])
    lay.one(head, idle)
    return lay, odd


def _outside(values: np.ndarray, low: int, high: int) -> np.ndarray:
    """Windows (rows of ``values``, one column an op) with a value outside [low, high]."""
    return np.asarray(((values < low) | (values > high)).any(axis=1))


class MetricsEncoder(ColumnsEncoder):
    """``VolumeMetrics1m`` records (single-object encoded) of many 1 m windows at once."""

    schema_name = "VolumeMetrics1m"
    check_layout = staticmethod(check_layout)

    def layout(self, cols: WindowColumns) -> tuple[Layout, np.ndarray]:
        return metrics_layout(cols)

    def record(self, volume_id: str, tenant_id: str, acc: WindowAcc, revision: int
               ) -> dict[str, Any]:
        return monitoring_record({**window_stats(volume_id, tenant_id, acc),
                                  "revision": revision})
