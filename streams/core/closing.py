"""What still has to close, by end: the index a window book and a billing book keep of
their open windows and hours.

Pure logic. Every open window (and hour) of every volume has an entry, so its size is
per volume: a heap of ``(end, volume, start)`` tuples held about 136 bytes per entry (a
tuple, two ints, a slot). Windows and hours of one length end on the same few instants,
so the volumes are kept in one list per end instead: a list slot per entry, the volume's
string shared with the book's columns (docs/performance.md, "What a volume costs").
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable


class ClosingIndex:
    """end_ns -> the volumes whose window ends then; taken in (end, volume) order, as
    the heap of (end, volume, start) tuples it replaces popped them (start = end - the
    length, the same for every entry of one end)."""

    __slots__ = ("_by_end", "_ends")

    def __init__(self, entries: Iterable[tuple[int, str]] = ()) -> None:
        self._by_end: dict[int, list[str]] = {}
        self._ends: list[int] = []  # a heap of the keys of _by_end
        for end_ns, volume_id in entries:
            self.push(end_ns, volume_id)

    def __bool__(self) -> bool:
        return bool(self._by_end)

    def push(self, end_ns: int, volume_id: str) -> None:
        volumes = self._by_end.get(end_ns)
        if volumes is None:
            self._by_end[end_ns] = [volume_id]
            heapq.heappush(self._ends, end_ns)
        else:
            volumes.append(volume_id)

    def take_due(self, watermark_ns: int | None) -> list[tuple[int, str]]:
        """Every (end, volume) ending at or before ``watermark_ns``, taken out, in (end,
        volume) order (a volume pushed twice comes twice)."""
        due: list[tuple[int, str]] = []
        while watermark_ns is not None and self._ends and self._ends[0] <= watermark_ns:
            end_ns = heapq.heappop(self._ends)
            due += [(end_ns, volume_id) for volume_id in sorted(self._by_end.pop(end_ns))]
        return due

    def entries(self) -> list[tuple[int, str]]:
        """Every (end, volume) still to close, in (end, volume) order; nothing taken."""
        return sorted((end_ns, volume_id) for end_ns, volumes in self._by_end.items()
                      for volume_id in volumes)
