"""End to end on the real broker: the simulator's events, two hours ago, through one worker
to ioacct.stats.1s/1m/1h; the latest revision of every window equals the oracle."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.app import TICK_KEY
from streams.codec import default_schemas
from streams.config import Settings
from streams.monitoring import monitoring_key, monitoring_record
from streams.windows import NS_PER_S
from tests.window_oracle import windows_oracle

from .harness import (
    WorkerProcess,
    ioacct,
    operator_token,
    read_topic,
    redeliver,
    running_worker,
    wait_until,
)

pytestmark = pytest.mark.integration

N_EVENTS = 30_000
LENGTHS_NS = (NS_PER_S, 60 * NS_PER_S, 3600 * NS_PER_S)


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
            # A watermark marker (schemas/watermark.avsc): a rollup agent reads it.
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


@pytest.mark.parametrize("length_ns", LENGTHS_NS, ids=["1s", "1m", "1h"])
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
        before.update({n: latest_windows(settings, n) for n in LENGTHS_NS})
        return all(without_revision(before[n]) == windows_oracle(sent_events, n)
                   for n in LENGTHS_NS)

    wait_until(settled, 90, "all windows published", [worker])
    raw = [m for m in asyncio.run(read_topic(settings, settings.raw_topic)) if m.key != TICK_KEY]
    skipped = worker.get("/status")[1]["replays_skipped"]
    asyncio.run(redeliver(settings, raw))
    wait_until(lambda: worker.get("/status")[1]["replays_skipped"] - skipped == len(raw),
               90, "the worker to skip every replayed record", [worker])
    for n in LENGTHS_NS:  # replays were skipped before windowing: nothing new was published
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
