"""Time units and the time formats people type and read (epoch ns is the only clock)."""

from __future__ import annotations

from datetime import UTC, datetime

NS_PER_US = 1_000
NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
MINUTE_NS = 60 * NS_PER_S
HOUR_NS = 3600 * NS_PER_S
DAY_NS = 24 * HOUR_NS
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def hour_of(t_ns: int) -> int:
    """Start of the epoch-aligned hour that holds ``t_ns``."""
    return t_ns - t_ns % HOUR_NS


def iso(ns: int) -> str:
    """Epoch ns as UTC ISO 8601 with a Z, to the second (or finer when not whole)."""
    moment = datetime.fromtimestamp(ns // NS_PER_S, UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if ns % NS_PER_S:
        text += f".{ns % NS_PER_S:09d}"
    return text + "Z"


def parse_time_ns(text: str, now_ns: int) -> int:
    """Epoch ns, ISO 8601 (naive = UTC), or 'now' / 'now-15m' style offsets."""
    if text.lstrip("-").isdigit():
        return int(text)
    if text.startswith("now"):
        rest = text[3:]
        if not rest:
            return now_ns
        if rest[0] in "+-" and rest[1:-1].isdigit() and rest[-1] in _UNIT_S:
            return now_ns + int(rest[:-1]) * _UNIT_S[rest[-1]] * NS_PER_S
        raise ValueError(f"cannot read {text!r}: use now-15m, now-2h, now-7d")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) * NS_PER_S + moment.microsecond * 1000
