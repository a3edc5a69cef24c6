"""Hostile raw records, with the reason the worker must give for each (SEMANTICS.md
section 1 and 4 rules, records that are not IoBatch at all, records kept apart from
their volume's key or partition, another tenant's records with extreme seqs, a replay
with other content, empty batches, a volume nobody registered, and records near the
broker's 1 MB limit). The operator registers ``HostileRound.registrations`` first.

Shared by tests/integration/test_dead_letters.py and the chaos run (tests/chaos.py).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from streams.core.codec import default_schemas
from streams.core.ingest import MAX_LISTED_EVENTS
from streams.core.partitioning import default_partition

NOW_NS = time.time_ns()
SCHEMAS = default_schemas()
GOOD = {"op": "read", "status": "ok", "offset": 4096, "bytes": 4096,
        "submit_ns": NOW_NS - 2_000_000, "complete_ns": NOW_NS - 1_000_000}
OP_CODES = {"read": 0, "write": 1, "flush": 2, "discard": 3}
STATUS_CODES = {"ok": 0, "failed": 1, "invalid": 2}
HOSTILE_PRODUCER = "hostile-test"
UNREGISTERED = "vol-unregistered"  # a hostile round's volume the operator never registered

# (event overrides, op code override, status code override, expected reason fragment)
BAD_EVENTS = [
    ({}, 9, None, "op code 9"),                                   # op outside the enum
    ({}, None, 5, "status code 5"),                               # status outside the enum
    ({"offset": -512}, None, None, "offset -512 is negative"),
    ({"bytes": -1}, None, None, "bytes -1 is negative"),
    ({"op": "flush", "offset": 0, "bytes": 4096}, None, None, "flush must have"),
    ({"op": "flush", "offset": 512, "bytes": 0}, None, None, "flush must have"),
    ({"submit_ns": NOW_NS, "complete_ns": NOW_NS - 1}, None, None, "before submit_ns"),
    ({"submit_ns": NOW_NS + 3600 * 10**9, "complete_ns": NOW_NS + 3600 * 10**9},
     None, None, "in the future"),
    ({"submit_ns": 10**9, "complete_ns": 2 * 10**9}, None, None, "beyond the retention"),
]


def batch(volume_id: str, tenant_id: str, seq: int, events: list[dict[str, Any]],
          ops: list[int] | None = None, statuses: list[int] | None = None,
          producer_id: str = HOSTILE_PRODUCER) -> dict[str, Any]:
    return {
        "producer_id": producer_id, "seq": seq, "volume_id": volume_id,
        "tenant_id": tenant_id, "host_id": "host-x",
        "op": bytes(ops if ops is not None else [OP_CODES[e["op"]] for e in events]),
        "status": bytes(statuses if statuses is not None
                        else [STATUS_CODES[e["status"]] for e in events]),
        "offset": [e["offset"] for e in events], "bytes": [e["bytes"] for e in events],
        "submit_ns": [e["submit_ns"] for e in events],
        "complete_ns": [e["complete_ns"] for e in events],
    }


def good_at(at_ns: int | None) -> dict[str, Any]:
    """GOOD, completing at ``at_ns`` (None: just before this module was imported)."""
    if at_ns is None:
        return GOOD
    return {**GOOD, "submit_ns": at_ns - 1_000_000, "complete_ns": at_ns}


def mixed_batch(seq: int, producer_id: str = HOSTILE_PRODUCER, at_ns: int | None = None,
                ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[int, str]]:
    """Good events with every event-level rule broken once in between: (record, the good
    events, event index -> expected reason fragment)."""
    events, ops, statuses, expected, good = [], [], [], {}, []
    template = good_at(at_ns)
    for overrides, op_code, status_code, reason in BAD_EVENTS:
        good_event = {**template, "volume_id": "vol-mixed", "tenant_id": "tenant-a"}
        events.append(good_event)
        good.append(good_event)
        bad = {**template, **overrides}
        expected[len(events)] = reason
        events.append(bad)
        for event, op, status in ((good_event, None, None), (bad, op_code, status_code)):
            ops.append(op if op is not None else OP_CODES[event["op"]])
            statuses.append(status if status is not None else STATUS_CODES[event["status"]])
    record = batch("vol-mixed", "tenant-a", seq, events, ops, statuses, producer_id)
    return record, good, expected


HUGE = {**GOOD, "op": "read", "offset": 0, "bytes": 2**63 - 1}


def whole_record_cases(seed: int = 5, producer_id: str = HOSTILE_PRODUCER
                       ) -> list[tuple[bytes | None, str]]:
    """(raw record value, expected reason fragment) for records rejected whole, keyed and
    partitioned as vol-mixed's; to be sent after a record of vol-mixed by tenant-a and
    before its record of seq 10 (the other tenant's records have extreme seqs: they must
    not move the producer's replay mark)."""
    rng = random.Random(seed)
    valid = SCHEMAS.encode("IoBatch",
                           batch("vol-x", "tenant-a", 1, [GOOD], producer_id=producer_id))
    unequal = batch("vol-x", "tenant-a", 2, [GOOD, GOOD], producer_id=producer_id)
    unequal["bytes"] = [4096]
    dead_letter = {"reason": "x", "source_topic": "t", "source_partition": 0,
                   "source_offset": 0, "rejected_at_ns": 0, "events": 0}
    return [
        (bytes(rng.getrandbits(8) for _ in range(200)), "not Avro single-object encoded"),
        (rng.randbytes(1_000_000), "not Avro single-object encoded"),  # near the 1 MB limit
        (b"", "not Avro single-object encoded"),
        (None, "not Avro single-object encoded (0 bytes"),  # a null value: the worker lives on
        (valid[: len(valid) - 7], "undecodable IoBatch body"),
        (valid + b"\x00junk", "trailing bytes"),
        (b"\xc3\x01" + b"\xff" * 8 + valid[10:], "unknown writer schema fingerprint"),
        (SCHEMAS.encode("DeadLetter", dead_letter),
         "expected a IoBatch or IoBatch2 record, got DeadLetter"),
        (SCHEMAS.encode("IoBatch", unequal), "columns of unequal length"),
        (SCHEMAS.encode("IoBatch", batch("vol/../etc", "tenant-a", 3, [GOOD],
                                         producer_id=producer_id)),
         "volume_id 'vol/../etc' has characters outside"),
        (SCHEMAS.encode("IoBatch", batch("vol-x", "", 4, [GOOD], producer_id=producer_id)),
         "tenant_id must be 1..128"),
        (SCHEMAS.encode("IoBatch", batch("v" * 129, "tenant-a", 5, [GOOD],
                                         producer_id=producer_id)),
         "volume_id must be 1..128 characters, got 129"),
        (SCHEMAS.encode("IoBatch", batch("vol-x", "tenant a", 6, [GOOD],
                                         producer_id=producer_id)),
         "tenant_id 'tenant a' has characters outside"),
        (SCHEMAS.encode("IoBatch", batch("vol-mixed", "tenant-b", 2**63 - 1, [GOOD],
                                         producer_id=producer_id)),
         "volume vol-mixed is registered to tenant tenant-a, not tenant-b"),
        (SCHEMAS.encode("IoBatch", batch("vol-mixed", "tenant-b", -(2**63), [GOOD],
                                         producer_id=producer_id)),
         "volume vol-mixed is registered to tenant tenant-a, not tenant-b"),
        (SCHEMAS.encode("IoBatch", batch("vol-mixed", "tenant-a", 2**62, [],
                                         producer_id=producer_id)), "empty batch"),
        # valid events, but their bytes would take the counter past any output's int64
        (SCHEMAS.encode("IoBatch", batch("vol-mixed", "tenant-a", 7, [HUGE, HUGE],
                                         producer_id=producer_id)),
         "read_bytes past 9223372036854775807"),
    ]


def huge_batch(volume_id: str, tenant_id: str, seq: int, events: int, producer_id: str,
               at_ns: int = NOW_NS) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One valid record of ``events`` events (a host that batched a whole burst) ending
    near ``at_ns``: counted, like any other. Returns (record, its events)."""
    rng = random.Random(seq)
    out = []
    for n in range(events):
        complete = at_ns - 30 * 10**9 + n * 1000
        out.append({"volume_id": volume_id, "tenant_id": tenant_id,
                    "op": rng.choice(("read", "write", "flush", "discard")), "status": "ok",
                    "offset": 0, "bytes": 0, "submit_ns": complete - rng.randrange(1, 10**7),
                    "complete_ns": complete})
        if out[-1]["op"] in ("read", "write", "discard"):
            out[-1]["offset"] = 4096 * rng.randrange(1 << 20)
            out[-1]["bytes"] = 4096 * rng.randrange(1, 64)
    return batch(volume_id, tenant_id, seq, out, producer_id=producer_id), out


@dataclass
class HostileRound:
    """One round of hostile input around vol-mixed, in the order to send it: values, and
    per value either the expected whole-record reason, or for a record with bad events
    the expected event-level reasons; ``good`` = the events that must count. Each value
    goes with its Kafka key and, if not None, an explicit partition (else the producer's
    default partitioner picks it from the key)."""

    values: list[bytes | None] = field(default_factory=list)
    whole_reasons: dict[int, str] = field(default_factory=dict)  # index in values -> reason
    event_reasons: dict[int, dict[int, str]] = field(default_factory=dict)
    bad_events: dict[int, int] = field(default_factory=dict)  # index -> its bad events
    good: list[dict[str, Any]] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)  # the Kafka key of each value
    partitions: list[int | None] = field(default_factory=list)
    # What the operator registers before the round is sent (volume -> tenant); every
    # other volume of the round is unregistered.
    registrations: dict[str, str] = field(default_factory=dict)

    def add(self, value: bytes | None, key: bytes | None = b"vol-mixed",
            partition: int | None = None, whole_reason: str | None = None) -> int:
        if whole_reason is not None:
            self.whole_reasons[len(self.values)] = whole_reason
        self.values.append(value)
        self.keys.append(key)
        self.partitions.append(partition)
        return len(self.values) - 1


def all_bad_batch(seq: int, producer_id: str, size_bytes: int = 1_000_000,
                  at_ns: int | None = None) -> tuple[dict[str, Any], int]:
    """A record of vol-mixed near ``size_bytes`` whose every event is bad (negative
    bytes): one dead letter for all of them, however many. Returns (record, events)."""
    bad = {**good_at(at_ns), "bytes": -1}
    one = len(SCHEMAS.encode("IoBatch", batch("vol-mixed", "tenant-a", seq, [bad] * 1000,
                                              producer_id=producer_id))) / 1000
    n = int(size_bytes / one) - 10
    return batch("vol-mixed", "tenant-a", seq, [bad] * n, producer_id=producer_id), n


def hostile_round(seed: int, producer_id: str, partitions: int, huge_events: int = 0,
                  at_ns: int | None = None) -> HostileRound:
    """A good record, the mixed record, every whole-record case, a good record (seq 10),
    the misplaced, conflicting, squatting and all-bad records around more good ones, and
    (``huge_events`` > 0) one huge valid record of vol-huge; good events complete at
    ``at_ns`` (None: now). ``partitions``: the raw topic's."""
    r = HostileRound(registrations={"vol-mixed": "tenant-a", "vol-squat": "tenant-t",
                                    "vol-huge": "tenant-h"})
    template = good_at(at_ns)
    good = {**template, "volume_id": "vol-mixed", "tenant_id": "tenant-a"}

    def good_record(seq: int, event: dict[str, Any] = template) -> bytes:
        return SCHEMAS.encode("IoBatch", batch("vol-mixed", "tenant-a", seq, [event],
                                               producer_id=producer_id))

    r.add(good_record(0))
    r.good.append(good)
    mixed, mixed_good, mixed_reasons = mixed_batch(5, producer_id, at_ns)
    r.event_reasons[r.add(SCHEMAS.encode("IoBatch", mixed))] = mixed_reasons
    r.bad_events[len(r.values) - 1] = len(mixed_reasons)
    r.good += mixed_good
    for value, reason in whole_record_cases(seed, producer_id):
        r.add(value, whole_reason=reason)
    # Kept apart from its volume: another key (the producer puts it where that key goes),
    # or vol-mixed's key in another partition than the default one.
    r.add(good_record(6), key=b"vol-elsewhere",
          whole_reason="key b'vol-elsewhere' is not the volume id 'vol-mixed'")
    home = default_partition(b"vol-mixed", partitions)
    r.add(good_record(7), partition=(home + 1) % partitions,
          whole_reason=f"partition {(home + 1) % partitions} is not the default partition")
    # A volume nobody registered, with an extreme seq: rejected, no volume, no mark.
    r.add(SCHEMAS.encode("IoBatch", batch(UNREGISTERED, "tenant-u", 2**63 - 1, [template],
                                          producer_id=producer_id)),
          key=UNREGISTERED.encode(), whole_reason=f"volume {UNREGISTERED} is not registered")
    r.add(good_record(10))  # counted: none of the above moved the replay mark
    r.good.append(good)
    r.add(good_record(10, {**template, "bytes": 8192}),
          whole_reason=f"seq 10 of producer {producer_id} was applied with other content")
    # A squatter's empty record does not claim vol-squat; its owner's first I/O does.
    squat = SCHEMAS.encode("IoBatch", batch("vol-squat", "tenant-s", 0, [],
                                            producer_id=producer_id))
    r.add(squat, key=b"vol-squat", whole_reason="empty batch")
    owner = {**template, "volume_id": "vol-squat", "tenant_id": "tenant-t"}
    r.add(SCHEMAS.encode("IoBatch", batch("vol-squat", "tenant-t", 1, [owner],
                                          producer_id=producer_id)), key=b"vol-squat")
    r.good.append(owner)
    all_bad, n_bad = all_bad_batch(11, producer_id, at_ns=at_ns)
    index = r.add(SCHEMAS.encode("IoBatch", all_bad))
    r.event_reasons[index] = dict.fromkeys(range(MAX_LISTED_EVENTS), "bytes -1 is negative")
    r.bad_events[index] = n_bad
    r.add(good_record(12))
    r.good.append(good)
    if huge_events:
        record, events = huge_batch("vol-huge", "tenant-h", 13, huge_events, producer_id,
                                    template["complete_ns"])
        r.add(SCHEMAS.encode("IoBatch", record), key=b"vol-huge")
        r.good += events
    return r
