"""End to end on the real broker: the simulator's events, two hours ago, through one worker
to ioacct.stats.1s/1m/1h; the latest revision of every window equals the oracle."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.config import Settings
from streams.core.codec import HEADER_LEN, default_schemas
from streams.core.events import STATUSES
from streams.core.keys import SOURCE_OFFSET_HEADER, TICK_KEY
from streams.core.monitoring import monitoring_key, monitoring_record
from streams.core.raw import raw_batch
from streams.core.times import NS_PER_S
from streams.core.windows.acc import WINDOW_LENGTHS_NS
from tests.oracles.windows import (
    latest_close_offset,
    window_start,
    windows_oracle,
    windows_overlapped,
)

from .harness import (
    WorkerProcess,
    ioacct,
    operator_token,
    read_topic,
    redeliver,
    running_worker,
    volume_parts,
    wait_until,
)

pytestmark = pytest.mark.integration

N_EVENTS = 30_000
LOG_APPEND_TIME = 1  # aiokafka's timestamp_type of a broker-stamped record


@pytest.fixture(scope="module")
def settings(pipeline_settings: Settings) -> Settings:
    # Events from two hours ago still revise windows: a horizon of a day.
    return pipeline_settings.with_overrides(revision_horizon_s=24 * 3600)


@pytest.fixture(scope="module")
def worker(settings: Settings, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[WorkerProcess]:
    with running_worker(settings, Path(tmp_path_factory.mktemp("w"))) as started:
        yield started


@pytest.fixture(scope="module")
def sent_events(settings: Settings, worker: WorkerProcess,
                tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    jsonl = Path(tmp_path_factory.mktemp("sim")) / "events.jsonl"
    two_hours_ago = time.time_ns() - 2 * 3600 * NS_PER_S
    result = ioacct(settings, "produce", "--sim", "--events", str(N_EVENTS), "--volumes", "60",
                    "--seed", "11", "--start-ns", str(two_hours_ago),
                    "--write-jsonl", str(jsonl))
    assert result.returncode == 0, result.stderr
    return [orjson.loads(line) for line in jsonl.read_bytes().splitlines()]


def latest_windows(settings: Settings, length_ns: int) -> dict[tuple[str, int], dict[str, Any]]:
    """Latest revision per window key, as a compacted-topic consumer sees it."""
    schemas = default_schemas()
    topic = settings.stats_topic(length_ns)
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    for message in asyncio.run(read_topic(settings, topic, idle_s=1.0)):
        if message.key.startswith(b"~"):
            # A watermark marker (schemas/watermark.avsc), for the topic's readers.
            assert schemas.decode(message.value, expect="Watermark")[1]["partition"] == \
                message.partition
            continue
        record = schemas.decode(message.value, expect="WindowStats")[1]
        key = (record["volume_id"], record["window_start_ns"])
        assert message.key == b"%s/%d" % (key[0].encode(), key[1])
        previous = latest.get(key)
        assert previous is None or record["revision"] > previous["revision"]
        latest[key] = record
    return latest


def without_revision(windows: dict[tuple[str, int], dict[str, Any]]) -> dict[Any, Any]:
    return {k: {f: v for f, v in w.items() if f != "revision"} for k, w in windows.items()}


@pytest.mark.parametrize("length_ns", WINDOW_LENGTHS_NS, ids=["1s", "1m", "1h"])
def test_every_window_equals_the_oracle(
    settings: Settings, worker: WorkerProcess, sent_events: list[dict[str, Any]], length_ns: int,
) -> None:
    expected = windows_oracle(sent_events, length_ns)
    got: dict[Any, Any] = {}

    def converged() -> bool:
        nonlocal got
        got = without_revision(latest_windows(settings, length_ns))
        return got == expected

    try:
        wait_until(converged, 90, f"the {length_ns // NS_PER_S} s windows", [worker])
    except AssertionError:
        missing = sorted(set(expected) - set(got))[:5]
        wrong = [k for k in expected if k in got and got[k] != expected[k]][:3]
        diffs = [(k, {f: (got[k][f], v) for f, v in expected[k].items() if got[k][f] != v})
                 for k in wrong]
        raise AssertionError(f"{len(expected)} expected, {len(got)} published; "
                             f"missing {missing}; differing {diffs}") from None


def test_query_stats_answers_from_the_stored_windows(
    settings: Settings, worker: WorkerProcess, sent_events: list[dict[str, Any]],
) -> None:
    volume_id = sent_events[0]["volume_id"]
    first_ns = min(e["complete_ns"] for e in sent_events) - 3600 * NS_PER_S
    expected = {k: v for k, v in windows_oracle(sent_events, 60 * NS_PER_S).items()
                if k[0] == volume_id}

    def answer() -> dict[str, Any]:
        result = ioacct(settings, "query", "stats", volume_id, "--window", "1m",
                        "--from", str(first_ns), "--to", "now", "--url", worker.url,
                        "--token", operator_token(settings))
        assert result.returncode == 0, result.stderr
        return dict(orjson.loads(result.stdout))

    wait_until(lambda: len(answer()["windows"]) == len(expected), 60, "stored 1 m windows")
    got = {(w["volume_id"], w["window_start_ns"]): {k: v for k, v in w.items() if k != "revision"}
           for w in answer()["windows"]}
    assert got == expected
    status, body = worker.get(f"/volumes/{volume_id}/stats?window=5m")
    assert status == 400 and "window must be" in body["error"]
    status, body = worker.get("/volumes/vol-unknown/stats?window=1s")
    assert status == 404


def test_delivering_every_record_again_changes_no_window(
    settings: Settings, worker: WorkerProcess, sent_events: list[dict[str, Any]],
) -> None:
    before: dict[int, dict[tuple[str, int], dict[str, Any]]] = {}

    def settled() -> bool:
        before.update({n: latest_windows(settings, n) for n in WINDOW_LENGTHS_NS})
        return all(without_revision(before[n]) == windows_oracle(sent_events, n)
                   for n in WINDOW_LENGTHS_NS)

    wait_until(settled, 90, "all windows published", [worker])
    raw = [m for m in asyncio.run(read_topic(settings, settings.raw_topic)) if m.key != TICK_KEY]
    skipped = worker.get("/status")[1]["replays_skipped"]
    asyncio.run(redeliver(settings, raw))
    parts = volume_parts(raw)  # replays_skipped counts the volume parts of records
    wait_until(lambda: worker.get("/status")[1]["replays_skipped"] - skipped == parts,
               90, "the worker to skip every replayed record", [worker])
    for n in WINDOW_LENGTHS_NS:  # replays were skipped before windowing: nothing new was published
        assert latest_windows(settings, n) == before[n]


def test_monitoring_topic_follows_the_1m_windows(
    settings: Settings, worker: WorkerProcess, sent_events: list[dict[str, Any]],
) -> None:
    """ioacct.monitoring.1m: one record per volume and minute, latest revision = the oracle's
    1 m window in CloudWatch's vocabulary."""
    schemas = default_schemas()
    expected = {k: {f: v for f, v in monitoring_record({**w, "revision": 0}).items()
                    if f != "revision"}
                for k, w in windows_oracle(sent_events, 60 * NS_PER_S).items()}
    got: dict[tuple[str, int], dict[str, Any]] = {}

    def converged() -> bool:
        got.clear()
        revisions: dict[tuple[str, int], int] = {}
        for message in asyncio.run(read_topic(settings, settings.monitoring_topic, idle_s=1.0)):
            record = schemas.decode(message.value, expect="VolumeMetrics1m")[1]
            key = (record["volume_id"], record["timestamp_ns"])
            assert message.key == monitoring_key(record)
            if record["revision"] >= revisions.get(key, -1):
                revisions[key] = record["revision"]
                got[key] = {f: v for f, v in record.items() if f != "revision"}
        return got == expected

    wait_until(converged, 90, "the monitoring records", [worker])


