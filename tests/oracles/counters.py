"""Brute-force oracle for SEMANTICS.md sections 1, 2 and 4 (rejection horizons).

Written independently of the pipeline on purpose: it imports nothing from ``streams`` and
works on plain dicts, the canonical JSON objects of section 1. Every rule is spelled out
as one obvious ``if``, so that a disagreement with the pipeline points at the pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable

RETENTION_NS = 7 * 24 * 3600 * 10**9
FUTURE_NS = 300 * 10**9
ORACLE_OPS = ("read", "write", "flush", "discard")
ORACLE_STATUSES = ("ok", "failed", "invalid")
ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")
INT_FIELDS = ("offset", "bytes", "submit_ns", "complete_ns")


def _bad_id(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if len(value) < 1 or len(value) > 128:
        return True
    for ch in value:
        if ch not in ID_CHARS:
            return True
    return False


def _bad_int(value: object) -> bool:
    # bool is an int subclass in Python, but JSON true/false is not a number.
    if isinstance(value, bool) or not isinstance(value, int):
        return True
    return value < -(2**63) or value > 2**63 - 1


def section1_reason(event: dict) -> str | None:
    """The first rule of SEMANTICS.md section 1 that ``event`` breaks, or None."""
    for name in ("volume_id", "tenant_id", "op", "status") + INT_FIELDS:
        if name not in event:
            return f"missing {name}"
    if _bad_id(event["volume_id"]):
        return "bad volume_id"
    if _bad_id(event["tenant_id"]):
        return "bad tenant_id"
    if event.get("host_id") is not None and not isinstance(event["host_id"], str):
        return "bad host_id"
    if event["op"] not in ORACLE_OPS:
        return "bad op"
    if event["status"] not in ORACLE_STATUSES:
        return "bad status"
    for name in INT_FIELDS:
        if _bad_int(event[name]):
            return f"bad {name}"
    if event["offset"] < 0:
        return "negative offset"
    if event["bytes"] < 0:
        return "negative bytes"
    if event["op"] == "flush" and event["offset"] != 0:
        return "flush with offset"
    if event["op"] == "flush" and event["bytes"] != 0:
        return "flush with bytes"
    if event["complete_ns"] < event["submit_ns"]:
        return "complete before submit"
    return None


def horizon_reason(event: dict, now_ns: int, retention_ns: int = RETENTION_NS,
                   future_ns: int = FUTURE_NS) -> str | None:
    """Section 4: too old for retention, or too far in the future of the worker's clock."""
    if event["complete_ns"] < now_ns - retention_ns:
        return "beyond retention"
    if event["complete_ns"] > now_ns + future_ns:
        return "in the future"
    return None


def oracle_reject_reason(event: dict, now_ns: int, retention_ns: int = RETENTION_NS,
                         future_ns: int = FUTURE_NS) -> str | None:
    """Why the pipeline must dead-letter ``event``, or None when it counts."""
    reason = section1_reason(event)
    if reason is not None:
        return reason
    return horizon_reason(event, now_ns, retention_ns, future_ns)


def empty_counters(volume_id: str, tenant_id: str) -> dict:
    """All section 2 counters of one volume, at zero."""
    row: dict = {"volume_id": volume_id, "tenant_id": tenant_id}
    for op in ORACLE_OPS:
        row[f"{op}_ios"] = 0
        if op != "flush":
            row[f"{op}_bytes"] = 0
        row[f"{op}_ios_error"] = 0
        row[f"invalid_{op}_ios"] = 0
        row[f"total_{op}_time_ns"] = 0
    row["last_io_ns"] = 0
    return row


def add_to_counters(row: dict, event: dict) -> None:
    """Add one event to a row of the section 2 counters (also used for windows)."""
    op = event["op"]
    status = event["status"]
    latency = event["complete_ns"] - event["submit_ns"]
    if status == "ok":
        row[f"{op}_ios"] += 1
    if status == "ok" and op != "flush":
        row[f"{op}_bytes"] += event["bytes"]
    if status == "failed":
        row[f"{op}_ios_error"] += 1
    if status == "invalid":
        row[f"invalid_{op}_ios"] += 1
    if status == "ok" or status == "failed":
        row[f"total_{op}_time_ns"] += latency


