"""Pin the oracle itself with hand-computed cases, so it can be trusted to judge the pipeline."""

from __future__ import annotations

import pytest

from tests.oracles.counters import (
    LATENCY_LE_NS,
    counters_oracle,
    latency_histogram_oracle,
    oracle_reject_reason,
)

NOW = 1_700_000_000 * 10**9
WEEK = 7 * 24 * 3600 * 10**9
FIVE_MIN = 300 * 10**9

ZERO = {
    "read_ios": 0, "read_bytes": 0, "read_ios_error": 0, "invalid_read_ios": 0,
    "total_read_time_ns": 0,
    "write_ios": 0, "write_bytes": 0, "write_ios_error": 0, "invalid_write_ios": 0,
    "total_write_time_ns": 0,
    "flush_ios": 0, "flush_ios_error": 0, "invalid_flush_ios": 0, "total_flush_time_ns": 0,
    "discard_ios": 0, "discard_bytes": 0, "discard_ios_error": 0, "invalid_discard_ios": 0,
    "total_discard_time_ns": 0,
}


def ev(op: str = "read", status: str = "ok", offset: object = 8192, nbytes: object = 4096,
       submit_ns: object = NOW - 1_000, complete_ns: object = NOW - 750,
       **extra: object) -> dict:
    """One canonical event; defaults give a 250 ns ok read of 4 KiB completing at NOW - 750."""
    event = {"volume_id": "vol-1", "tenant_id": "t-1", "host_id": "h-1", "op": op,
             "status": status, "offset": offset, "bytes": nbytes,
             "submit_ns": submit_ns, "complete_ns": complete_ns}
    event.update(extra)
    return event


@pytest.mark.parametrize(("event", "nonzero"), [
    # ok read: one io, its bytes, its 250 ns latency
    (ev("read", "ok"), {"read_ios": 1, "read_bytes": 4096, "total_read_time_ns": 250}),
    # failed read: an error, latency counts (account_failed=on), bytes do not
    (ev("read", "failed"), {"read_ios_error": 1, "total_read_time_ns": 250}),
    # invalid read: only the invalid counter, no time, no bytes
    (ev("read", "invalid"), {"invalid_read_ios": 1}),
    # ok write
    (ev("write", "ok"), {"write_ios": 1, "write_bytes": 4096, "total_write_time_ns": 250}),
    # failed write
    (ev("write", "failed"), {"write_ios_error": 1, "total_write_time_ns": 250}),
    # invalid write
    (ev("write", "invalid"), {"invalid_write_ios": 1}),
    # ok flush: no flush_bytes counter exists
    (ev("flush", "ok", 0, 0), {"flush_ios": 1, "total_flush_time_ns": 250}),
    # failed flush
    (ev("flush", "failed", 0, 0), {"flush_ios_error": 1, "total_flush_time_ns": 250}),
    # invalid flush
    (ev("flush", "invalid", 0, 0), {"invalid_flush_ios": 1}),
    # ok discard of 1 MiB
    (ev("discard", "ok", nbytes=1 << 20),
     {"discard_ios": 1, "discard_bytes": 1 << 20, "total_discard_time_ns": 250}),
    # failed discard
    (ev("discard", "failed", nbytes=1 << 20),
     {"discard_ios_error": 1, "total_discard_time_ns": 250}),
    # invalid discard
    (ev("discard", "invalid", nbytes=1 << 20), {"invalid_discard_ios": 1}),
])
def test_one_event_each_op_and_status(event: dict, nonzero: dict) -> None:
    expected = {"volume_id": "vol-1", "tenant_id": "t-1", **ZERO, **nonzero,
                "last_io_ns": NOW - 750}
    assert counters_oracle([event], now_ns=NOW) == {"vol-1": expected}
    assert counters_oracle([event]) == {"vol-1": expected}


