"""A worker killed with -9 between two tables' changelog writes, modelled without faust.

The counters table and the windows table are two changelog topics: a crash can leave
each of them with the writes of a different prefix of the records processed since the
last commit (writes to one changelog partition land in order, so a prefix). The new
owner restores both and re-reads the raw records from the committed offset. Whatever
the two prefixes, the counters and the windows must end up holding every event exactly
once: each table keeps its own replay check (the counters their per-volume seqs, the
windows `PartitionWindows.applied`).
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.accounting import VolumeState
from streams.codec import default_schemas
from streams.ingest import Limits, account_record
from streams.partition_windows import PartitionWindows
from streams.windowing import WindowSettings
from streams.windows import NS_PER_S, window_stats
from tests.oracle import counters_oracle
from tests.window_oracle import windows_oracle

from .test_ingest import NOW, fleet_events, records_of

SCHEMAS = default_schemas()
LIMITS = Limits(10**18, 10**18)  # nothing is too old or too new here: the model is the point


def _process(payload: bytes, counters: dict[bytes, bytes], windows_table: dict[bytes, bytes],
             count: bool = True, window: bool = True) -> None:
    """One raw record, as app.py's _account_record does it, into either table or both."""
    def load(volume_id: str) -> VolumeState | None:
        snapshot = counters.get(volume_id.encode())
        return None if snapshot is None else VolumeState.from_snapshot(snapshot)

    outcome = account_record(payload, load, SCHEMAS, NOW, LIMITS)
    if count and outcome.state is not None and outcome.volume_id is not None:
        counters[outcome.volume_id.encode()] = outcome.state.snapshot()
    if window and outcome.batch is not None and outcome.volume_id is not None:
        b = outcome.batch
        PartitionWindows(0, windows_table, WindowSettings()).on_events(
            outcome.volume_id, b["tenant_id"], b["op"], b["status"], b["bytes"],
            b["submit_ns"], b["complete_ns"], outcome.good, NOW, (b["producer_id"], b["seq"]))


def _stored_windows(table: dict[bytes, bytes]) -> dict[tuple[str, int], dict[str, Any]]:
    book = PartitionWindows(0, table, WindowSettings()).books[0]
    return {key: window_stats(key[0], entry.tenant_id, entry.acc)
            for key, entry in book.store.items()}


def _stored_counters(table: dict[bytes, bytes]) -> dict[str, dict[str, Any]]:
    return {key.decode(): VolumeState.from_snapshot(value).counters_json(key.decode(), NOW)
            for key, value in table.items()}


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), cuts=st.lists(st.floats(0, 1), min_size=4, max_size=4))
def test_any_crash_between_the_two_tables_counts_every_event_once(
    seed: int, cuts: list[float],
) -> None:
    events = fleet_events()[0][:600]
    payloads = records_of(events, [1, 3, 7], random.Random(seed), producers=2)
    n = len(payloads)
    committed, crashed = sorted(int(c * n) for c in cuts[:2])
    # What each table's changelog kept: the writes of records [0, m) with committed <= m
    # <= crashed, independently for the two tables.
    kept_counters = committed + int(cuts[2] * (crashed - committed))
    kept_windows = committed + int(cuts[3] * (crashed - committed))
    counters: dict[bytes, bytes] = {}
    windows_table: dict[bytes, bytes] = {}
    for i, payload in enumerate(payloads[:crashed]):
        _process(payload, counters, windows_table,
                 count=i < kept_counters, window=i < kept_windows)
    # The new owner: both tables as restored, the raw records again from the commit on.
    for payload in payloads[committed:]:
        _process(payload, counters, windows_table)
    # ... and a producer's duplicate of every record, which must change nothing.
    for payload in payloads:
        _process(payload, counters, windows_table)

    want_counters = counters_oracle(events, now_ns=NOW, retention_ns=10**18, future_ns=10**18)
    got_counters = _stored_counters(counters)
    assert {v: {k: got_counters[v][k] for k in want} for v, want in want_counters.items()} \
        == want_counters
    assert _stored_windows(windows_table) == windows_oracle(events, NS_PER_S)
