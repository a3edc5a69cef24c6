"""The raw event rules of SEMANTICS.md sections 1 and 4, held against the independent oracle."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core.events import (
    INT64_MAX,
    INT64_MIN,
    OP_CODE,
    OPS,
    STATUS_CODE,
    STATUSES,
    EventError,
    IoEvent,
    event_error,
    event_from_json,
    id_error,
)
from tests.oracles.counters import oracle_reject_reason

NOW = 1_700_000_000 * 10**9
WEEK = 7 * 24 * 3600 * 10**9
FIVE_MIN = 300 * 10**9
ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-"


def raw(**overrides: Any) -> dict[str, Any]:
    """One event with op/status as codes; defaults give a valid 4 KiB ok read."""
    event: dict[str, Any] = {
        "volume_id": "vol-1", "tenant_id": "t-1", "op_code": 0, "status_code": 0,
        "offset": 8192, "bytes": 4096, "submit_ns": NOW - 1_000, "complete_ns": NOW - 750,
    }
    event.update(overrides)
    return event


def raw_to_json(event: dict[str, Any]) -> dict[str, Any]:
    """The canonical JSON object of a coded event; unknown codes stay raw integers."""
    op, status = event["op_code"], event["status_code"]
    return {
        "volume_id": event["volume_id"], "tenant_id": event["tenant_id"],
        "op": OPS[op] if 0 <= op < len(OPS) else op,
        "status": STATUSES[status] if 0 <= status < len(STATUSES) else status,
        "offset": event["offset"], "bytes": event["bytes"],
        "submit_ns": event["submit_ns"], "complete_ns": event["complete_ns"],
    }


def raw_reason(event: dict[str, Any], now_ns: int = NOW) -> str | None:
    """What the worker says about a coded event: id rules first, then event_error."""
    return (
        id_error("volume_id", event["volume_id"])
        or id_error("tenant_id", event["tenant_id"])
        or event_error(event["op_code"], event["status_code"], event["offset"],
                       event["bytes"], event["submit_ns"], event["complete_ns"], now_ns)
    )


def streams_reason(obj: object, now_ns: int = NOW) -> str | None:
    """The whole worker path for a JSON event: parse, then ids, then value rules."""
    try:
        event = event_from_json(obj)
    except EventError as exc:
        return str(exc)
    return raw_reason({
        "volume_id": event.volume_id, "tenant_id": event.tenant_id,
        "op_code": OP_CODE[event.op], "status_code": STATUS_CODE[event.status],
        "offset": event.offset, "bytes": event.bytes,
        "submit_ns": event.submit_ns, "complete_ns": event.complete_ns,
    }, now_ns)


# --- every rule broken once ------------------------------------------------------------------

@pytest.mark.parametrize(("event", "words"), [
    (raw(volume_id="vol/1"), "characters outside"),  # '/' is not in the alphabet
    (raw(volume_id="vol 1"), "characters outside"),  # space
    (raw(volume_id="vol-é"), "characters outside"),  # non-ASCII letter
    (raw(volume_id="vol-1\n"), "characters outside"),  # trailing newline ($ must not match it)
    (raw(volume_id="٣"), "characters outside"),  # a Unicode digit is not [0-9]
    (raw(volume_id=""), "1..128 characters, got 0"),  # empty
    (raw(volume_id="v" * 129), "1..128 characters, got 129"),  # one char too long
    (raw(volume_id=7), "must be a string"),  # not a string at all
    (raw(tenant_id="t#1"), "characters outside"),  # tenant: same alphabet
    (raw(tenant_id=""), "1..128 characters"),  # tenant: empty
    (raw(tenant_id="t" * 129), "1..128 characters"),  # tenant: too long
    (raw(op_code=4), "op code 4"),  # one past discard
    (raw(op_code=255), "op code 255"),  # the largest byte
    (raw(status_code=3), "status code 3"),  # one past invalid
    (raw(status_code=255), "status code 255"),  # the largest byte
    (raw(offset=-1), "offset -1 is negative"),  # offset >= 0
    (raw(offset=INT64_MIN), "is negative"),  # the most negative offset
    (raw(bytes=-5), "bytes -5 is negative"),  # bytes >= 0
    (raw(op_code=2, offset=0, bytes=512), "flush must have offset 0 and bytes 0"),  # flush+bytes
    (raw(op_code=2, offset=512, bytes=0), "flush must have offset 0 and bytes 0"),  # flush+offset
    (raw(submit_ns=NOW - 1, complete_ns=NOW - 2), "is before submit_ns"),  # 1 ns backwards
    (raw(submit_ns=NOW, complete_ns=NOW + FIVE_MIN + 1), "in the future"),  # 1 ns too far ahead
    (raw(submit_ns=NOW, complete_ns=INT64_MAX), "in the future"),  # far future
    (raw(submit_ns=NOW - WEEK - 9, complete_ns=NOW - WEEK - 1), "retention"),  # 1 ns too old
    (raw(submit_ns=0, complete_ns=0), "retention"),  # the epoch
])
def test_each_rule_broken_once_is_rejected(event: dict[str, Any], words: str) -> None:
    reason = raw_reason(event)
    assert reason is not None and words in reason
    assert oracle_reject_reason(raw_to_json(event), NOW) is not None


@pytest.mark.parametrize("event", [
    raw(),  # the default event
    raw(volume_id="v" * 128, tenant_id="t" * 128),  # exactly 128 chars
    raw(volume_id="x", tenant_id="y"),  # exactly 1 char
    raw(volume_id="A.z_0:9-x"),  # every punctuation mark of the alphabet
    raw(volume_id=ID_ALPHABET),  # the whole alphabet
    raw(submit_ns=NOW - 2, complete_ns=NOW - 2),  # complete == submit: zero latency
    raw(submit_ns=NOW, complete_ns=NOW + FIVE_MIN),  # exactly at the future bound (inclusive)
    raw(submit_ns=NOW - WEEK - 9, complete_ns=NOW - WEEK),  # exactly at retention (inclusive)
    raw(submit_ns=INT64_MIN, complete_ns=NOW),  # submit_ns is not bounded by the horizons
    raw(op_code=2, offset=0, bytes=0),  # a flush with neither offset nor bytes
    raw(op_code=3, bytes=1 << 30),  # a 1 GiB discard
    raw(bytes=0),  # a zero-byte read
    raw(offset=INT64_MAX, bytes=INT64_MAX),  # int64 extremes are allowed values
    raw(status_code=1),  # failed
    raw(status_code=2, offset=1 << 50),  # invalid: out-of-range offset is the point
])
def test_boundary_events_are_accepted(event: dict[str, Any]) -> None:
    assert raw_reason(event) is None
    assert oracle_reject_reason(raw_to_json(event), NOW) is None


@pytest.mark.parametrize(("complete_ns", "retention_ns", "future_ns", "accepted"), [
    (NOW - 10, 10, 0, True),  # exactly at a custom retention
    (NOW - 11, 10, 0, False),  # 1 ns past a custom retention
    (NOW + 9, WEEK, 9, True),  # exactly at a custom future tolerance
    (NOW + 10, WEEK, 9, False),  # 1 ns past it
    (NOW + 1, WEEK, 0, False),  # zero tolerance: any future event is rejected
    (NOW, 0, 0, True),  # zero horizons: only "now" itself is countable
])
def test_custom_horizons_agree_with_oracle(
    complete_ns: int, retention_ns: int, future_ns: int, accepted: bool,
) -> None:
    event = raw(submit_ns=complete_ns - 5, complete_ns=complete_ns)
    reason = event_error(0, 0, 0, 0, complete_ns - 5, complete_ns, NOW, retention_ns, future_ns)
    assert (reason is None) == accepted
    oracle = oracle_reject_reason(raw_to_json(event), NOW, retention_ns, future_ns)
    assert (oracle is None) == accepted


def test_reason_is_readable() -> None:
    assert event_error(0, 0, 0, -5, 0, 0, 0) == "bytes -5 is negative"
    assert id_error("volume_id", "a b") == "volume_id 'a b' has characters outside [A-Za-z0-9._:-]"
    assert id_error("tenant_id", None) == "tenant_id must be a string, got NoneType"


# --- event_from_json ---------------------------------------------------------------------------

def ev(**overrides: Any) -> dict[str, Any]:
    """One canonical JSON event, valid by default."""
    return {**raw_to_json(raw()), "host_id": "h-1", **overrides}


def without(name: str) -> dict[str, Any]:
    event = ev()
    del event[name]
    return event


@pytest.mark.parametrize(("obj", "words"), [
    ([], "must be a JSON object, got list"),  # a JSON array
    ("read", "must be a JSON object, got str"),  # a JSON string
    (None, "must be a JSON object, got NoneType"),  # JSON null
    (without("volume_id"), "missing field(s): volume_id"),  # each required field...
    (without("tenant_id"), "missing field(s): tenant_id"),
    (without("op"), "missing field(s): op"),
    (without("status"), "missing field(s): status"),
    (without("offset"), "missing field(s): offset"),
    (without("bytes"), "missing field(s): bytes"),
    (without("submit_ns"), "missing field(s): submit_ns"),
    (without("complete_ns"), "missing field(s): complete_ns"),
    ({}, "missing field(s): volume_id, tenant_id, op"),  # all of them, listed in order
    (ev(latency_ns=5), "unknown field(s): latency_ns"),  # a field the contract lacks
    (ev(Op="read"), "unknown field(s): Op"),  # field names are case sensitive
    (ev(volume_id=7), "volume_id must be a string"),  # wrong type
    (ev(tenant_id=None), "tenant_id must be a string"),  # null id
    (ev(host_id=3), "host_id must be a string or absent"),  # host_id of the wrong type
    (ev(op="READ"), "op 'READ' is not one of read/write/flush/discard"),  # enums are lowercase
    (ev(op="trim"), "op 'trim' is not one of"),  # unknown op
    (ev(op=0), "op 0 is not one of"),  # the Avro code is not the JSON form
    (ev(status="error"), "status 'error' is not one of ok/failed/invalid"),  # unknown status
    (ev(status=None), "status None is not one of"),  # null status
    (ev(offset="8192"), "offset must be an integer, got '8192'"),  # a numeric string
    (ev(offset=1.0), "offset must be an integer, got 1.0"),  # a float, even integral
    (ev(bytes=True), "bytes must be an integer, got True"),  # JSON true is not a number
    (ev(submit_ns=False), "submit_ns must be an integer, got False"),  # nor is false
    (ev(complete_ns=None), "complete_ns must be an integer, got None"),  # null
    (ev(offset=2**63), "offset 9223372036854775808 is outside int64"),  # one past INT64_MAX
    (ev(submit_ns=INT64_MIN - 1), "is outside int64"),  # one below INT64_MIN
])
def test_event_from_json_rejects(obj: object, words: str) -> None:
    with pytest.raises(EventError) as info:
        event_from_json(obj)
    assert words in str(info.value)
    if isinstance(obj, dict) and not words.startswith("unknown field"):
        # the oracle ignores unknown fields (it only reads the ones it knows), not the rest
        assert oracle_reject_reason(obj, NOW) is not None


@pytest.mark.parametrize("obj", [
    ev(op=["read"]),  # a JSON array as op
    ev(status={"ok": 1}),  # a JSON object as status
])
def test_event_from_json_unhashable_enum_is_an_event_error(obj: dict[str, Any]) -> None:
    with pytest.raises(EventError):
        event_from_json(obj)


@pytest.mark.parametrize("obj", [
    ev(),  # with host_id
    without("host_id"),  # host_id absent
    ev(host_id=None),  # host_id null
    ev(offset=INT64_MAX, bytes=0, submit_ns=INT64_MIN, complete_ns=INT64_MAX),  # int64 bounds
    ev(volume_id="bad id"),  # id rules are the worker's, not the parser's
    ev(bytes=-1),  # sign rules too: the event must reach the dead-letter topic
])
def test_event_from_json_accepts_the_wire_form(obj: dict[str, Any]) -> None:
    event = event_from_json(obj)
    assert event.to_json() == {k: v for k, v in obj.items() if v is not None or k != "host_id"}


event_strategy = st.builds(
    IoEvent,
    volume_id=st.text(ID_ALPHABET, min_size=1, max_size=128),
    tenant_id=st.text(ID_ALPHABET, min_size=1, max_size=128),
    op=st.sampled_from(OPS), status=st.sampled_from(STATUSES),
    offset=st.integers(INT64_MIN, INT64_MAX), bytes=st.integers(INT64_MIN, INT64_MAX),
    submit_ns=st.integers(INT64_MIN, INT64_MAX), complete_ns=st.integers(INT64_MIN, INT64_MAX),
    host_id=st.none() | st.text(max_size=20),
)


@given(event_strategy)
def test_to_json_round_trips(event: IoEvent) -> None:
    assert event_from_json(event.to_json()) == event
    assert event_from_json(orjson.loads(orjson.dumps(event.to_json()))) == event
    assert event.latency_ns == event.complete_ns - event.submit_ns


# --- streams accepts == oracle accepts -------------------------------------------------------

OFTEN = st.sampled_from((True, True, True, False))  # sampled_from: no bias toward either end
RARELY = st.sampled_from((False,) * 15 + (True,))


def mostly(valid: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` three times out of four, else ``other``: most events break at most one rule."""
    return OFTEN.flatmap(lambda ok: valid if ok else other)


