"""Malformed input on the real broker: every bad record or event reaches the dead-letter
topic with a readable reason, the worker keeps running, and the good events around
the bad ones are counted exactly."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams.config import REPO_ROOT, Settings
from streams.core.codec import default_schemas
from streams.core.ingest import DEAD_LETTER_MAX_BYTES, PAYLOAD_PREFIX_BYTES
from streams.core.partitioning import default_partition
from streams.core.raw import layout2_record
from streams.kafka.security import client_kwargs
from tests.hostile import GOOD, HOSTILE_PRODUCER, UNREGISTERED, HostileRound, hostile_round
from tests.oracles.counters import counters_oracle

from .harness import (
    WorkerProcess,
    ioacct,
    read_topic,
    register,
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


async def _send(settings: Settings, round_: HostileRound) -> list[tuple[int, int]]:
    """The round's values, each with its key (and partition, if it has one); their
    (partition, offset)."""
    producer = AIOKafkaProducer(**client_kwargs(settings))
    await producer.start()
    try:
        out = []
        for value, key, partition in zip(round_.values, round_.keys, round_.partitions,
                                         strict=True):
            meta = await producer.send_and_wait(settings.raw_topic, value=value, key=key,
                                                partition=partition)
            out.append((meta.partition, meta.offset))
        return out
    finally:
        await producer.stop()


def test_hostile_records_reach_the_dlq_with_reasons(
    pipeline_settings: Settings, worker: WorkerProcess,
) -> None:
    """Each hostile record makes exactly one dead letter with its reason (a record's bad
    events together), the worker lives on and commits past them all, every good event
    around them counts once, and nothing else changed: no volume made, no mark moved."""
    round_ = hostile_round(seed=5, producer_id=HOSTILE_PRODUCER,
                           partitions=pipeline_settings.partitions)
    register(pipeline_settings, round_.registrations.items())
    positions = asyncio.run(_send(pipeline_settings, round_))
    wait_committed(pipeline_settings, [worker], 120)

    sent = {p: [o for q, o in positions if q == p] for p, _ in positions}
    dead: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for m in asyncio.run(read_topic(pipeline_settings, pipeline_settings.dlq_topic)):
        record = SCHEMAS.decode(m.value, expect="DeadLetter")[1]
        where = (record["source_partition"], record["source_offset"])
        if (record["source_topic"] == pipeline_settings.raw_topic and where[0] in sent
                and min(sent[where[0]]) <= where[1] <= max(sent[where[0]])):
            dead.setdefault(where, []).append(record)
        assert len(m.value) <= DEAD_LETTER_MAX_BYTES  # even for the 1 MB records
    for index, reason in round_.whole_reasons.items():
        [record] = dead.pop(positions[index])  # exactly one
        value = round_.values[index] or b""
        assert reason in record["reason"], (reason, record["reason"])
        assert record["event_indexes"] == [] and record["event_index"] is None
        assert record["payload"] == value[:PAYLOAD_PREFIX_BYTES]  # nothing lost: identified
        assert record["payload_length"] == len(value)
        assert record["payload_sha256"] == hashlib.sha256(value).hexdigest()
    for index, reasons in round_.event_reasons.items():
        [record] = dead.pop(positions[index])  # one for all the record's bad events
        assert record["events"] == round_.bad_events[index]
        assert record["event_indexes"] == sorted(reasons)
        for event_index, got in zip(record["event_indexes"], record["event_reasons"],
                                    strict=True):
            assert reasons[event_index] in got, (reasons[event_index], got)
        assert orjson.loads(record["event_json"])["volume_id"] == "vol-mixed"
    assert dead == {}  # no dead letter for any good record

    assert worker.alive()
    expected = counters_oracle(round_.good)
    assert set(expected) == {"vol-mixed", "vol-squat"}
    for volume_id, want in expected.items():
        status, counters = worker.get(f"/volumes/{volume_id}/counters")
        assert status == 200
        assert counters == {**counters, **want}  # every good event counted once
    status, counters = worker.get("/volumes/vol-mixed/counters")
    assert counters["rejected"] == sum(round_.bad_events.values())  # whole records: none
    assert worker.get("/volumes/vol-squat/counters")[1]["tenant_id"] == "tenant-t"
    for never in ("vol-x", "vol-elsewhere", UNREGISTERED):  # rejected records made no volume
        assert worker.get(f"/volumes/{never}/counters")[0] == 404


def _layout2_volumes(partitions: int) -> tuple[list[str], str, int]:
    """Two volumes that Kafka's default partitioner places in one partition, one that it
    places elsewhere; and that partition."""
    names = [f"vol-l2-{i}" for i in range(200)]
    home = default_partition(names[0].encode(), partitions)
    here = [n for n in names if default_partition(n.encode(), partitions) == home]
    away = next(n for n in names if default_partition(n.encode(), partitions) != home)
    return here[:2], away, home


def test_a_layout2_record_counts_its_volumes_and_dead_letters_the_misplaced_one(
    pipeline_settings: Settings, worker: WorkerProcess,
) -> None:
    """One IoBatch2 record of three volumes, keyed and written as the SDK does (its first
    volume's id, that volume's partition), one volume placed elsewhere by Kafka: the two
    are counted, the third's events make the record's one dead letter, naming it."""
    settings = pipeline_settings
    (first, second), away, home = _layout2_volumes(settings.partitions)
    volumes = [first, away, second]
    per_volume = [[0, 0, 0], [1, 1], [0, 2, 0, 2]]  # volume index, event by event
    index = [v for v, events in enumerate(per_volume) for _ in events]
    ops = [op for events in per_volume for op in events]  # read, write or flush
    n = len(index)
    record = layout2_record(
        "p-layout2", 1, "h-l2", volumes, ["tenant-l2"] * 3, {
            "volume": index, "op": ops, "status": [0] * n,
            "offset": [0 if op == 2 else 4096 * k for k, op in enumerate(ops)],
            "bytes": [0 if op == 2 else 512 for op in ops],
            "submit_ns": [GOOD["submit_ns"]] * n, "complete_ns": [GOOD["complete_ns"]] * n})

    async def send() -> tuple[int, int]:
        producer = AIOKafkaProducer(**client_kwargs(settings))
        await producer.start()
        try:
            meta = await producer.send_and_wait(
                settings.raw_topic, value=SCHEMAS.encode("IoBatch2", record),
                key=first.encode(), partition=home)
            return meta.partition, meta.offset
        finally:
            await producer.stop()

    register(settings, [(v, "tenant-l2") for v in volumes])  # the misplaced one too
    where = asyncio.run(send())
    wait_committed(settings, [worker], 120)
    counters = {v: worker.get(f"/volumes/{v}/counters") for v in volumes}
    assert counters[first][0] == 200 and counters[second][0] == 200
    assert (counters[first][1]["read_ios"], counters[first][1]["read_bytes"]) == (3, 1536)
    assert (counters[second][1]["read_ios"], counters[second][1]["flush_ios"]) == (2, 2)
    assert counters[second][1]["read_bytes"] == 1024 and counters[second][1]["rejected"] == 0
    assert counters[away][0] == 404  # the misplaced volume: no state at all

    dead = [SCHEMAS.decode(m.value, expect="DeadLetter")[1]
            for m in asyncio.run(read_topic(settings, settings.dlq_topic))]
    [letter] = [d for d in dead if (d["source_topic"], d["source_partition"],
                                    d["source_offset"]) == (settings.raw_topic, *where)]
    assert letter["events"] == 2 and letter["event_indexes"] == [3, 4]
    assert letter["volume_id"] == away and letter["seq"] == 1
    assert all(r.startswith(f"volume {away!r}: partition {home} is not the default")
               for r in letter["event_reasons"])
    assert "1 volume(s) rejected" in letter["reason"]


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
        [sys.executable, "-m", "streams.cli", "produce", "--register", "--jsonl", "-"],
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
