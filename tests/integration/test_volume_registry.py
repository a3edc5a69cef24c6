"""The volume registry on the real broker: `ioacct volume register/list`, and a worker
(IOACCT_VOLUME_REGISTRY=required, the default) that counts a volume registered just
before its first events, dead-letters an unregistered volume and a volume claimed by
another tenant with their reasons, changes no state for them, and goes on; a flood of
unregistered volumes does not cost one registry round trip per record."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams.config import Settings
from streams.core.codec import default_schemas
from streams.kafka.security import client_kwargs
from tests.hostile import GOOD, batch
from tests.oracles.counters import counters_oracle

from .harness import (
    WorkerProcess,
    ioacct,
    read_topic,
    register,
    running_worker,
    wait_committed,
)

pytestmark = pytest.mark.integration
SCHEMAS = default_schemas()
PRODUCER = "registry-test"
FLOOD = 200


@pytest.fixture(scope="module")
def worker(pipeline_settings: Settings, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[WorkerProcess]:
    with running_worker(pipeline_settings, Path(tmp_path_factory.mktemp("w"))) as started:
        yield started


def test_register_and_list(pipeline_settings: Settings) -> None:
    s = pipeline_settings
    first = ioacct(s, "volume", "register", "vol-cli-1", "--tenant", "t-a")
    assert first.returncode == 0 and "registered to tenant t-a" in first.stdout, first.stderr
    again = ioacct(s, "volume", "register", "vol-cli-1", "--tenant", "t-a")
    assert again.returncode == 0 and "already" in again.stdout and "nothing changed" in again.stdout
    moved = ioacct(s, "volume", "register", "vol-cli-1", "--tenant", "t-b")
    assert moved.returncode == 1
    assert "volume vol-cli-1 is registered to tenant t-a" in moved.stderr, moved.stderr
    bad = ioacct(s, "volume", "register", "vol cli", "--tenant", "t-a")
    assert bad.returncode == 1 and "characters outside" in bad.stderr, bad.stderr
    assert ioacct(s, "volume", "register", "vol-cli-2", "--tenant", "t-b").returncode == 0
    table = ioacct(s, "volume", "list")
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line.split()[1] for line in table.stdout.splitlines()}
    assert {k: v for k, v in rows.items() if k.startswith("vol-cli")} == {
        "vol-cli-1": "t-a", "vol-cli-2": "t-b"}
    listed = ioacct(s, "volume", "list", "--tenant", "t-a", "--json")
    [only] = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert only["volume_id"] == "vol-cli-1" and only["tenant_id"] == "t-a"
    assert only["registered_at_ns"] > 0 and only["registered_by"] == s.kafka_user


def _record(volume: str, tenant: str, seq: int, offset: int) -> tuple[bytes, dict[str, Any]]:
    event = {**GOOD, "volume_id": volume, "tenant_id": tenant, "offset": offset}
    return SCHEMAS.encode("IoBatch", batch(volume, tenant, seq, [event], producer_id=PRODUCER)), \
        event


async def _send(settings: Settings, values: list[tuple[str, bytes]], wait_each: bool = True
                ) -> list[tuple[int, int]]:
    """(key volume, value) to the raw topic; their (partition, offset)."""
    producer = AIOKafkaProducer(**client_kwargs(settings), linger_ms=50)
    await producer.start()
    try:
        futures = [await producer.send(settings.raw_topic, value, key=volume.encode())
                   for volume, value in values]
        if wait_each:
            return [((m := await f).partition, m.offset) for f in futures]
        await producer.flush()
        return [((m := f.result()).partition, m.offset) for f in futures]
    finally:
        await producer.stop()


def _dead_reasons(settings: Settings) -> dict[tuple[int, int], str]:
    out = {}
    for m in asyncio.run(read_topic(settings, settings.dlq_topic)):
        record = SCHEMAS.decode(m.value, expect="DeadLetter")[1]
        if record["source_topic"] == settings.raw_topic:
            out[(record["source_partition"], record["source_offset"])] = record["reason"]
    return out


def test_registered_just_before_counted_strangers_dead_lettered(
    pipeline_settings: Settings, worker: WorkerProcess,
) -> None:
    s = pipeline_settings
    before = worker.get("/status")[1]
    good: list[dict[str, Any]] = []
    # Each volume registered, then at once its first record: the worker's view of the
    # registry (followed once a second) is behind, and must catch up, not reject.
    for k in range(5):
        volume = f"vol-race-{k}"
        register(s, [(volume, "tenant-r")])
        value, event = _record(volume, "tenant-r", k, 4096 * k)
        asyncio.run(_send(s, [(volume, value)]))
        good.append(event)
    hostile = [("vol-nobody", _record("vol-nobody", "tenant-r", 2**63 - 1, 0)[0]),
               ("vol-race-0", _record("vol-race-0", "tenant-x", 2**63 - 1, 0)[0])]
    hostile_at = asyncio.run(_send(s, hostile))
    value, event = _record("vol-race-0", "tenant-r", 10, 8192)  # the mark did not move
    asyncio.run(_send(s, [("vol-race-0", value)]))
    good.append(event)
    flood = [(f"vol-flood-{i}", _record(f"vol-flood-{i}", "tenant-f", i, 0)[0])
             for i in range(FLOOD)]
    flood_at = asyncio.run(_send(s, flood, wait_each=False))
    wait_committed(s, [worker], 120)

    reasons = _dead_reasons(s)
    assert reasons[hostile_at[0]] == "volume vol-nobody is not registered"
    assert reasons[hostile_at[1]] == ("volume vol-race-0 is registered to tenant tenant-r, "
                                      "not tenant-x")
    assert [reasons[at] for at in flood_at] == [
        f"volume vol-flood-{i} is not registered" for i in range(FLOOD)]
    expected = counters_oracle(good)
    assert set(expected) == {f"vol-race-{k}" for k in range(5)}
    for volume, want in expected.items():
        status, counters = worker.get(f"/volumes/{volume}/counters")
        assert status == 200 and counters == {**counters, **want}, (volume, counters)
        assert counters["tenant_id"] == "tenant-r" and counters["rejected"] == 0
    for never in ["vol-nobody", "vol-flood-0", f"vol-flood-{FLOOD - 1}"]:
        assert worker.get(f"/volumes/{never}/counters")[0] == 404  # no volume made
    after = worker.get("/status")[1]
    assert worker.alive()
    assert after["records_rejected"] - before["records_rejected"] == 2 + FLOOD
    assert after["events_counted"] - before["events_counted"] == len(good)
    # The flood was appended in a burst: one read of the registry's end covers many.
    catch_ups = after["registry_catch_ups"] - before["registry_catch_ups"]
    print(f"\nregistry catch-ups: {catch_ups} for {5 + 2 + FLOOD} records of volumes the "
          "worker's view did not know")
    assert catch_ups <= 5 + 2 + FLOOD // 10, catch_ups
