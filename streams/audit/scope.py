"""The terms of an audit: what it looks at (:class:`Scope`) and what it reports
(:class:`Difference`), shared by the replay, the ledgers, the comparison and the report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streams.core.times import HOUR_NS


@dataclass(frozen=True, slots=True)
class Scope:
    """What an audit looks at: windows starting in [from_ns, to_ns), the hours that
    overlap that range (each checked whole), optionally one volume."""

    from_ns: int
    to_ns: int
    volume: str | None = None

    def __post_init__(self) -> None:
        if self.to_ns <= self.from_ns:
            raise ValueError("the audit range is empty: --to must be after --from")

    def wants(self, volume_id: str | None) -> bool:
        return self.volume is None or volume_id == self.volume

    def hour_in(self, hour_start_ns: int) -> bool:
        return hour_start_ns + HOUR_NS > self.from_ns and hour_start_ns < self.to_ns

    def window_in(self, start_ns: int) -> bool:
        return self.from_ns <= start_ns < self.to_ns


@dataclass(frozen=True, slots=True)
class Difference:
    """One disagreement. ``what`` is "billing" or "window 1s" / "window 1m" / "window 1h"."""

    volume_id: str | None
    hour_start_ns: int | None
    what: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"volume_id": self.volume_id, "hour_start_ns": self.hour_start_ns,
                "what": self.what, "detail": self.detail}


def where_note(where: str) -> str:
    """`` (partition 0 offset 12)`` for a detail, or nothing when the place is unknown."""
    return f" ({where})" if where else ""
