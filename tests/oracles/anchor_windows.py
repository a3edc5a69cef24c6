"""Brute-force oracle of the bench anchors' job: per volume and 1 s event-time window
(complete_ns), count, bytes and latency (complete_ns - submit_ns) sum, min and max.

Imports nothing from streams: one event at a time, Python ints, no shortcuts."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

NS_PER_S = 1_000_000_000


def anchor_windows(events: Iterable[Any]) -> dict[tuple[str, int], dict[str, int]]:
    """{(volume id, window start in ms): row} of events with volume_id, bytes, submit_ns
    and complete_ns attributes."""
    out: dict[tuple[str, int], dict[str, int]] = {}
    for e in events:
        key = (e.volume_id, (e.complete_ns // NS_PER_S) * 1000)
        latency = e.complete_ns - e.submit_ns
        row = out.get(key)
        if row is None:
            out[key] = {"count": 1, "bytes": e.bytes, "latency_sum_ns": latency,
                        "latency_min_ns": latency, "latency_max_ns": latency}
            continue
        row["count"] += 1
        row["bytes"] += e.bytes
        row["latency_sum_ns"] += latency
        row["latency_min_ns"] = min(row["latency_min_ns"], latency)
        row["latency_max_ns"] = max(row["latency_max_ns"], latency)
    return out
