"""Per-volume batching of raw events into raw record layout 1 (``IoBatch``).

The SDK writes layout 2 (grouping.py); this stays for what needs layout-1 records:
tests of older producers' records (the worker still reads them) and the bench's
in-process calibration. Pure logic: no faust, no aiokafka. A producer appends every event here
(cheap: two code lookups, a dict lookup and one append) and ships a volume's batch when it is
full or old enough. ``seq`` is stamped when a batch is taken, so it grows in
send order, which is what the worker's replay check relies on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streams.core.events import OP_CODE, STATUS_CODE, IoEvent


@dataclass(slots=True)
class VolumeBuffer:
    """The events of one volume that are not sent yet, one tuple each: (op code, status
    code, offset, bytes, submit_ns, complete_ns); turned into columns when taken (one
    append per event here is cheaper than six)."""

    volume_id: str
    tenant_id: str
    host_id: str | None
    opened_ns: int
    rows: list[tuple[int, int, int, int, int, int]] = field(default_factory=list)


class Batcher:
    """Buffers events per volume; hands out IoBatch records with (producer_id, seq)."""

    def __init__(self, producer_id: str, max_events: int, max_age_ns: int) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.producer_id = producer_id
        self.max_events = max_events
        self.max_age_ns = max_age_ns
        self.next_seq = 0
        self._open: dict[str, VolumeBuffer] = {}  # by volume_id
        self._full: list[VolumeBuffer] = []

    @property
    def buffered_events(self) -> int:
        """Events added and not taken yet (counted when asked: add() stays cheap)."""
        return sum(len(buf.rows) for buf in (*self._open.values(), *self._full))

    def add(
        self, volume_id: str, tenant_id: str, op: str, status: str, offset: int,
        nbytes: int, submit_ns: int, complete_ns: int, host_id: str | None, now_ns: int,
    ) -> bool:
        """Buffer one event; True when a batch became ready to send (full, or closed
        because this event names another tenant or host for its volume than the
        buffered ones: a record has one of each).

        An unknown ``op`` or ``status`` raises ValueError: the Avro layout has no
        place for it, so the caller must route such input to the dead-letter topic.
        """
        try:
            row = (OP_CODE[op], STATUS_CODE[status], offset, nbytes, submit_ns, complete_ns)
        except KeyError as exc:
            raise ValueError(f"unknown op or status {exc.args[0]!r}") from None
        buf = self._open.get(volume_id)
        closed = False
        if buf is None or buf.tenant_id != tenant_id or buf.host_id != host_id:
            if buf is not None:  # rare: the earlier events go first, in their own record
                self._full.append(buf)
                closed = True
            buf = self._open[volume_id] = VolumeBuffer(volume_id, tenant_id, host_id, now_ns)
        rows = buf.rows
        rows.append(row)
        if len(rows) >= self.max_events:
            self._full.append(self._open.pop(volume_id))
            return True
        return closed

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
        op, status, offset, nbytes, submit_ns, complete_ns = zip(*buf.rows, strict=True)
        return {
            "producer_id": self.producer_id, "seq": seq, "volume_id": buf.volume_id,
            "tenant_id": buf.tenant_id, "host_id": buf.host_id, "op": bytes(op),
            "status": bytes(status), "offset": list(offset), "bytes": list(nbytes),
            "submit_ns": list(submit_ns), "complete_ns": list(complete_ns),
        }
