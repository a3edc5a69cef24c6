"""The events of one record as one columnar value: what the counters, the billing hours
and the windows take (STYLE.md point 9: not six to twelve loose arguments).

Pure logic: no faust, no aiokafka. The columns are those of the decoded ``IoBatch``
record, shared, never copied per event; ``indexes`` says which events to take.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class EventBatch:
    """One volume's events as columns, and the indexes of those to take (the valid ones)."""

    volume_id: str
    tenant_id: str
    ops: bytes  # op codes (events.OPS)
    statuses: bytes  # status codes (events.STATUSES)
    nbytes: Sequence[int]
    submit_ns: Sequence[int]
    complete_ns: Sequence[int]
    indexes: Sequence[int]

    @classmethod
    def from_record(cls, record: Mapping[str, Any], indexes: Sequence[int]) -> EventBatch:
        """The columns of a decoded ``IoBatch`` record, taking the events at ``indexes``."""
        return cls(record["volume_id"], record["tenant_id"], record["op"], record["status"],
                   record["bytes"], record["submit_ns"], record["complete_ns"], indexes)

    def select(self, indexes: Sequence[int]) -> EventBatch:
        """The same columns, taking the events at ``indexes`` instead."""
        return EventBatch(self.volume_id, self.tenant_id, self.ops, self.statuses,
                          self.nbytes, self.submit_ns, self.complete_ns, indexes)

    def max_complete_ns(self) -> int:
        """The latest completion of the events taken (there must be one)."""
        complete_ns = self.complete_ns
        return max(complete_ns[i] for i in self.indexes)
