"""Malformed input on the real broker: every bad record or event reaches the dead-letter
topic with a readable reason, the worker keeps running, and the good events around
the bad ones are counted exactly."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams.codec import default_schemas
from streams.config import REPO_ROOT, Settings
from tests.hostile import BAD_EVENTS, GOOD, batch, mixed_batch, whole_record_cases
from tests.oracle import counters_oracle

from .harness import (
    WorkerProcess,
    ioacct,
    read_topic,
    running_worker,
    settings_env,
    wait_committed,
    wait_until,
)

pytestmark = pytest.mark.integration

SCHEMAS = default_schemas()


@pytest.fixture(scope="module")
def worker(pipeline_settings: Settings, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[WorkerProcess]:
    with running_worker(pipeline_settings, Path(tmp_path_factory.mktemp("w"))) as started:
        yield started


async def _send(settings: Settings, values: list[bytes | None]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(settings.raw_topic, value=value, key=b"vol-mixed")
    finally:
        await producer.stop()


def test_hostile_records_reach_the_dlq_with_reasons(
    pipeline_settings: Settings, worker: WorkerProcess,
) -> None:
    mixed, good_events, expected_events = mixed_batch(seq=5)
    before = SCHEMAS.encode("IoBatch", batch("vol-mixed", "tenant-a", 0, [GOOD]))
    after = SCHEMAS.encode("IoBatch", batch("vol-mixed", "tenant-a", 10, [GOOD]))
    cases = whole_record_cases()
    values = [before, SCHEMAS.encode("IoBatch", mixed), *[v for v, _ in cases], after]
    asyncio.run(_send(pipeline_settings, values))
    wait_committed(pipeline_settings, [worker], 120)

    dead = [SCHEMAS.decode(m.value, expect="DeadLetter")[1]
            for m in asyncio.run(read_topic(pipeline_settings, pipeline_settings.dlq_topic))]
    by_index = {d["event_index"]: d for d in dead if d["event_index"] is not None}
    for index, reason in expected_events.items():
        assert reason in by_index[index]["reason"], by_index[index]
        assert orjson.loads(by_index[index]["event_json"])["volume_id"] == "vol-mixed"
    whole = [d for d in dead if d["event_index"] is None]
    assert len(whole) == len(cases)
    for (value, reason), record in zip(cases, sorted(whole, key=lambda d: d["source_offset"]),
                                       strict=True):
        assert reason in record["reason"], (reason, record["reason"])
        assert record["payload"] == (value or b"")  # the whole record is kept: nothing lost

    assert worker.alive()
    wanted = [{**GOOD, "volume_id": "vol-mixed", "tenant_id": "tenant-a"}] * 2 + good_events
    status, counters = worker.get("/volumes/vol-mixed/counters")
    assert status == 200
    assert counters == {**counters, **counters_oracle(wanted)["vol-mixed"]}
    assert counters["rejected"] == len(BAD_EVENTS) + 1  # + the other tenant's record


def test_unparsable_jsonl_lines_reach_the_dlq(
    pipeline_settings: Settings, worker: WorkerProcess, tmp_path: Path,
) -> None:
    good = {**GOOD, "volume_id": "vol-jsonl", "tenant_id": "tenant-j"}
    lines = [orjson.dumps(good), b"{not json", orjson.dumps({**good, "op": "trim"}),
             orjson.dumps({k: v for k, v in good.items() if k != "bytes"}),
             orjson.dumps({**good, "bytes": "4096"}), orjson.dumps(good)]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = ioacct(pipeline_settings, "produce", "--jsonl", str(path))
    assert result.returncode == 0, result.stderr
    assert "sent 2 events" in result.stdout
    assert "4 line(s) sent to the dead-letter topic" in result.stdout

    def jsonl_dead() -> list[dict[str, Any]]:
        messages = asyncio.run(read_topic(pipeline_settings, pipeline_settings.dlq_topic))
        records = [SCHEMAS.decode(m.value, expect="DeadLetter")[1] for m in messages]
        return [r for r in records if r["source_topic"] == f"jsonl:{path}"]

    dead = wait_until(lambda: len(jsonl_dead()) == 4 and jsonl_dead(), 60, "4 dead letters")
    reasons = {d["source_offset"]: d["reason"] for d in dead}
    assert "line 2" in reasons[2]
    assert "op 'trim' is not one of" in reasons[3]
    assert "missing field(s): bytes" in reasons[4]
    assert "bytes must be an integer" in reasons[5]
    assert {d["payload"] for d in dead} == {lines[1], lines[2], lines[3], lines[4]}
    # The two good lines may travel in one record or two (the SDK flushes by age too).
    wait_until(lambda: worker.get("/volumes/vol-jsonl/counters")[1].get("read_ios") == 2,
               60, "both good lines of vol-jsonl counted", [worker])


def test_a_live_pipe_is_sent_while_it_stays_open(
    pipeline_settings: Settings, worker: WorkerProcess,
) -> None:
    """`source | ioacct produce --jsonl -`: events are counted while the pipe is open
    (the read used to block the SDK's sender until end of file), and a line split
    across two writes is one event."""
    good = {**GOOD, "volume_id": "vol-pipe", "tenant_id": "tenant-p"}
    producer = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "produce", "--jsonl", "-"],
        env=settings_env(pipeline_settings), cwd=REPO_ROOT, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert producer.stdin is not None
    try:
        first = orjson.dumps(good) + b"\n" + orjson.dumps({**good, "offset": 8192})
        producer.stdin.write(first[:-7])  # the second line arrives in two writes
        producer.stdin.flush()
        producer.stdin.write(first[-7:] + b"\n{broken\n")
        producer.stdin.flush()
        wait_until(lambda: worker.get("/volumes/vol-pipe/counters")[1].get("read_ios") == 2,
                   60, "the pipe's events counted while it is open", [worker])
        assert producer.poll() is None, "the producer must still be reading the pipe"
        out, err = producer.communicate(orjson.dumps({**good, "offset": 0}) + b"\n",
                                        timeout=60)  # writes, then closes the pipe
    finally:
        if producer.poll() is None:
            producer.kill()
    assert producer.returncode == 0, err
    assert "sent 3 events" in out.decode() and "1 line(s) sent to the dead-letter" in out.decode()
    wait_until(lambda: worker.get("/volumes/vol-pipe/counters")[1].get("read_ios") == 3,
               60, "the last line counted", [worker])


def test_tail_decodes_the_dead_letter_topic(
    pipeline_settings: Settings, worker: WorkerProcess,
) -> None:
    result = ioacct(pipeline_settings, "tail", "io.dlq", "--from-beginning", "--idle-exit", "3")
    assert result.returncode == 0, result.stderr
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert lines and all(line["schema"] == "DeadLetter" for line in lines)
    assert all(line["value"]["reason"] for line in lines)
