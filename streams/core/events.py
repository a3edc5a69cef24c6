"""The raw I/O completion event of SEMANTICS.md section 1, and its rules.

Pure logic: no faust, no aiokafka. The canonical interchange form is one JSON
object per line with exactly the field names of :class:`IoEvent`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from streams.core.times import NS_PER_S

OPS: tuple[str, ...] = ("read", "write", "flush", "discard")
STATUSES: tuple[str, ...] = ("ok", "failed", "invalid")
OP_CODE: dict[str, int] = {op: code for code, op in enumerate(OPS)}
STATUS_CODE: dict[str, int] = {status: code for code, status in enumerate(STATUSES)}
OP_FLUSH = OP_CODE["flush"]
STATUS_OK, STATUS_FAILED, STATUS_INVALID = 0, 1, 2

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")

DEFAULT_RETENTION_NS = 7 * 24 * 3600 * NS_PER_S
DEFAULT_FUTURE_TOLERANCE_NS = 300 * NS_PER_S

EVENT_FIELDS: tuple[str, ...] = (
    "volume_id", "tenant_id", "host_id", "op", "status",
    "offset", "bytes", "submit_ns", "complete_ns",
)
_REQUIRED_FIELDS = tuple(f for f in EVENT_FIELDS if f != "host_id")


class EventError(ValueError):
    """An event that breaks a rule of SEMANTICS.md section 1; the message is the reason."""


@dataclass(frozen=True, slots=True)
class IoEvent:
    """One finished guest I/O, as a hypervisor reports it."""

    volume_id: str
    tenant_id: str
    op: str
    status: str
    offset: int
    bytes: int
    submit_ns: int
    complete_ns: int
    host_id: str | None = None

    @property
    def latency_ns(self) -> int:
        return self.complete_ns - self.submit_ns

    def to_json(self) -> dict[str, Any]:
        """The canonical JSON object (host_id left out when unknown)."""
        obj: dict[str, Any] = {
            "volume_id": self.volume_id, "tenant_id": self.tenant_id,
            "op": self.op, "status": self.status, "offset": self.offset,
            "bytes": self.bytes, "submit_ns": self.submit_ns, "complete_ns": self.complete_ns,
        }
        if self.host_id is not None:
            obj["host_id"] = self.host_id
        return obj


def id_error(name: str, value: object) -> str | None:
    """Why ``value`` is not a valid volume or tenant id, or None when it is."""
    if not isinstance(value, str):
        return f"{name} must be a string, got {type(value).__name__}"
    if not _ID_RE.fullmatch(value):
        if not 1 <= len(value) <= 128:
            return f"{name} must be 1..128 characters, got {len(value)}"
        return f"{name} {value!r} has characters outside [A-Za-z0-9._:-]"
    return None


def event_error(
    op_code: int, status_code: int, offset: int, nbytes: int, submit_ns: int, complete_ns: int,
    now_ns: int, retention_ns: int = DEFAULT_RETENTION_NS,
    future_tolerance_ns: int = DEFAULT_FUTURE_TOLERANCE_NS,
) -> str | None:
    """Why one event breaks a rule of sections 1 and 4, or None when it is countable.

    ``now_ns`` is the worker's clock; events older than the retention horizon or
    too far in its future are rejected (SEMANTICS.md section 4).
    """
    if not 0 <= op_code < len(OPS):
        return f"op code {op_code} is not one of {'/'.join(OPS)}"
    if not 0 <= status_code < len(STATUSES):
        return f"status code {status_code} is not one of {'/'.join(STATUSES)}"
    if offset < 0:
        return f"offset {offset} is negative"
    if nbytes < 0:
        return f"bytes {nbytes} is negative"
    if op_code == OP_FLUSH and (offset or nbytes):
        return f"flush must have offset 0 and bytes 0, got offset {offset} bytes {nbytes}"
    if complete_ns < submit_ns:
        return f"complete_ns {complete_ns} is before submit_ns {submit_ns}"
    if complete_ns > now_ns + future_tolerance_ns:
        ahead_s = (complete_ns - now_ns) / NS_PER_S
        return f"complete_ns is {ahead_s:.0f} s in the future of the worker's clock"
    if complete_ns < now_ns - retention_ns:
        age_s = (now_ns - complete_ns) / NS_PER_S
        return f"complete_ns is {age_s:.0f} s old, beyond the retention horizon"
    return None


def bad_event_mask(
    op: np.ndarray, status: np.ndarray, offset: np.ndarray, nbytes: np.ndarray,
    submit_ns: np.ndarray, complete_ns: np.ndarray, now_ns: int,
    retention_ns: int = DEFAULT_RETENTION_NS,
    future_tolerance_ns: int = DEFAULT_FUTURE_TOLERANCE_NS,
) -> np.ndarray:
    """Per event, whether :func:`event_error` gives a reason: the same rules over numpy
    columns (uint8 codes, int64 values), for a whole record at once."""
    bad = (op >= len(OPS)) | (status >= len(STATUSES)) | (offset < 0) | (nbytes < 0)
    bad |= (op == OP_FLUSH) & ((offset != 0) | (nbytes != 0))
    bad |= complete_ns < submit_ns
    bad |= _beyond(complete_ns, now_ns + future_tolerance_ns, above=True)
    bad |= _beyond(complete_ns, now_ns - retention_ns, above=False)
    return bad


def _beyond(values: np.ndarray, bound: int, *, above: bool) -> np.ndarray:
    """values > bound (or < bound), with ``bound`` any Python int: one past int64's range
    is compared as what it means, never wrapped."""
    if bound > INT64_MAX or bound < INT64_MIN:
        outside_above = bound > INT64_MAX
        # every int64 is below a bound past the top, above one past the bottom
        return np.full(len(values), above != outside_above, dtype=bool)
    return values > bound if above else values < bound


def event_from_json(obj: object) -> IoEvent:
    """Parse the canonical JSON form, checking only what the wire format cannot carry.

    Types, enum values and int64 range are checked here; the value rules (ids,
    signs, ordering, time horizons) are the worker's, so that a rule-breaking
    event still reaches the dead-letter topic with the worker's reason.
    """
    if not isinstance(obj, dict):
        raise EventError(f"an event must be a JSON object, got {type(obj).__name__}")
    missing = [f for f in _REQUIRED_FIELDS if f not in obj]
    if missing:
        raise EventError(f"missing field(s): {', '.join(missing)}")
    unknown = sorted(set(obj) - set(EVENT_FIELDS))
    if unknown:
        raise EventError(f"unknown field(s): {', '.join(unknown)}")
    for name in ("volume_id", "tenant_id"):
        if not isinstance(obj[name], str):
            raise EventError(f"{name} must be a string")
    host_id = obj.get("host_id")
    if host_id is not None and not isinstance(host_id, str):
        raise EventError("host_id must be a string or absent")
    if not isinstance(obj["op"], str) or obj["op"] not in OP_CODE:
        raise EventError(f"op {obj['op']!r} is not one of {'/'.join(OPS)}")
    if not isinstance(obj["status"], str) or obj["status"] not in STATUS_CODE:
        raise EventError(f"status {obj['status']!r} is not one of {'/'.join(STATUSES)}")
    for name in ("offset", "bytes", "submit_ns", "complete_ns"):
        value = obj[name]
        if not isinstance(value, int) or isinstance(value, bool):
            raise EventError(f"{name} must be an integer, got {value!r}")
        if not INT64_MIN <= value <= INT64_MAX:
            raise EventError(f"{name} {value} is outside int64")
    return IoEvent(
        volume_id=obj["volume_id"], tenant_id=obj["tenant_id"], op=obj["op"],
        status=obj["status"], offset=obj["offset"], bytes=obj["bytes"],
        submit_ns=obj["submit_ns"], complete_ns=obj["complete_ns"], host_id=host_id,
    )
