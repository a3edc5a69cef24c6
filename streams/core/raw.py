"""Raw records of both layouts as one columnar value: what ingest validates and counts.

Pure logic: no faust, no aiokafka. Layout 1 (``IoBatch``) carries one volume and Avro
arrays; layout 2 (``IoBatch2``) carries the volumes of one partition and packed
little-endian columns (schemas/io_batch2.avsc). Both decode to a :class:`RawBatch`, so
everything past decoding is written once.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streams.core.batch import Columns

RAW_RECORD_NAMES = ("IoBatch", "IoBatch2")
# Layout 2: (field, numpy dtype) of every packed per-event column, in schema order.
PACKED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("volume", "<u4"), ("op", "u1"), ("status", "u1"), ("offset", "<i8"), ("bytes", "<i8"),
    ("submit_ns", "<i8"), ("complete_ns", "<i8"),
)
EVENT_WIRE_BYTES = sum(np.dtype(dtype).itemsize for _, dtype in PACKED_COLUMNS)
_WIDTHS = {dtype: np.dtype(dtype).itemsize for _, dtype in PACKED_COLUMNS}
_NAME_WIDTHS = tuple((name, _WIDTHS[dtype]) for name, dtype in PACKED_COLUMNS)
# A decoded layout 2 record's packed columns, in PACKED_COLUMNS order (one C call).
packed_fields = operator.itemgetter(*(name for name, _ in PACKED_COLUMNS))


class RawLayoutError(ValueError):
    """A decoded raw record whose columns do not fit together; the message is the reason."""


@dataclass(frozen=True, slots=True)
class RawBatch:
    """One raw record, decoded: who sent it, its events as columns, their byte offsets."""

    producer_id: str
    seq: int
    host_id: str | None
    columns: Columns
    offset: np.ndarray  # int64, per event: the byte offset on the volume
    layout: int  # 1 or 2

    def __len__(self) -> int:
        return len(self.columns)


def _packed(record: Mapping[str, Any], name: str, dtype: str) -> np.ndarray:
    raw = record[name]
    width = np.dtype(dtype).itemsize
    if len(raw) % width:
        raise RawLayoutError(f"column {name} holds {len(raw)} bytes, not a multiple of {width}")
    return np.frombuffer(raw, dtype=dtype)


def _from_layout2(record: Mapping[str, Any]) -> RawBatch:
    cols = {name: _packed(record, name, dtype) for name, dtype in PACKED_COLUMNS}
    lengths = {name: len(col) for name, col in cols.items()}
    if len(set(lengths.values())) != 1:
        raise RawLayoutError("columns of unequal length: "
                             + ", ".join(f"{k}={v}" for k, v in lengths.items()))
    refs = record["volumes"]
    volumes = tuple(ref["volume_id"] for ref in refs)
    if len(set(volumes)) != len(volumes):
        raise RawLayoutError("a volume appears more than once in the volume table")
    if len(cols["volume"]) and int(cols["volume"].max()) >= len(volumes):
        raise RawLayoutError(f"volume index {int(cols['volume'].max())} is beyond the "
                             f"volume table of {len(volumes)}")
    columns = Columns(
        volumes, tuple(ref["tenant_id"] for ref in refs), cols["volume"].astype(np.intp),
        cols["op"], cols["status"], cols["bytes"].astype(np.int64),
        cols["submit_ns"].astype(np.int64), cols["complete_ns"].astype(np.int64))
    return RawBatch(record["producer_id"], record["seq"], record["host_id"], columns,
                    cols["offset"].astype(np.int64), 2)


def packed_events(record: Mapping[str, Any]) -> int | None:
    """The number of events of a decoded ``IoBatch2`` record whose packed columns fit
    together as far as can be told without numpy (whole widths, equal lengths, a table
    with each volume once), or None: :func:`raw_batch` (or the record-level rules) say
    why. The volume indexes are not
    read: whoever takes the columns this way checks them against the table."""
    events = len(record["op"])  # one byte an event: every column is this many values
    for name, width in _NAME_WIDTHS:
        if len(record[name]) != events * width:
            return None
    volumes = record["volumes"]
    if not volumes or len({ref["volume_id"] for ref in volumes}) != len(volumes):
        return None  # (no table: raw_batch or the record-level rules say why)
    return events


def packed_columns(raw: RawBatch) -> tuple[bytes, ...]:
    """A raw record's events as layout 2's packed columns (:data:`PACKED_COLUMNS` order):
    how a layout 1 record joins layout 2 ones."""
    cols = raw.columns
    values = (cols.volume, cols.op, cols.status, raw.offset, cols.nbytes, cols.submit_ns,
              cols.complete_ns)
    return tuple(np.ascontiguousarray(v, dtype=dtype).tobytes()
                 for v, (_, dtype) in zip(values, PACKED_COLUMNS, strict=True))


def _from_layout1(record: Mapping[str, Any]) -> RawBatch:
    names = ("op", "status", "offset", "bytes", "submit_ns", "complete_ns")
    lengths = {name: len(record[name]) for name in names}
    if len(set(lengths.values())) != 1:
        raise RawLayoutError("columns of unequal length: "
                             + ", ".join(f"{k}={v}" for k, v in lengths.items()))
    n = lengths["op"]
    columns = Columns(
        (record["volume_id"],), (record["tenant_id"],), np.zeros(n, dtype=np.intp),
        np.frombuffer(record["op"], dtype=np.uint8), np.frombuffer(record["status"], np.uint8),
        np.asarray(record["bytes"], dtype=np.int64), np.asarray(record["submit_ns"], np.int64),
        np.asarray(record["complete_ns"], dtype=np.int64))
    return RawBatch(record["producer_id"], record["seq"], record["host_id"], columns,
                    np.asarray(record["offset"], dtype=np.int64), 1)


def raw_batch(name: str, record: Mapping[str, Any]) -> RawBatch:
    """A decoded ``IoBatch`` or ``IoBatch2`` record as a :class:`RawBatch`; raises
    :class:`RawLayoutError` when its columns do not fit together."""
    if name == "IoBatch2":
        return _from_layout2(record)
    if name == "IoBatch":
        return _from_layout1(record)
    raise RawLayoutError(f"expected a raw record ({' or '.join(RAW_RECORD_NAMES)}), got {name}")


def layout2_record(
    producer_id: str, seq: int, host_id: str | None, volumes: Sequence[str],
    tenants: Sequence[str], columns: Mapping[str, np.ndarray | Sequence[int]],
) -> dict[str, Any]:
    """The ``IoBatch2`` Avro record (to encode with ``SchemaSet.encode("IoBatch2", ...)``)
    of these events; ``columns`` maps every name of :data:`PACKED_COLUMNS` to its values."""
    record: dict[str, Any] = {
        "producer_id": producer_id, "seq": seq, "host_id": host_id,
        "volumes": [{"volume_id": v, "tenant_id": t}
                    for v, t in zip(volumes, tenants, strict=True)],
    }
    for name, dtype in PACKED_COLUMNS:
        record[name] = np.ascontiguousarray(columns[name], dtype=dtype).tobytes()
    return record
