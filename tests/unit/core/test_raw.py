"""Both raw layouts decode to the same columns; layout 2's packing is what its schema says."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from streams.core.codec import SchemaSet
from streams.core.raw import (
    EVENT_WIRE_BYTES,
    PACKED_COLUMNS,
    RawLayoutError,
    layout2_record,
    packed_columns,
    packed_events,
    raw_batch,
)

SCHEMAS = SchemaSet()
EVENTS = [  # (volume, op, status, offset, bytes, submit_ns, complete_ns)
    ("vol-a", 0, 0, 4096, 512, 1_000, 2_500),
    ("vol-b", 1, 1, 0, 0, 2_000, 9_000),
    ("vol-a", 2, 0, 0, 0, 3_000, 3_000),
    ("vol-a", 3, 2, 1 << 40, (1 << 62) + 7, 5, 1 << 61),
]


def _layout2(events=EVENTS) -> bytes:
    volumes = list(dict.fromkeys(e[0] for e in events))
    cols = {"volume": [volumes.index(e[0]) for e in events]}
    for j, name in enumerate(("op", "status", "offset", "bytes", "submit_ns", "complete_ns")):
        cols[name] = [e[j + 1] for e in events]
    record = layout2_record("p1", 7, "host-1", volumes, [f"t-{v}" for v in volumes], cols)
    return SCHEMAS.encode("IoBatch2", record)


def test_layout2_round_trip_gives_every_event_back() -> None:
    name, record = SCHEMAS.decode(_layout2())
    batch = raw_batch(name, record)
    cols = batch.columns
    assert (batch.producer_id, batch.seq, batch.host_id, batch.layout) == ("p1", 7, "host-1", 2)
    assert cols.volumes == ("vol-a", "vol-b") and cols.tenants == ("t-vol-a", "t-vol-b")
    got = [(cols.volumes[cols.volume[i]], int(cols.op[i]), int(cols.status[i]),
            int(batch.offset[i]), int(cols.nbytes[i]), int(cols.submit_ns[i]),
            int(cols.complete_ns[i])) for i in range(len(batch))]
    assert got == EVENTS


def test_layout2_columns_are_packed_little_endian_as_the_schema_says() -> None:
    _, record = SCHEMAS.decode(_layout2())
    assert record["complete_ns"] == struct.pack("<4q", *(e[6] for e in EVENTS))
    assert record["volume"] == struct.pack("<4I", 0, 1, 0, 0)
    assert sum(len(record[k]) for k in ("volume", "op", "status", "offset", "bytes",
                                         "submit_ns", "complete_ns")) == 4 * EVENT_WIRE_BYTES


def test_layout1_gives_the_same_columns_as_layout2_for_one_volume() -> None:
    one = [e for e in EVENTS if e[0] == "vol-a"]
    v1 = {"producer_id": "p1", "seq": 7, "volume_id": "vol-a", "tenant_id": "t-vol-a",
          "host_id": "host-1", "op": bytes(e[1] for e in one),
          "status": bytes(e[2] for e in one), "offset": [e[3] for e in one],
          "bytes": [e[4] for e in one], "submit_ns": [e[5] for e in one],
          "complete_ns": [e[6] for e in one]}
    a = raw_batch(*SCHEMAS.decode(SCHEMAS.encode("IoBatch", v1)))
    b = raw_batch(*SCHEMAS.decode(_layout2(one)))
    assert a.layout == 1 and a.columns.volumes == b.columns.volumes
    for name in ("volume", "op", "status", "nbytes", "submit_ns", "complete_ns"):
        assert np.array_equal(getattr(a.columns, name), getattr(b.columns, name)), name
    assert np.array_equal(a.offset, b.offset)
    # and packed as layout 2 packs them (how a layout 1 record joins a step's columns)
    _, record = SCHEMAS.decode(_layout2(one))
    assert packed_columns(a) == tuple(record[name] for name, _ in PACKED_COLUMNS)


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("complete_ns", b"\x00" * 31, "not a multiple of 8"),
    ("op", b"\x00" * 3, "unequal length"),
    ("volume", struct.pack("<4I", 0, 1, 0, 2), "beyond the volume table"),
])
def test_layout2_columns_that_do_not_fit_are_a_clear_error(field, value, reason) -> None:
    _, record = SCHEMAS.decode(_layout2())
    record[field] = value
    with pytest.raises(RawLayoutError, match=reason):
        raw_batch("IoBatch2", record)


def test_a_volume_twice_in_the_table_is_refused() -> None:
    _, record = SCHEMAS.decode(_layout2())
    record["volumes"][1]["volume_id"] = "vol-a"
    with pytest.raises(RawLayoutError, match="more than once"):
        raw_batch("IoBatch2", record)
    assert packed_events(record) is None


@pytest.mark.parametrize(("field", "value"), [
    (None, None), ("complete_ns", b"\x00" * 31), ("op", b"\x00" * 3), ("volume", b"\x00" * 12),
    ("offset", b""), ("volume", struct.pack("<4I", 0, 1, 0, 2)), ("volumes", []),
])
def test_packed_events_refuses_what_raw_batch_refuses_but_the_volume_index(field, value
                                                                           ) -> None:
    """The step's check without numpy: the event count where raw_batch's columns fit
    (a volume index past a table aside: the step checks those itself), else None; no
    table at all is refused here (its first volume names the key)."""
    _, record = SCHEMAS.decode(_layout2())
    if field is not None:
        record[field] = value
    try:
        expected: int | None = len(raw_batch("IoBatch2", record))
    except RawLayoutError as exc:
        past = "beyond the volume table" in str(exc) and record["volumes"]
        expected = len(EVENTS) if past else None
    assert packed_events(record) == expected
