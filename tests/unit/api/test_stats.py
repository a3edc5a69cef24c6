"""The stats view's query and answer (streams/api/stats.py): bounded, 400 for anything
out of range, and built without holding the event loop."""

from __future__ import annotations

import asyncio
import random

import orjson
import pytest

from streams.api.stats import (
    COPY_CHUNK,
    MAX_TIME_NS,
    BadQuery,
    copy_acc,
    stats_body,
    stats_query,
)
from streams.core.events import STATUS_OK
from streams.core.windows.acc import WindowAcc, window_stats
from streams.core.windows.book import WindowEntry
from tests.unit.core.windows import scalar_twin

NS = 1_000_000_000
NOW = 1_795_000_000 * NS

BAD_QUERIES = [
    {"window": "2s"},
    {"window": "-1s"},
    {"window": ""},
    {"from": "99999999999999999999999"},
    {"to": "99999999999999999999999"},
    {"from": "-5"},
    {"to": "-1", "from": "-100"},
    {"from": "9" * 5000},  # more digits than int() reads
    {"from": "now-99999999999999999999d"},
    {"from": "now+99999999999999999999d"},
    {"to": "now-99999999999999999999h"},
    {"from": "9999-12-31T23:59:59"},  # a date whose ns overflow an Avro long
    {"from": "0001-01-01"},
    {"from": "yesterday"},
    {"from": "now-15q"},
    {"from": "now-"},
    {"from": str(NOW), "to": str(NOW - NS)},  # from after to
    {"window": "1s", "from": "0"},  # 55 years of 1 s windows
    {"window": "1s", "from": "now-2h"},  # 7,200 > 3,600
    {"window": "1m", "from": "now-3d"},
    {"window": "1h", "from": "0", "to": str(MAX_TIME_NS)},
]


@pytest.mark.parametrize("query", BAD_QUERIES, ids=lambda q: repr(q)[:60])
def test_bad_queries_are_refused_with_a_reason(query: dict[str, str]) -> None:
    with pytest.raises(BadQuery) as refused:
        stats_query(query, NOW, 3600)
    assert str(refused.value)


def test_the_window_cap_is_exact_and_its_message_says_what_to_do() -> None:
    hour = {"window": "1s", "from": str(NOW - 3600 * NS), "to": str(NOW)}
    assert stats_query(hour, NOW, 3600) == ("1s", NOW - 3600 * NS, NOW)
    with pytest.raises(BadQuery, match=r"3601 windows.*at most 3600.*narrow from/to.*1m"):
        stats_query({**hour, "from": str(NOW - 3600 * NS - 1)}, NOW, 3600)
    assert stats_query(hour, NOW, 3600 * 24)[0] == "1s"  # the cap is a setting


def test_the_default_spans_fit_the_default_cap() -> None:
    for window in ("1s", "1m", "1h"):
        name, from_ns, to_ns = stats_query({"window": window}, NOW, 3600)
        assert (name, to_ns) == (window, NOW) and from_ns < to_ns


def _entries(count: int, seed: int = 1) -> list[WindowEntry]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        acc = WindowAcc(NOW + i * NS, NS)
        for _ in range(rng.randrange(4)):
            scalar_twin.add_completion(acc, rng.randrange(3), STATUS_OK, 4096,
                                       rng.randrange(1, 10**7))
        acc.busy_ns = rng.randrange(NS)
        out.append(WindowEntry("t1", acc, revision=rng.randrange(1, 4), emitted=rng.random() < .5))
    return out


def test_the_answer_is_window_stats_of_each_window() -> None:
    """Against the unbounded synchronous computation the view did before."""
    entries = _entries(300)
    body = orjson.loads(asyncio.run(stats_body("v1", {"volume_id": "v1"}, entries)))
    assert body["volume_id"] == "v1"
    assert body["windows"] == [
        {**window_stats("v1", e.tenant_id, e.acc), "revision": e.revision - 1 if e.emitted
         else None} for e in entries]


def test_each_window_carries_its_exponential_histograms_in_the_agreed_shape() -> None:
    """``"{op}_latency_exp": {"offset": int, "counts": [int, ...], "zero": int}`` (what the
    dashboard's heatmap reads), the counts adding up to the op's timed events."""
    acc = WindowAcc(NOW, NS)
    for latency in (0, 1, 2, 1000, 1001, 10**6):
        scalar_twin.add_completion(acc, 0, STATUS_OK, 4096, latency)
    body = orjson.loads(asyncio.run(stats_body("v1", {}, [WindowEntry("t1", acc)])))
    [window] = body["windows"]
    # 1 in bucket -1, 2 in 31 (2**31 < 2**32 <= 2**32), 1000 and 1001 in 318, 1e6 in 637
    assert window["read_latency_exp"] == {
        "offset": -1, "counts": [1] + [0] * 31 + [1] + [0] * 286 + [2] + [0] * 318 + [1],
        "zero": 1}
    assert 2**318 < 1000**32 < 1001**32 <= 2**319 and 2**637 < (10**6) ** 32 <= 2**638
    for op in ("write", "flush", "discard"):
        assert window[f"{op}_latency_exp"] == {"offset": 0, "counts": [], "zero": 0}


def test_a_copied_window_does_not_change_with_the_original() -> None:
    entry = _entries(1, seed=3)[0]
    copy = copy_acc(entry.acc)
    before = window_stats("v", "t", copy)
    scalar_twin.add_completion(entry.acc, 0, STATUS_OK, 1 << 20, 5)
    entry.acc.busy_ns += 7
    assert window_stats("v", "t", copy) == before != window_stats("v", "t", entry.acc)


def test_the_loop_keeps_running_while_a_large_answer_is_built() -> None:
    """A heartbeat task on the same loop advances while the answer is built (the old view
    built it in one go: no other task ran until it was done). An 'agent' counting into
    windows mid-build: a window already copied answers as it was when copied, one not yet
    copied with the new count (each window is one consistent snapshot)."""
    entries = _entries(20 * COPY_CHUNK)
    before = [window_stats("v", "t1", copy_acc(e.acc))["read_ios"] for e in entries]

    async def scenario() -> tuple[int, bytes]:
        done = asyncio.Event()
        beats_during = 0

        async def heartbeat() -> None:
            nonlocal beats_during
            while not done.is_set():
                beats_during += 1
                if beats_during == 2:  # the first chunk is copied, the rest not yet
                    for entry in (entries[0], entries[-1]):
                        scalar_twin.add_completion(entry.acc, 0, STATUS_OK, 1, 1)
                await asyncio.sleep(0)

        beat = asyncio.create_task(heartbeat())
        await asyncio.sleep(0)  # the heartbeat is running before the build starts
        body = await stats_body("v", {}, entries)
        done.set()
        await beat
        return beats_during, body

    beats, body = asyncio.run(scenario())
    assert beats >= len(entries) // COPY_CHUNK  # at least one beat per copied chunk
    windows = orjson.loads(body)["windows"]
    assert windows[0]["read_ios"] == before[0]
    assert windows[-1]["read_ios"] == before[-1] + 1