def first_emissions(settings: Settings, length_ns: int
                    ) -> dict[tuple[str, int], tuple[int, int]]:
    """Per window of ``length_ns``: (partition, raw offset that made its revision-0 record),
    the first copy. Every window record names the raw record whose processing made it (the
    accounting agent makes all three lengths)."""
    schemas = default_schemas()
    first: dict[tuple[str, int], tuple[int, int]] = {}
    for message in asyncio.run(read_topic(settings, settings.stats_topic(length_ns), idle_s=1.0)):
        if (message.key or b"").startswith(b"~"):  # watermark markers: not windows
            continue
        record = schemas.decode(message.value, expect="WindowStats")[1]
        if record["revision"] == 0:
            source = int(dict(message.headers)[SOURCE_OFFSET_HEADER])
            first.setdefault((record["volume_id"], record["window_start_ns"]),
                             (message.partition, source))
    return first


def raw_partitions(settings: Settings, length_ns: int) -> tuple[
        dict[int, list[tuple[int, int, bool]]], dict[tuple[str, int], tuple[int, int]],
        dict[int, int]]:
    """The raw topic as the worker's windows see it: per partition (offset, broker time in ns,
    data or Tick) in offset order; per window of ``length_ns``, (partition, offset) of the first
    record with one of its events (as the oracle puts events in windows); per partition, the
    offset of its last data record that was not a redelivery (where the simulator stopped)."""
    schemas = default_schemas()
    tick = schemas.headers["Tick"]
    records: dict[int, list[tuple[int, int, bool]]] = defaultdict(list)
    created: dict[tuple[str, int], tuple[int, int]] = {}
    last_fresh: dict[int, int] = {}
    seen: set[tuple[str, str, int]] = set()
    messages = asyncio.run(read_topic(settings, settings.raw_topic))
    for m in sorted(messages, key=lambda m: (m.partition, m.offset)):
        assert m.timestamp_type == LOG_APPEND_TIME, "the worker's wall clock is the broker's"
        is_data = m.value[:HEADER_LEN] != tick
        records[m.partition].append((m.offset, m.timestamp * 1_000_000, is_data))
        if not is_data:
            continue
        batch = raw_batch(*schemas.decode(m.value))  # the SDK's layout 2, or layout 1
        if (batch.producer_id, batch.seq) in seen:
            continue  # redelivered (test_delivering_every_record_again_changes_no_window)
        seen.add((batch.producer_id, batch.seq))
        last_fresh[m.partition] = m.offset
        cols = batch.columns
        for v, status, submit, complete in zip(
                cols.volume.tolist(), cols.status.tolist(), cols.submit_ns.tolist(),
                cols.complete_ns.tolist(), strict=True):
            starts = [window_start(complete, length_ns)]
            if STATUSES[status] != "invalid":  # as the oracle: invalid ones have no interval
                starts += windows_overlapped(submit, complete, length_ns)
            for start in starts:
                created.setdefault((cols.volumes[v], start), (m.partition, m.offset))
    return records, created, last_fresh


