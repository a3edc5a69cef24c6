"""What ``ioacct audit`` found (:class:`AuditReport`): the table per volume and hour, the
differences and what it took to find them, as JSON or as text. Pure: no Kafka."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streams.audit.compare import Comparison, HourRow
from streams.audit.ledgers import BillingLedger, WindowLedger
from streams.audit.replay import Replay
from streams.audit.scope import Difference
from streams.core.times import iso


@dataclass
class AuditReport:
    """What ``ioacct audit`` found, with what it took to find it."""

    from_ns: int
    to_ns: int
    volume: str | None
    rows: list[HourRow]
    differences: list[Difference]
    windows_checked: dict[str, int] = field(default_factory=dict)
    events_replayed: int = 0
    records_replayed: int = 0
    events_counted: int = 0
    events_rejected: int = 0
    replays_skipped: int = 0
    ticks_skipped: int = 0
    billing_messages: int = 0
    stats_messages: int = 0
    replay_seconds: float = 0.0
    seconds: float = 0.0

    @classmethod
    def build(cls, replay: Replay, billing: BillingLedger, windows: list[WindowLedger],
              comparison: Comparison, replay_seconds: float = 0.0,
              seconds: float = 0.0) -> AuditReport:
        return cls(
            replay.scope.from_ns, replay.scope.to_ns, replay.scope.volume, comparison.rows,
            comparison.differences, comparison.windows_checked, replay.events,
            replay.records, replay.events_counted, replay.events_rejected,
            replay.replays_skipped, replay.ticks, billing.messages,
            sum(w.messages for w in windows), replay_seconds, seconds)

    @property
    def ok(self) -> bool:
        return not self.differences

    @property
    def volumes(self) -> int:
        return len({row.volume_id for row in self.rows})

    @property
    def rate_events_per_s(self) -> float:
        return self.events_replayed / self.replay_seconds if self.replay_seconds > 0 else 0.0

    @property
    def rate_records_per_s(self) -> float:
        return self.records_replayed / self.replay_seconds if self.replay_seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "from_ns": self.from_ns, "to_ns": self.to_ns, "volume": self.volume,
            "volumes": self.volumes, "hours": [row.to_dict() for row in self.rows],
            "events_replayed": self.events_replayed, "records_replayed": self.records_replayed,
            "rate_events_per_s": round(self.rate_events_per_s, 1),
            "rate_records_per_s": round(self.rate_records_per_s, 1),
            "events_counted": self.events_counted, "events_rejected": self.events_rejected,
            "replays_skipped": self.replays_skipped, "ticks_skipped": self.ticks_skipped,
            "billing_messages": self.billing_messages, "stats_messages": self.stats_messages,
            "windows_checked": self.windows_checked,
            "replay_seconds": round(self.replay_seconds, 3), "seconds": round(self.seconds, 3),
            "differences": [d.to_dict() for d in self.differences], "ok": self.ok,
        }

    def summary(self) -> str:
        windows = sum(self.windows_checked.values())
        verdict = "OK: the published records agree with the raw topic" if self.ok else (
            f"{len(self.differences)} difference(s)")
        return (f"audit {iso(self.from_ns)} .. {iso(self.to_ns)}"
                + (f" volume {self.volume}" if self.volume else "")
                + f": {self.volumes} volume(s), {len(self.rows)} hour(s), {windows:,} "
                f"window(s) checked; replayed {self.records_replayed:,} records "
                f"({self.events_replayed:,} events) at {self.rate_events_per_s:,.0f} events/s; "
                + verdict)

    def text(self) -> str:
        """The readable report: a table per volume and hour, the differences, a summary."""
        width = max([len("VOLUME")] + [len(row.volume_id) for row in self.rows])
        lines = [f"{'VOLUME':<{width}}  {'HOUR (UTC)':<20}  {'RECORDS':>7}  "
                 f"{'BILLED EVENTS':>13}  STATUS"]
        lines += [f"{row.volume_id:<{width}}  {iso(row.hour_start_ns):<20}  "
                  f"{row.billing_records:>7}  {row.billed_events:>13}  {row.status}"
                  for row in self.rows]
        if self.differences:
            lines += ["", "DIFFERENCES"]
            lines += [f"{d.volume_id or '-'} "
                      f"{iso(d.hour_start_ns) if d.hour_start_ns is not None else '-'} "
                      f"{d.what}: {d.detail}" for d in self.differences]
        lines += ["", self.summary()]
        return "\n".join(lines)
