"""GET /volumes/{id}/stats: the query checked and bounded, the answer built off the loop.

The windows are read from the worker's stores on the event loop (they are not thread-safe)
and copied in chunks, yielding between them; the statistics and the JSON are then built
in a thread, so that a large answer never holds the loop the agents count on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from streams.core.times import NS_PER_S, parse_time_ns
from streams.core.windows.acc import (
    NO_BUSY,
    WINDOW_NAMES,
    OpAcc,
    WindowAcc,
    window_stats,
)

WINDOWS_NS = {name: length for length, name in WINDOW_NAMES.items()}
DEFAULT_SPAN_NS = {"1s": 15 * 60 * NS_PER_S, "1m": 24 * 3600 * NS_PER_S,
                   "1h": 30 * 24 * 3600 * NS_PER_S}
MAX_TIME_NS = (1 << 63) - 1  # what Avro longs and orjson ints hold: beyond it, a 400
COPY_CHUNK = 256  # windows copied between two yields to the loop


class BadQuery(ValueError):
    """A query the stats view refuses with 400 (the message says what to change)."""


def stats_query(query: Mapping[str, str], now_ns: int, max_windows: int
                ) -> tuple[str, int, int]:
    """(window name, from_ns, to_ns) of a query; BadQuery for anything out of range.

    At most ``max_windows`` windows fit between from and to: a longer span is refused
    rather than cut, so that an answer is never silently partial.
    """
    window = query.get("window", "1m")
    if window not in WINDOWS_NS:
        raise BadQuery("window must be 1s, 1m or 1h")
    try:
        to_ns = parse_time_ns(query.get("to", "now"), now_ns)
        from_ns = parse_time_ns(query.get("from", str(to_ns - DEFAULT_SPAN_NS[window])), now_ns)
    except (ValueError, OverflowError) as exc:
        raise BadQuery(str(exc)) from None
    for name, value in (("from", from_ns), ("to", to_ns)):
        if not 0 <= value <= MAX_TIME_NS:
            raise BadQuery(f"{name} is out of range: epoch ns from 0 to {MAX_TIME_NS}")
    if from_ns > to_ns:
        raise BadQuery("from must not be after to")
    length_ns = WINDOWS_NS[window]
    count = -(-(to_ns - from_ns) // length_ns)
    if count > max_windows:
        raise BadQuery(
            f"from..to spans {count} windows of {window}; an answer holds at most "
            f"{max_windows}: narrow from/to or ask for a longer window (1m, 1h)")
    return window, from_ns, to_ns


def copy_acc(acc: WindowAcc) -> WindowAcc:
    """What window_stats reads of a window, copied: the original keeps changing."""
    ops = [OpAcc(list(o.counts), o.min_ns, o.max_ns, list(o.histogram), o.inflight_ns,
                 None if o.exp is None else o.exp.copy())
           for o in acc.ops]
    return WindowAcc(acc.window_start_ns, acc.window_len_ns, ops, NO_BUSY, acc.busy_ns)


async def stats_body(volume_id: str, head: dict[str, Any], entries: Sequence[Any]) -> bytes:
    """The JSON answer: ``head`` plus the windows of ``entries`` (WindowEntry)."""
    frozen = []
    for i, entry in enumerate(entries):
        if i and i % COPY_CHUNK == 0:
            await asyncio.sleep(0)  # let the agents run between chunks
        revision = entry.revision - 1 if entry.emitted else None
        frozen.append((entry.tenant_id, revision, copy_acc(entry.acc)))
    return await asyncio.to_thread(_encode, volume_id, head, frozen)


def _encode(volume_id: str, head: dict[str, Any],
            frozen: list[tuple[str, int | None, WindowAcc]]) -> bytes:
    windows = [{**window_stats(volume_id, tenant_id, acc), "revision": revision}
               for tenant_id, revision, acc in frozen]
    return orjson.dumps({**head, "windows": windows})
