"""The events of one record as one columnar value: what the counters, the billing hours
and the windows take (STYLE.md point 9: not six to twelve loose arguments).

Pure logic: no faust, no aiokafka. The columns are those of the decoded ``IoBatch``
record, shared, never copied per event; ``indexes`` says which events to take.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


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


@dataclass(frozen=True, slots=True)
class Columns:
    """The events of one or more volumes as numpy columns: what the vectorised counters,
    billing hours and windows take (DESIGN.md decision 2). Event ``i`` belongs to volume
    ``volumes[volume[i]]`` (tenant ``tenants[volume[i]]``); every column has one entry
    per event, and each volume appears once in ``volumes``.

    dtypes: ``volume`` intp, ``op`` and ``status`` uint8, the others int64.
    """

    volumes: tuple[str, ...]
    tenants: tuple[str, ...]
    volume: np.ndarray
    op: np.ndarray
    status: np.ndarray
    nbytes: np.ndarray
    submit_ns: np.ndarray
    complete_ns: np.ndarray

    def __len__(self) -> int:
        return len(self.op)

    @classmethod
    def of_batch(cls, batch: EventBatch) -> Columns:
        """The events ``batch`` takes, as the columns of one volume."""
        take = np.asarray(batch.indexes, dtype=np.intp)
        return cls(
            (batch.volume_id,), (batch.tenant_id,), np.zeros(len(take), dtype=np.intp),
            np.frombuffer(bytes(batch.ops), dtype=np.uint8)[take],
            np.frombuffer(bytes(batch.statuses), dtype=np.uint8)[take],
            np.asarray(batch.nbytes, dtype=np.int64)[take],
            np.asarray(batch.submit_ns, dtype=np.int64)[take],
            np.asarray(batch.complete_ns, dtype=np.int64)[take],
        )

    def take(self, which: np.ndarray) -> Columns:
        """The events at ``which`` (indexes or a boolean mask), same volume table."""
        return Columns(self.volumes, self.tenants, self.volume[which], self.op[which],
                       self.status[which], self.nbytes[which], self.submit_ns[which],
                       self.complete_ns[which])

    @classmethod
    def concat(cls, parts: Sequence[Columns]) -> Columns:
        """One value holding the events of ``parts`` in order, their volume tables merged
        (a volume in several parts keeps the first part's tenant)."""
        index: dict[str, int] = {}
        tenants: list[str] = []
        remapped = []
        for part in parts:
            codes = np.empty(len(part.volumes), dtype=np.intp)
            for j, (volume_id, tenant_id) in enumerate(zip(part.volumes, part.tenants,
                                                           strict=True)):
                if volume_id not in index:
                    index[volume_id] = len(tenants)
                    tenants.append(tenant_id)
                codes[j] = index[volume_id]
            remapped.append(codes[part.volume])
        def cat(name: str, dtype: type) -> np.ndarray:
            return np.concatenate([getattr(p, name) for p in parts]) if parts \
                else np.empty(0, dtype=dtype)
        volume = np.concatenate(remapped) if remapped else np.empty(0, dtype=np.intp)
        return cls(tuple(index), tuple(tenants), volume, cat("op", np.uint8),
                   cat("status", np.uint8), cat("nbytes", np.int64),
                   cat("submit_ns", np.int64), cat("complete_ns", np.int64))