def counters_oracle(events: Iterable[dict], *, now_ns: int | None = None,
                    retention_ns: int = RETENTION_NS,
                    future_ns: int = FUTURE_NS) -> dict[str, dict]:
    """Per volume cumulative counters of SEMANTICS.md section 2.

    Rejected events count nowhere. ``now_ns=None`` skips the section 4 time horizons.
    The tenant is the one of the volume's first counted event.
    """
    result: dict[str, dict] = {}
    for event in _counted(events, now_ns, retention_ns, future_ns):
        vol = event["volume_id"]
        if vol not in result:
            result[vol] = empty_counters(vol, event["tenant_id"])
            result[vol]["last_io_ns"] = event["complete_ns"]
        row = result[vol]
        add_to_counters(row, event)
        if event["complete_ns"] > row["last_io_ns"]:
            row["last_io_ns"] = event["complete_ns"]
    return result


def _counted(events: Iterable[dict], now_ns: int | None, retention_ns: int,
             future_ns: int) -> Iterable[dict]:
    """The events that count: valid (section 1) and, with ``now_ns``, within the horizons."""
    for event in events:
        if section1_reason(event) is not None:
            continue
        if now_ns is not None and horizon_reason(event, now_ns, retention_ns, future_ns):
            continue
        yield event


# SEMANTICS.md section 3's 19 histogram bounds, in ns, written out again on purpose.
LATENCY_LE_NS = (10_000, 20_000, 50_000, 100_000, 200_000, 500_000,
                 1_000_000, 2_000_000, 5_000_000, 10_000_000, 20_000_000, 50_000_000,
                 100_000_000, 200_000_000, 500_000_000,
                 1_000_000_000, 2_000_000_000, 5_000_000_000, 10_000_000_000)


def latency_histogram_oracle(events: Iterable[dict], *, now_ns: int | None = None,
                             retention_ns: int = RETENTION_NS,
                             future_ns: int = FUTURE_NS) -> dict[str, dict[str, dict]]:
    """Per volume, per op that has any: the cumulative latency histogram of its counted
    ok and failed events, as Prometheus has it: ``buckets`` are the counts of latencies
    <= each of LATENCY_LE_NS (``le``, inclusive), then of all (``+Inf``); ``count`` the
    number of those events, ``sum_ns`` their latencies added up. Events are counted as
    :func:`counters_oracle` counts them."""
    result: dict[str, dict[str, dict]] = {}
    for event in _counted(events, now_ns, retention_ns, future_ns):
        if event["status"] != "ok" and event["status"] != "failed":
            continue
        latency = event["complete_ns"] - event["submit_ns"]
        ops = result.setdefault(event["volume_id"], {})
        if event["op"] not in ops:
            ops[event["op"]] = {"buckets": [0] * (len(LATENCY_LE_NS) + 1), "count": 0,
                                "sum_ns": 0}
        histogram = ops[event["op"]]
        for i, bound in enumerate(LATENCY_LE_NS):
            if latency <= bound:
                histogram["buckets"][i] += 1
        histogram["buckets"][-1] += 1
        histogram["count"] += 1
        histogram["sum_ns"] += latency
    return result


def billing_oracle(events: Iterable[dict]) -> dict[tuple[str, int], dict]:
    """Per (volume, hour of complete_ns): the section 2 counters of that hour's events."""
    hour_ns = 3600 * 10**9
    result: dict[tuple[str, int], dict] = {}
    for event in events:
        key = (event["volume_id"], event["complete_ns"] - event["complete_ns"] % hour_ns)
        row = result.get(key)
        if row is None:
            row = result[key] = empty_counters(event["volume_id"], event["tenant_id"])
        add_to_counters(row, event)
    return result