def test_mixed_stream_by_hand() -> None:
    events = [
        ev("read", "ok", submit_ns=100, complete_ns=300),  # +1 read, 4096 B, 200 ns
        ev("read", "ok", nbytes=512, submit_ns=150, complete_ns=1_150),  # +1, 512 B, 1000 ns
        ev("read", "failed", submit_ns=200, complete_ns=5_200),  # +1 error, 5000 ns
        ev("write", "invalid", submit_ns=900, complete_ns=2_000),  # last_io_ns, no time
        ev("write", "ok", nbytes=8192, submit_ns=400, complete_ns=400),  # 0 ns latency is fine
        ev("flush", "ok", 0, 0, submit_ns=10, complete_ns=20),  # +1 flush, 10 ns
        ev("read", "ok", submit_ns=50, complete_ns=40),  # rejected: completes before submit
        ev("read", "ok", volume_id="vol-2", tenant_id="t-2", submit_ns=1, complete_ns=3),
    ]
    got = counters_oracle(events)
    assert got["vol-1"] == {
        "volume_id": "vol-1", "tenant_id": "t-1", **ZERO,
        "read_ios": 2, "read_bytes": 4608, "read_ios_error": 1, "total_read_time_ns": 6_200,
        "write_ios": 1, "write_bytes": 8192, "invalid_write_ios": 1,
        "flush_ios": 1, "total_flush_time_ns": 10,
        "last_io_ns": 5_200,
    }
    assert got["vol-2"] == {"volume_id": "vol-2", "tenant_id": "t-2", **ZERO, "read_ios": 1,
                            "read_bytes": 4096, "total_read_time_ns": 2, "last_io_ns": 3}


def test_last_io_ns_takes_invalid_and_out_of_order_events() -> None:
    events = [ev("read", "ok", complete_ns=NOW - 10),
              ev("read", "invalid", submit_ns=NOW - 9, complete_ns=NOW - 5),  # latest: invalid
              ev("read", "ok", complete_ns=NOW - 500)]  # arrives late, older
    assert counters_oracle(events, now_ns=NOW)["vol-1"]["last_io_ns"] == NOW - 5


def test_rejected_events_count_nowhere() -> None:
    too_old = ev(submit_ns=NOW - WEEK - 10, complete_ns=NOW - WEEK - 1)
    assert counters_oracle([too_old], now_ns=NOW) == {}
    # without a clock the time horizons are not checked
    assert counters_oracle([too_old])["vol-1"]["read_ios"] == 1


def test_latency_histogram_by_hand() -> None:
    """le is inclusive: a latency equal to a bound counts in that bound's bucket."""
    events = [
        ev("read", "ok", submit_ns=0, complete_ns=10_000),  # exactly 10 us: le 10 us
        ev("read", "failed", submit_ns=0, complete_ns=10_001),  # 1 ns over: le 20 us
        ev("read", "invalid", submit_ns=0, complete_ns=9),  # invalid: no latency
        ev("read", "ok", submit_ns=0, complete_ns=10 * 10**9 + 1),  # past 10 s: +Inf only
        ev("write", "ok", submit_ns=5, complete_ns=5),  # 0 ns
        ev("flush", "invalid", 0, 0),  # an op with invalid events only has no histogram
        ev("read", "ok", submit_ns=5, complete_ns=4),  # rejected: counts nowhere
        ev("discard", "invalid", volume_id="vol-2"),  # a volume without any latency
    ]
    got = latency_histogram_oracle(events)
    assert set(got) == {"vol-1"} and set(got["vol-1"]) == {"read", "write"}
    assert got["vol-1"]["read"] == {"buckets": [1] + [2] * 18 + [3], "count": 3,
                                    "sum_ns": 10_000 + 10_001 + 10 * 10**9 + 1}
    assert got["vol-1"]["write"] == {"buckets": [1] * 20, "count": 1, "sum_ns": 0}
    assert LATENCY_LE_NS[0] == 10_000 and LATENCY_LE_NS[-1] == 10 * 10**9
    assert len(LATENCY_LE_NS) == 19 and list(LATENCY_LE_NS) == sorted(set(LATENCY_LE_NS))


