"""The minimal dead letter (what the worker sends when the whole one is refused) encodes
with the DeadLetter schema and stays small, whatever the rejection held."""

from __future__ import annotations

import pytest
from aiokafka.errors import MessageSizeTooLargeError

from streams.core.codec import default_schemas
from streams.core.ingest import Rejection, dead_letter_record
from streams.pipeline.publish import minimal_dead_letter

SCHEMAS = default_schemas()
BIG = "x" * 100_000


@pytest.mark.parametrize("rejection", [
    # a whole record: its payload, long ids a hostile writer chose
    Rejection("not Avro", 1, {"volume_id": BIG, "tenant_id": BIG, "seq": 7},
              payload=b"\xff" * 1_000_000),
    # an accepted record's bad events: lists of indexes and reasons
    Rejection("3 bad events", 3, {"volume_id": "vol-1", "tenant_id": "t-1", "seq": 1},
              event_indexes=[0, 5, 9], event_reasons=["bytes -5 is negative"] * 3,
              event_json="{" + BIG + "}"),
], ids=["whole", "events"])
def test_the_minimal_dead_letter_encodes_and_is_small(rejection: Rejection) -> None:
    record = dead_letter_record(rejection, "t.io.raw", 3, 42, 1)
    minimal = minimal_dead_letter(record, MessageSizeTooLargeError())
    encoded = SCHEMAS.encode("DeadLetter", minimal)
    assert len(encoded) < 2048
    _, decoded = SCHEMAS.decode(encoded)
    assert (decoded["source_topic"], decoded["source_partition"], decoded["source_offset"]) \
        == ("t.io.raw", 3, 42)
    assert decoded["reason"].startswith("dead letter too large to publish whole")
    assert decoded["payload"] is None and decoded["event_indexes"] == []