@pytest.mark.parametrize("length_ns", WINDOW_LENGTHS_NS, ids=["1s", "1m", "1h"])
def test_no_window_stays_open_past_grace_and_idle_timeout(
    settings: Settings, worker: WorkerProcess, sent_events: list[dict[str, Any]], length_ns: int,
) -> None:
    """SEMANTICS.md section 4, counted in records instead of seconds (issue 3): the raw record
    that closed each window (its revision-0 record names it) comes no later than the first
    record whose broker time is grace + idle timeout past both the window's end and its
    partition's latest data record. The worker's wall clock is those broker times, so a
    busy machine delays both sides alike, and a window closed late fails wherever it ran."""
    expected = windows_oracle(sent_events, length_ns)
    emitted: dict[tuple[str, int], tuple[int, int]] = {}

    def all_emitted() -> bool:
        emitted.clear()
        emitted.update(first_emissions(settings, length_ns))
        return set(expected) <= set(emitted)

    wait_until(all_emitted, 90, "revision 0 of every window", [worker])
    assert set(emitted) == set(expected)
    # Read after the windows: every record that closed one is in it.
    records, created, last_fresh = raw_partitions(settings, length_ns)
    grace_ns, idle_ns = int(settings.grace_s * 1e9), int(settings.idle_timeout_s * 1e9)
    at: dict[int, dict[int, tuple[int, bool, int | None]]] = {}  # offset: wall, data?, A(o)
    for partition, part in records.items():
        last_data_ns: int | None = None
        at[partition] = {}
        for offset, wall_ns, is_data in part:
            if is_data:
                last_data_ns = wall_ns if last_data_ns is None else max(last_data_ns, wall_ns)
            at[partition][offset] = (wall_ns, is_data, last_data_ns)
    late: list[tuple[tuple[str, int], int, int, int]] = []
    no_deadline = by_tick = by_tick_after_sim = 0
    open_max_ns = past_later_max_ns = 0
    for key in sorted(expected):
        partition, emit = emitted[key]
        assert created[key][0] == partition, f"{key}: emitted in another partition"
        create, end = created[key][1], key[1] + length_ns
        assert emit in at[partition], f"{key}: closed by {emit}, not in the raw topic"
        assert create <= emit, f"{key}: closed by {emit}, before its first event at {create}"
        bound = latest_close_offset(records[partition], create, end, grace_ns, idle_ns)
        if bound is None:
            # No record reached the deadline, the closing one included: closed in time. (The
            # worker stops ticking once nothing is open; a window still open would keep the
            # Ticks coming, and one of them would pass the deadline.)
            no_deadline += 1
        elif emit > bound:
            late.append((key, create, bound, emit))
        wall_ns, is_data, last_data_ns = at[partition][emit]
        open_max_ns = max(open_max_ns, wall_ns - end)
        if not is_data:  # closed by a Tick: the idle rule
            by_tick += 1
            by_tick_after_sim += emit > last_fresh[partition]
            assert last_data_ns is not None
            past_later_max_ns = max(past_later_max_ns, wall_ns - max(end, last_data_ns))
    print(f"\n{len(expected)} windows of {length_ns // NS_PER_S} s in {len(records)} partitions, "
          f"{sum(map(len, records.values()))} raw records; "
          f"{len(expected) - no_deadline} with a record past their deadline, "
          f"{no_deadline} closed before any record reached it; "
          f"{len(expected) - by_tick} closed by events, {by_tick} by the idle rule "
          f"({by_tick_after_sim} after the simulator's last record); longest open "
          f"(broker time of the closing record - window end): {open_max_ns / 1e9:.3f} s; "
          f"idle-rule closes at most {past_later_max_ns / 1e9:.3f} s of broker time past the "
          f"later of end and last data (grace + idle timeout: {(grace_ns + idle_ns) / 1e9:.3f} s)")
    assert not late, (f"{len(late)} window(s) closed past grace + idle timeout, as "
                      f"(window, first event offset, deadline offset, closed at): {late[:5]}")
    assert len(expected) >= {NS_PER_S: 100, 60 * NS_PER_S: 20, 3600 * NS_PER_S: 10}[length_ns], \
        "too few windows to say anything"
    # Where closing late can happen: windows open while their partition is quiet.
    assert by_tick_after_sim > 0, "no window closed by the idle rule: the deadline was not near"
