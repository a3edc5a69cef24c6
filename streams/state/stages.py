"""A partition's window stages opened over a bytes table, each with its journal, and the
two of them chained in one process.

The worker opens its stages with :func:`open_partition_windows` (1 s and 1 m windows)
and :func:`open_rollup_windows` (1 h) over its Faust table; the tests, the audit's
recomputation and the bench run :class:`WindowChain`, which feeds what the first stage
publishes of 1 m windows to the stage above as the worker's topic does.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence

from streams.core.batch import Columns, EventBatch
from streams.core.billing import BillingRecord
from streams.core.times import MINUTE_NS, NS_PER_S
from streams.core.windows.acc import WINDOW_LENGTHS_NS
from streams.core.windows.book import Emission, WindowBook, WindowEntry, WindowSettings
from streams.core.windows.stages import (
    PartitionWindows,
    ProducedColumns,
    RollupWindows,
    partition_prefix,
    rollup_prefix,
)
from streams.state.journal import JOURNAL_CHUNK_BYTES, JournaledTable

Table = MutableMapping[bytes, bytes]


def open_partition_windows(partition: int, table: Table, settings: WindowSettings,
                           keep_ns: Sequence[int] = (0, 0, 0), retention_ns: int | None = None,
                           journal_chunk_bytes: int = JOURNAL_CHUNK_BYTES) -> PartitionWindows:
    """The accounting stage of ``partition`` over ``table``: the last unit's writes are
    redone first if a crash cut them, under everything the stage reads; so are those of
    the partition's 1 m stage of before session 14, which had a journal of its own
    (PartitionWindows._upgrade_minutes)."""
    journaled = JournaledTable(table, partition_prefix(partition) + b"journal",
                               journal_chunk_bytes)
    older = JournaledTable(table, rollup_prefix(partition, MINUTE_NS) + b"journal",
                           journal_chunk_bytes)
    journaled.pending.update(older.pending)  # its keys are its own: none of the stage's
    return PartitionWindows(partition, journaled, settings, keep_ns, retention_ns)


def open_rollup_windows(partition: int, table: Table, settings: WindowSettings,
                        inner_len_ns: int, window_len_ns: int, keep_ns: int = 0,
                        journal_chunk_bytes: int = JOURNAL_CHUNK_BYTES) -> RollupWindows:
    """The rollup stage of ``window_len_ns`` of ``partition`` over ``table``."""
    journaled = JournaledTable(table, rollup_prefix(partition, window_len_ns) + b"journal",
                               journal_chunk_bytes)
    return RollupWindows(partition, journaled, settings, inner_len_ns, window_len_ns, keep_ns)


class WindowChain:
    """The two stages of one partition in one process, as the worker's agents run them
    over the topics: what the first publishes of 1 m windows (window records, then a
    watermark marker) is fed in order to the 1 h stage, at the next offsets of an
    imagined topic.

    For the pure tests, the audit's and the bench's in-process runs: the worker itself
    connects the stages through ``ioacct.stats.1m`` (app.py)."""

    def __init__(self, partition: int, table: Table, settings: WindowSettings,
                 keep_ns: Sequence[int] = (0, 0, 0), retention_ns: int | None = None,
                 journal_chunk_bytes: int = JOURNAL_CHUNK_BYTES) -> None:
        self.windows = open_partition_windows(partition, table, settings, keep_ns, retention_ns,
                                              journal_chunk_bytes)
        self.hours = open_rollup_windows(partition, table, settings, WINDOW_LENGTHS_NS[1],
                                         WINDOW_LENGTHS_NS[2], keep_ns[2], journal_chunk_bytes)
        self.topic_end = 0  # the next offset of the imagined ioacct.stats.1m

    @property
    def books(self) -> list[WindowBook]:
        return [self.windows.books[0], self.windows.minutes.inner, self.hours.book]

    @property
    def needs_ticks(self) -> bool:
        return self.windows.needs_ticks or self.hours.has_open_windows

    def take_billing(self) -> list[BillingRecord]:
        return self.windows.take_billing()

    def on_events(self, batch: EventBatch, wall_ns: int, producer: tuple[str, int] | None = None,
                  offset: int = -1) -> list[Emission]:
        return self._up(self.windows.on_events(batch, wall_ns, producer, offset))

    def on_columns(self, columns: Columns, wall_ns: int,
                   producer: tuple[str, int] | None = None, offset: int = -1) -> list[Emission]:
        return self._up(self.windows.on_columns(columns, wall_ns, producer, offset))

    def on_records(self, records: Sequence[ProducedColumns], wall_ns: int, offset: int = -1
                   ) -> list[Emission]:
        return self._up(self.windows.on_records(records, wall_ns, offset))

    def on_tick(self, wall_ns: int, offset: int = -1) -> list[Emission]:
        return self._up(self.windows.on_tick(wall_ns, offset))

    def replay_outputs(self, committed: int) -> list[Emission]:
        return self._up(self.windows.replay_outputs(committed))

    def _up(self, emissions: list[Emission]) -> list[Emission]:
        out = list(emissions)
        self.windows.take_marker()  # for readers of ioacct.stats.1s: none here
        marker = self.windows.take_minute_marker()
        for emission in emissions:
            if emission.acc.window_len_ns == MINUTE_NS:
                out += self.hours.on_window(emission, self.topic_end)
                self.topic_end += 1
        if marker is not None:
            out += self.hours.on_watermark(marker, self.topic_end)
            self.topic_end += 1
        return out

    def windows_of(self, volume_id: str, length_ns: int, from_ns: int, to_ns: int
                   ) -> list[WindowEntry]:
        if length_ns in (NS_PER_S, MINUTE_NS):
            return self.windows.windows_of(volume_id, length_ns, from_ns, to_ns)
        return self.hours.windows_of(volume_id, from_ns, to_ns)
