"""A partition's window stage opened over a bytes table, with its journal.

The worker opens its stage with :func:`open_partition_windows` (1 s, 1 m and 1 h windows
and billing) over its Faust table; so do the tests and the bench's in-process runs, over
dicts. (The audit computes its windows from the raw events alone: audit/replay.py.)
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence

from streams.core.times import HOUR_NS, MINUTE_NS
from streams.core.windows.book import WindowSettings
from streams.core.windows.stages import PartitionWindows, partition_prefix, rollup_prefix
from streams.state.journal import JOURNAL_CHUNK_BYTES, JournaledTable

Table = MutableMapping[bytes, bytes]


def open_partition_windows(partition: int, table: Table, settings: WindowSettings,
                           keep_ns: Sequence[int] = (0, 0, 0), retention_ns: int | None = None,
                           journal_chunk_bytes: int = JOURNAL_CHUNK_BYTES) -> PartitionWindows:
    """The accounting stage of ``partition`` over ``table``: the last unit's writes are
    redone first if a crash cut them, under everything the stage reads; so are those of
    the partition's 1 m stage of before session 14 and 1 h stage of before session 30,
    which had journals of their own (PartitionWindows._upgrade_rollup)."""
    journaled = JournaledTable(table, partition_prefix(partition) + b"journal",
                               journal_chunk_bytes)
    for length_ns in (MINUTE_NS, HOUR_NS):
        older = JournaledTable(table, rollup_prefix(partition, length_ns) + b"journal",
                               journal_chunk_bytes)
        journaled.pending.update(older.pending)  # its keys are its own: none of the stage's
    return PartitionWindows(partition, journaled, settings, keep_ns, retention_ns)