ids = mostly(
    st.text(ID_ALPHABET, min_size=1, max_size=128),
    st.one_of(
        st.sampled_from(["", "x" * 128, "x" * 129, "vol/1", "vol 1", "é", "a\n"]),
        st.text(max_size=5), st.text(ID_ALPHABET, min_size=127, max_size=130),
        st.integers(-2, 2), st.none(),
    ),
)
ops = mostly(st.sampled_from(OPS), st.sampled_from(["READ", "trim", "", "ok", 0, 3, None, True]))
statuses = mostly(
    st.sampled_from(STATUSES), st.sampled_from(["OK", "error", "", "read", 0, 2, None, False]),
)
ints = mostly(
    st.integers(-3, 4097) | st.integers(0, INT64_MAX),
    st.one_of(
        st.integers(INT64_MIN, INT64_MAX),
        st.sampled_from([INT64_MIN - 1, INT64_MAX + 1, 2**64, True, False, "1", None, 1.0]),
        st.floats(allow_nan=False, max_value=1e6, min_value=-1e6),
    ),
)
# complete_ns on and around the horizons
times = mostly(
    st.sampled_from([NOW, NOW + FIVE_MIN, NOW + FIVE_MIN + 1, NOW - WEEK, NOW - WEEK - 1])
    | st.integers(NOW - WEEK - 10, NOW + FIVE_MIN + 10),
    ints,
)


