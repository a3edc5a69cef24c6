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
    length, the same for every entry of one end).

    With ``track_last``, also each volume's last end still in the index (:meth:`last_end`):
    a window that ends later than that is not open (a dict entry per volume with an open
    window: the 1 s windows' book keeps it, to know a new window without reading the table,
    columnar.py)."""

    __slots__ = ("_by_end", "_ends", "_last")

    def __init__(self, entries: Iterable[tuple[int, str]] = (), track_last: bool = False
                 ) -> None:
        self._by_end: dict[int, list[str]] = {}
        self._ends: list[int] = []  # a heap of the keys of _by_end
        self._last: dict[str, int] | None = {} if track_last else None
        for end_ns, volume_id in entries:
            self.push(end_ns, volume_id)

    def __bool__(self) -> bool:
        return bool(self._by_end)

    def push(self, end_ns: int, volume_id: str) -> None:
        last = self._last
        if last is not None and end_ns > last.get(volume_id, end_ns - 1):
            last[volume_id] = end_ns
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
        last = self._last
        while watermark_ns is not None and self._ends and self._ends[0] <= watermark_ns:
            end_ns = heapq.heappop(self._ends)
            volumes = sorted(self._by_end.pop(end_ns))
            due += [(end_ns, volume_id) for volume_id in volumes]
            if last is not None:  # a volume's last end taken: every end of it is (<=)
                for volume_id in volumes:
                    if last.get(volume_id) == end_ns:
                        del last[volume_id]
        return due

    def last_end(self, volume_id: str) -> int | None:
        """The latest end of ``volume_id``'s entries, None if it has none (``track_last``
        only)."""
        if self._last is None:
            raise TypeError("this index does not track each volume's last end")
        return self._last.get(volume_id)

    def entries(self) -> list[tuple[int, str]]:
        """Every (end, volume) still to close, in (end, volume) order; nothing taken."""
        return sorted((end_ns, volume_id) for end_ns, volumes in self._by_end.items()
                      for volume_id in volumes)