def test_latency_histogram_skips_events_past_the_horizons() -> None:
    too_old = ev(submit_ns=NOW - WEEK - 10, complete_ns=NOW - WEEK - 1)
    assert latency_histogram_oracle([too_old], now_ns=NOW) == {}
    assert latency_histogram_oracle([too_old])["vol-1"]["read"]["count"] == 1


@pytest.mark.parametrize(("event", "reason"), [
    (ev(), None),  # the default event is valid
    (ev(volume_id=""), "bad volume_id"),  # empty id
    (ev(volume_id="v" * 129), "bad volume_id"),  # 129 chars
    (ev(volume_id="v" * 128), None),  # 128 chars is the limit
    (ev(volume_id="vol/1"), "bad volume_id"),  # '/' outside the alphabet
    (ev(volume_id="vol 1"), "bad volume_id"),  # space
    (ev(volume_id="vol-é"), "bad volume_id"),  # non-ASCII letter
    (ev(volume_id="A.z_0:9-x"), None),  # every punctuation mark of the alphabet
    (ev(volume_id=7), "bad volume_id"),  # not a string
    (ev(tenant_id=""), "bad tenant_id"),  # tenant follows the same rules
    (ev(tenant_id="t#1"), "bad tenant_id"),  # '#'
    (ev(host_id=None), None),  # host_id is optional
    (ev(op="READ"), "bad op"),  # enums are lowercase
    (ev(op="trim"), "bad op"),  # not one of the four ops
    (ev(status="error"), "bad status"),  # not one of the three statuses
    (ev(offset=-512), "negative offset"),  # offset >= 0
    (ev(nbytes=-1), "negative bytes"),  # bytes >= 0
    (ev(nbytes=0), None),  # a zero-byte read is allowed
    (ev("flush", offset=512, nbytes=0), "flush with offset"),  # flush: offset 0
    (ev("flush", offset=0, nbytes=4096), "flush with bytes"),  # flush: bytes 0
    (ev(submit_ns=NOW - 1, complete_ns=NOW - 2), "complete before submit"),  # 1 ns backwards
    (ev(submit_ns=NOW - 2, complete_ns=NOW - 2), None),  # zero latency is allowed
    (ev(offset=1.0), "bad offset"),  # a float is not an int64
    (ev(nbytes=True), "bad bytes"),  # JSON true is not a number
    (ev(submit_ns=2**63), "bad submit_ns"),  # outside int64
    (ev(submit_ns=NOW - WEEK - 9, complete_ns=NOW - WEEK - 1), "beyond retention"),  # 1 ns past
    (ev(submit_ns=NOW - WEEK - 9, complete_ns=NOW - WEEK), None),  # exactly at the horizon
    (ev(submit_ns=NOW, complete_ns=NOW + FIVE_MIN), None),  # exactly 5 minutes ahead
    (ev(submit_ns=NOW, complete_ns=NOW + FIVE_MIN + 1), "in the future"),  # 1 ns beyond
])
def test_reject_reason(event: dict, reason: str | None) -> None:
    assert oracle_reject_reason(event, NOW) == reason


@pytest.mark.parametrize("field", ["volume_id", "tenant_id", "op", "status", "offset", "bytes",
                                   "submit_ns", "complete_ns"])
def test_missing_required_field(field: str) -> None:
    event = ev()
    del event[field]
    assert oracle_reject_reason(event, NOW) == f"missing {field}"


def test_custom_horizons() -> None:
    event = ev(submit_ns=NOW - 20, complete_ns=NOW - 11)
    assert oracle_reject_reason(event, NOW, retention_ns=10) == "beyond retention"
    assert oracle_reject_reason(event, NOW - 20, future_ns=8) == "in the future"
    assert oracle_reject_reason(event, NOW - 20, future_ns=9) is None
