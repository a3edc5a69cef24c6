"""Raw IoBatch (layout 1) records for the ingest tests: canonical events, batches, where a producer
puts them, and a stand-in for the counters table."""

from __future__ import annotations

from itertools import accumulate
from typing import Any

from streams.core.codec import SchemaSet
from streams.core.counters import VolumeState
from streams.core.events import OPS, STATUSES
from streams.core.ingest import Limits, Placement, RecordOutcome, account_record

NOW = 1_700_000_000 * 10**9
WEEK = 7 * 24 * 3600 * 10**9
FIVE_MIN = 300 * 10**9
SCHEMAS = SchemaSet()
DEFAULT_LIMITS = Limits()
NOT_IN_ORACLE = ("idle_time_ns", "rejected")
PARTITIONS = 8


def histograms_of(state: VolumeState) -> dict[str, dict[str, Any]]:
    """A state's cumulative latency histograms as latency_histogram_oracle has them: per op
    with any latency, the counts at or below each bound, then of all, their count, sum."""
    out = {}
    for op, (bins, sum_ns) in state.latency_histograms().items():
        if any(bins):
            out[op] = {"buckets": list(accumulate(bins)), "count": sum(bins), "sum_ns": sum_ns}
    return out


def code(value: Any, names: tuple[str, ...]) -> int:
    return names.index(value) if value in names else value


def batch(events: list[dict[str, Any]], producer_id: str = "p-1", seq: int = 0,
          volume_id: str | None = None, tenant_id: str | None = None) -> dict[str, Any]:
    """An IoBatch record of canonical events (op/status names or raw integer codes)."""
    first = events[0] if events else {}
    return {
        "producer_id": producer_id, "seq": seq,
        "volume_id": first.get("volume_id", "vol-1") if volume_id is None else volume_id,
        "tenant_id": first.get("tenant_id", "t-1") if tenant_id is None else tenant_id,
        "host_id": first.get("host_id"),
        "op": bytes(code(e["op"], OPS) for e in events),
        "status": bytes(code(e["status"], STATUSES) for e in events),
        "offset": [e["offset"] for e in events], "bytes": [e["bytes"] for e in events],
        "submit_ns": [e["submit_ns"] for e in events],
        "complete_ns": [e["complete_ns"] for e in events],
    }


def ev(op: Any = "read", status: Any = "ok", offset: int = 8192, nbytes: int = 4096,
       submit_ns: int = NOW - 1_000, complete_ns: int = NOW - 750,
       volume_id: str = "vol-1", tenant_id: str = "t-1") -> dict[str, Any]:
    """One canonical event; defaults give a valid 250 ns ok read of 4 KiB of vol-1."""
    return {"volume_id": volume_id, "tenant_id": tenant_id, "host_id": "h-1", "op": op,
            "status": status, "offset": offset, "bytes": nbytes, "submit_ns": submit_ns,
            "complete_ns": complete_ns}


def encode(record: dict[str, Any]) -> bytes:
    return SCHEMAS.encode("IoBatch", record)


def placed(payload: bytes) -> Placement:
    """Where a producer with the default partitioner puts ``payload`` (any, if undecodable)."""
    try:
        volume_id = SCHEMAS.decode(payload, expect="IoBatch")[1]["volume_id"]
    except ValueError:
        return Placement(None, 0, PARTITIONS)
    return Placement.of(volume_id, PARTITIONS)


def state_of(outcome: RecordOutcome) -> VolumeState | None:
    """The state a layout 1 record stores: its one volume's, if accepted and counted."""
    assert len(outcome.volumes) <= 1
    return outcome.volumes[0].state if outcome.volumes else None


class Table:
    """A stand-in for the Faust table: volume_id -> state snapshot bytes."""

    def __init__(self) -> None:
        self.snapshots: dict[str, bytes] = {}

    def load(self, volume_id: str) -> VolumeState | None:
        data = self.snapshots.get(volume_id)
        return None if data is None else VolumeState.from_snapshot(data)

    def apply(self, payload: bytes, now_ns: int = NOW, limits: Limits = DEFAULT_LIMITS,
              placement: Placement | None = None) -> RecordOutcome:
        """One record, by default where its producer would put it."""
        outcome = account_record(payload, placement or placed(payload), self.load, SCHEMAS,
                                 now_ns, limits)
        assert len(outcome.rejections) <= 1  # one dead letter per record, whatever it holds
        for volume in outcome.volumes:
            if volume.state is not None:
                self.snapshots[volume.volume_id] = volume.state.snapshot()
        return outcome

    def counters(self, reference_ns: int = NOW) -> dict[str, dict[str, Any]]:
        """Public counters of every volume, without the keys the oracle lacks."""
        result = {}
        for volume_id in self.snapshots:
            state = self.load(volume_id)
            assert state is not None
            obj = state.counters_json(volume_id, reference_ns)
            result[volume_id] = {k: v for k, v in obj.items() if k not in NOT_IN_ORACLE}
        # volumes whose events were all rejected have a state but no oracle row
        return {v: c for v, c in result.items() if c["last_io_ns"] is not None}

    def histograms(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Cumulative latency histograms of every volume that has any (histograms_of)."""
        result = {}
        for volume_id in self.snapshots:
            state = self.load(volume_id)
            assert state is not None
            result[volume_id] = histograms_of(state)
        return {v: h for v, h in result.items() if h}