@st.composite
def json_events(draw: st.DrawFn) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "volume_id": draw(ids), "tenant_id": draw(ids), "op": draw(ops),
        "status": draw(statuses), "offset": draw(ints), "bytes": draw(ints),
    }
    if obj["op"] == "flush" and draw(OFTEN):
        obj["offset"] = obj["bytes"] = 0  # a flush usually carries neither
    complete_ns = draw(times)
    obj["complete_ns"] = complete_ns
    if isinstance(complete_ns, int) and not isinstance(complete_ns, bool) and draw(OFTEN):
        obj["submit_ns"] = complete_ns - draw(st.integers(-2, 10**6))  # near, mostly before
    else:
        obj["submit_ns"] = draw(times)
    host = draw(st.sampled_from(["absent", "none", "str", "str", "int"]))
    if host != "absent":
        obj["host_id"] = {"none": None, "str": "h-1", "int": 5}[host]
    if draw(RARELY):
        del obj[draw(st.sampled_from(sorted(obj)))]  # now and then a missing field
    return obj


@given(json_events())
def test_streams_accepts_exactly_what_the_oracle_accepts(obj: dict[str, Any]) -> None:
    assert (streams_reason(obj) is None) == (oracle_reject_reason(obj, NOW) is None), (
        streams_reason(obj), oracle_reject_reason(obj, NOW))


