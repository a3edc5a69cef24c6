"""Which raw-topic offsets the accounting agent has handled, per partition it owns.

Pure logic: no faust, no aiokafka. faust-streaming can hand an agent a record from
past a gap after a rebalance (a record prefetched in the previous generation, or a
read offset left over from it: faust-streaming issues #216 and #221, "DROPPED MESSAGE
ROFF"), and then commits past records the agent never saw: counts lost for good. The
raw topic is neither compacted nor transactional, so its offsets have no holes of
their own: the agent must see every offset from the group's committed offset on, one
after the other. :class:`OffsetTracker` says, for each record faust delivers, whether
to process it, to skip it (seen already), or to first read the missing range itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Verdict(Enum):
    PROCESS = "process"  # the next offset: go on
    SEEN = "seen"  # handled already (faust delivered it again): skip it
    GAP = "gap"  # records [start, offset) were never delivered: read them first


@dataclass
class OffsetTracker:
    next_offsets: dict[int, int] = field(default_factory=dict)

    def knows(self, partition: int) -> bool:
        return partition in self.next_offsets

    def start(self, partition: int, offset: int) -> None:
        """The first offset to see after the partition was assigned (the committed one)."""
        self.next_offsets[partition] = offset

    def check(self, partition: int, offset: int) -> tuple[Verdict, int]:
        """What to do with the record at ``offset``; with GAP, where the gap starts."""
        expected = self.next_offsets[partition]
        if offset < expected:
            return Verdict.SEEN, expected
        if offset > expected:
            return Verdict.GAP, expected
        return Verdict.PROCESS, expected

    def done(self, partition: int, offset: int) -> None:
        self.next_offsets[partition] = offset + 1

    def forget(self, partition: int) -> None:
        """The partition was revoked: its next owner starts from the committed offset."""
        self.next_offsets.pop(partition, None)


@dataclass
class CommitWatch:
    """Which partitions' commits stay put while processed records wait past them: the
    symptom of an offset gap faust cannot get past (faust_fixes.ack_offsets) or of a
    commit that never completes. Nothing else shows it: the worker keeps processing, its
    lag only grows, and faust logs nothing. ``observe`` is called on a timer."""

    stall_s: float
    # key -> (committed offset, when it was first seen with records pending, last report)
    _state: dict[object, tuple[int | None, float, float | None]] = field(default_factory=dict)

    def observe(self, key: object, committed: int | None, pending: int, now: float
                ) -> float | None:
        """Seconds the commit of ``key`` has stayed at ``committed`` with ``pending``
        processed records past it, once that reaches ``stall_s`` and at most once per
        ``stall_s`` after; else None."""
        if pending == 0:
            self._state.pop(key, None)
            return None
        state = self._state.get(key)
        if state is None or state[0] != committed:
            self._state[key] = (committed, now, None)  # a new run starts here
            return None
        _, since, reported = state
        if now - since < self.stall_s or (reported is not None
                                          and now - reported < self.stall_s):
            return None
        self._state[key] = (committed, since, now)
        return now - since

    def forget_except(self, keys: set[Any]) -> None:
        """Drop the partitions no longer assigned."""
        for key in set(self._state) - keys:
            del self._state[key]
