"""Per-volume batching of raw events on the hypervisor side.

Pure logic: no faust, no aiokafka. The producer SDK appends every event here
(cheap: a dict lookup and six appends) and ships a volume's batch when it is
full or old enough. ``seq`` is stamped when a batch is taken, so it grows in
send order, which is what the worker's replay check relies on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .events import OP_CODE, STATUS_CODE, IoEvent


@dataclass(slots=True)
class VolumeBuffer:
    """Columns of the events of one volume that are not sent yet."""

    volume_id: str
    tenant_id: str
    host_id: str | None
    opened_ns: int
    op: bytearray = field(default_factory=bytearray)
    status: bytearray = field(default_factory=bytearray)
    offset: list[int] = field(default_factory=list)
    nbytes: list[int] = field(default_factory=list)
    submit_ns: list[int] = field(default_factory=list)
    complete_ns: list[int] = field(default_factory=list)


class Batcher:
    """Buffers events per volume; hands out IoBatch records with (producer_id, seq)."""

    def __init__(self, producer_id: str, max_events: int, max_age_ns: int) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.producer_id = producer_id
        self.max_events = max_events
        self.max_age_ns = max_age_ns
        self.next_seq = 0
        self.buffered_events = 0
        self._open: dict[tuple[str, str, str | None], VolumeBuffer] = {}
        self._full: list[VolumeBuffer] = []

    def add(
        self, volume_id: str, tenant_id: str, op: str, status: str, offset: int,
        nbytes: int, submit_ns: int, complete_ns: int, host_id: str | None, now_ns: int,
    ) -> bool:
        """Buffer one event; True when a batch became full and is ready to send.

        An unknown ``op`` or ``status`` raises ValueError: the Avro layout has no
        place for it, so the caller must route such input to the dead-letter topic.
        """
        try:
            op_code, status_code = OP_CODE[op], STATUS_CODE[status]
        except KeyError as exc:
            raise ValueError(f"unknown op or status {exc.args[0]!r}") from None
        key = (volume_id, tenant_id, host_id)
        buf = self._open.get(key)
        if buf is None:
            buf = self._open[key] = VolumeBuffer(volume_id, tenant_id, host_id, now_ns)
        buf.op.append(op_code)
        buf.status.append(status_code)
        buf.offset.append(offset)
        buf.nbytes.append(nbytes)
        buf.submit_ns.append(submit_ns)
        buf.complete_ns.append(complete_ns)
        self.buffered_events += 1
        if len(buf.op) >= self.max_events:
            self._full.append(self._open.pop(key))
            return True
        return False

    def add_event(self, event: IoEvent, now_ns: int) -> bool:
        return self.add(
            event.volume_id, event.tenant_id, event.op, event.status, event.offset,
            event.bytes, event.submit_ns, event.complete_ns, event.host_id, now_ns,
        )

    def take_ready(self, now_ns: int, everything: bool = False) -> list[dict[str, Any]]:
        """Batches that are full or older than max_age (all, with ``everything``)."""
        ready, self._full = self._full, []
        for key, buf in list(self._open.items()):
            if everything or now_ns - buf.opened_ns >= self.max_age_ns:
                ready.append(self._open.pop(key))
        return [self._record(buf) for buf in ready]

    def _record(self, buf: VolumeBuffer) -> dict[str, Any]:
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        self.buffered_events -= len(buf.op)
        return {
            "producer_id": self.producer_id, "seq": seq, "volume_id": buf.volume_id,
            "tenant_id": buf.tenant_id, "host_id": buf.host_id, "op": bytes(buf.op),
            "status": bytes(buf.status), "offset": buf.offset, "bytes": buf.nbytes,
            "submit_ns": buf.submit_ns, "complete_ns": buf.complete_ns,
        }
