"""A partition's window stages opened over a bytes table, each with its journal, and the
three of them chained in one process.

The worker opens its stages with :func:`open_partition_windows` and
:func:`open_rollup_windows` over its Faust table; the tests, the audit's recomputation
and the bench run :class:`WindowChain`, which feeds what one stage publishes to the
stage above as the worker's topics do.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence

from streams.core.batch import Columns, EventBatch
from streams.core.billing import BillingRecord
from streams.core.times import NS_PER_S
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
    redone first if a crash cut them, under everything the stage reads."""
    journaled = JournaledTable(table, partition_prefix(partition) + b"journal",
                               journal_chunk_bytes)
    return PartitionWindows(partition, journaled, settings, keep_ns, retention_ns)


def open_rollup_windows(partition: int, table: Table, settings: WindowSettings,
                        inner_len_ns: int, window_len_ns: int, keep_ns: int = 0,
                        journal_chunk_bytes: int = JOURNAL_CHUNK_BYTES) -> RollupWindows:
    """The rollup stage of ``window_len_ns`` of ``partition`` over ``table``."""
    journaled = JournaledTable(table, rollup_prefix(partition, window_len_ns) + b"journal",
                               journal_chunk_bytes)
    return RollupWindows(partition, journaled, settings, inner_len_ns, window_len_ns, keep_ns)


class WindowChain:
    """The three stages of one partition in one process, as the worker's agents run them
    over the topics: what one stage publishes (window records, then a watermark marker)
    is fed in order to the stage above, at the next offsets of an imagined topic.

    For the pure tests, the audit's and the bench's in-process runs: the worker itself
    connects the stages through ``ioacct.stats.1s`` and ``ioacct.stats.1m`` (app.py)."""

    def __init__(self, partition: int, table: Table, settings: WindowSettings,
                 keep_ns: Sequence[int] = (0, 0, 0), retention_ns: int | None = None,
                 journal_chunk_bytes: int = JOURNAL_CHUNK_BYTES) -> None:
        self.windows = open_partition_windows(partition, table, settings, keep_ns, retention_ns,
                                              journal_chunk_bytes)
        self.rollups = [open_rollup_windows(partition, table, settings, WINDOW_LENGTHS_NS[n],
                                            WINDOW_LENGTHS_NS[n + 1], keep_ns[n + 1],
                                            journal_chunk_bytes)
                        for n in (0, 1)]
        self.topic_ends = [0, 0]  # the next offset of each imagined stats topic

    @property
    def books(self) -> list[WindowBook]:
        return [self.windows.books[0]] + [r.book for r in self.rollups]

    @property
    def needs_ticks(self) -> bool:
        return self.windows.needs_ticks or any(r.has_open_windows for r in self.rollups)

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
        marker = self.windows.take_marker()
        for n, stage in enumerate(self.rollups):
            made: list[Emission] = []
            for emission in emissions:
                made += stage.on_window(emission, self.topic_ends[n])
                self.topic_ends[n] += 1
            if marker is not None:
                made += stage.on_watermark(marker, self.topic_ends[n])
                self.topic_ends[n] += 1
            out += made
            emissions, marker = made, stage.take_marker()
        return out

    def windows_of(self, volume_id: str, length_ns: int, from_ns: int, to_ns: int
                   ) -> list[WindowEntry]:
        if length_ns == NS_PER_S:
            return self.windows.windows_of(volume_id, length_ns, from_ns, to_ns)
        stage = self.rollups[WINDOW_LENGTHS_NS.index(length_ns) - 1]
        return stage.windows_of(volume_id, from_ns, to_ns)
