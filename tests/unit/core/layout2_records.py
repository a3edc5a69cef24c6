"""Layout 2 (IoBatch2) records for the ingest tests: several volumes of one partition per
record, built from canonical events, and their layout 1 twins (one record per volume)."""

from __future__ import annotations

from typing import Any

from aiokafka.partitioner import DefaultPartitioner

from streams.core.events import OPS, STATUSES
from streams.core.ingest import Placement
from streams.core.raw import layout2_record
from tests.unit.core.ingest_records import PARTITIONS, SCHEMAS, batch, code, encode

HOME = 0  # the partition every layout 2 record here is written to


def kafka_partition(volume_id: str) -> int:
    """The partition Kafka's own default partitioner gives ``volume_id`` (not ours)."""
    partitions = list(range(PARTITIONS))
    return int(DefaultPartitioner()(volume_id.encode(), partitions, partitions))


def _volumes_placed(home: bool, n: int) -> list[str]:
    found = [f"vol-{i}" for i in range(400) if (kafka_partition(f"vol-{i}") == HOME) == home]
    return found[:n]


HOME_VOLUMES = _volumes_placed(True, 4)  # volumes that belong in HOME
AWAY_VOLUMES = _volumes_placed(False, 2)  # volumes that do not
BAD_VOLUMES = ["bad/vol"]  # an invalid id, wherever it places


def record_order(groups: list[tuple[str, str, list[dict[str, Any]]]],
                 ) -> list[tuple[int, dict[str, Any]]]:
    """(group, event) in record order: the groups' events round-robin, as a host's flush
    mixes them."""
    order: list[tuple[int, dict[str, Any]]] = []
    queues = [list(events) for _, _, events in groups]
    while any(queues):
        for v, queue in enumerate(queues):
            if queue:
                order.append((v, queue.pop(0)))
    return order


def layout2(groups: list[tuple[str, str, list[dict[str, Any]]]], producer_id: str = "p-1",
            seq: int = 0, by_volume: bool = False) -> bytes:
    """An IoBatch2 payload of (volume_id, claimed tenant_id, canonical events) groups: the
    events round-robin, or each volume's together (``by_volume``, as the SDK sends them)."""
    order = record_order(groups)
    if by_volume:
        order = sorted(order, key=lambda item: item[0])  # stable: each volume's in order
    return SCHEMAS.encode("IoBatch2", layout2_record(
        producer_id, seq, "h-1", [g[0] for g in groups], [g[1] for g in groups], {
            "volume": [v for v, _ in order],
            "op": [code(e["op"], OPS) for _, e in order],
            "status": [code(e["status"], STATUSES) for _, e in order],
            "offset": [e["offset"] for _, e in order], "bytes": [e["bytes"] for _, e in order],
            "submit_ns": [e["submit_ns"] for _, e in order],
            "complete_ns": [e["complete_ns"] for _, e in order]}))


def home_placement(first_volume: str) -> Placement:
    """Where the SDK writes a layout 2 record: key = its first volume's id, in HOME."""
    return Placement(first_volume.encode(), HOME, PARTITIONS)


def twin_payloads(groups: list[tuple[str, str, list[dict[str, Any]]]], producer_id: str,
                  seq: int) -> list[tuple[bytes, Placement]]:
    """The same events as one layout 1 record per volume, each where the layout 2 record
    sits (so a volume placed elsewhere is misplaced in both layouts)."""
    return [(encode(batch(events, producer_id, seq, volume_id, tenant_id)),
             Placement(volume_id.encode(), HOME, PARTITIONS))
            for volume_id, tenant_id, events in groups]
