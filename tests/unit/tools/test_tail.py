"""`ioacct tail` shows raw records readably: layout 2's packed columns as integers and
names, checked against the values the record was built from."""

from __future__ import annotations

from types import SimpleNamespace

import orjson

from streams.core.codec import default_schemas
from streams.core.raw import layout2_record
from streams.tools.tail import render

SCHEMAS = default_schemas()


def _message(value: bytes) -> SimpleNamespace:
    return SimpleNamespace(topic="ioacct.io.raw", partition=3, offset=7, timestamp=1,
                           key=b"vol-a", value=value)


def test_a_layout2_record_is_shown_column_by_column() -> None:
    columns = {"volume": [0, 1, 0], "op": [0, 2, 3], "status": [0, 1, 2],
               "offset": [4096, 0, 1 << 40], "bytes": [512, 0, (1 << 63) - 1],
               "submit_ns": [1, 2, 3], "complete_ns": [10, 20, 1 << 62]}
    record = layout2_record("p-1", 9, "host-1", ["vol-a", "vol-b"], ["t-a", "t-b"], columns)
    line = orjson.loads(orjson.dumps(render(SCHEMAS, _message(
        SCHEMAS.encode("IoBatch2", record)))))
    value = line["value"]
    assert line["schema"] == "IoBatch2" and (value["producer_id"], value["seq"]) == ("p-1", 9)
    assert value["volumes"] == [{"volume_id": "vol-a", "tenant_id": "t-a"},
                                {"volume_id": "vol-b", "tenant_id": "t-b"}]
    assert value["op"] == ["read", "flush", "discard"]
    assert value["status"] == ["ok", "failed", "invalid"]
    for name in ("volume", "offset", "bytes", "submit_ns", "complete_ns"):
        assert value[name] == columns[name], name


def test_a_layout2_record_whose_columns_do_not_fit_says_why() -> None:
    record = layout2_record("p-1", 1, None, ["v"], ["t"], {
        "volume": [0], "op": [0], "status": [0], "offset": [0], "bytes": [1],
        "submit_ns": [1], "complete_ns": [2]})
    record["complete_ns"] = record["complete_ns"][:5]  # not a multiple of 8 bytes
    value = render(SCHEMAS, _message(SCHEMAS.encode("IoBatch2", record)))["value"]
    assert "not a multiple of 8" in value["layout_error"]