@given(
    op_code=st.integers(0, 255), status_code=st.integers(0, 255),
    offset=st.integers(INT64_MIN, INT64_MAX) | st.integers(-2, 2),
    nbytes=st.integers(INT64_MIN, INT64_MAX) | st.integers(-2, 2),
    latency_ns=st.integers(-3, 3) | st.integers(-(10**12), 10**12),
    now_ns=st.integers(0, 2**62), age_ns=st.integers(-(10**12), 10**12),
    retention_ns=st.integers(0, 10**12), future_ns=st.integers(0, 10**12),
)
def test_event_error_agrees_with_oracle_on_codes_and_horizons(
    op_code: int, status_code: int, offset: int, nbytes: int, latency_ns: int,
    now_ns: int, age_ns: int, retention_ns: int, future_ns: int,
) -> None:
    complete_ns = now_ns - age_ns
    event = raw(op_code=op_code, status_code=status_code, offset=offset, bytes=nbytes,
                submit_ns=complete_ns - latency_ns, complete_ns=complete_ns)
    got = event_error(op_code, status_code, offset, nbytes, complete_ns - latency_ns,
                      complete_ns, now_ns, retention_ns, future_ns)
    want = oracle_reject_reason(raw_to_json(event), now_ns, retention_ns, future_ns)
    assert (got is None) == (want is None), (got, want)


@given(st.text(max_size=130) | st.text(ID_ALPHABET, min_size=120, max_size=130))
def test_id_error_agrees_with_oracle(value: str) -> None:
    oracle = oracle_reject_reason(ev(volume_id=value), NOW)
    assert (id_error("volume_id", value) is None) == (oracle is None)
