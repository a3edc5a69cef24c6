"""End to end on the real broker: the billing ledger, with late events on purpose.

Simulated events of three hours ago go through one worker; once their hours have
closed, late events for those hours arrive, one record each. The ledger of every
volume sums exactly to its counters and to the oracle, every late record made exactly
one adjustment holding exactly its events, and sequences run 0, 1, 2, ... per hour.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.config import Settings
from streams.core.codec import default_schemas
from streams.core.counters import COUNTER_NAMES
from streams.core.keys import billing_record_id
from streams.core.times import HOUR_NS, NS_PER_S
from tests.oracles.counters import billing_oracle, counters_oracle

from .harness import WorkerProcess, ioacct, read_topic, running_worker, wait_until

pytestmark = pytest.mark.integration

N_EVENTS = 20_000
NAMES = [name for name, _ in COUNTER_NAMES]


@pytest.fixture(scope="module")
def worker(pipeline_settings: Settings, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[WorkerProcess]:
    with running_worker(pipeline_settings, Path(tmp_path_factory.mktemp("w"))) as started:
        yield started


def ledger(settings: Settings) -> list[dict[str, Any]]:
    schemas = default_schemas()
    records = []
    for message in asyncio.run(read_topic(settings, settings.billing_topic, idle_s=1.0)):
        record = schemas.decode(message.value, expect="BillingRecord")[1]
        assert message.key == record["record_id"].encode()
        records.append(record)
    return records


def sums_by(records: list[dict[str, Any]], key: Any) -> dict[Any, dict[str, int]]:
    sums: dict[Any, dict[str, int]] = {}
    for record in records:
        row = sums.setdefault(key(record), dict.fromkeys(NAMES, 0))
        for name in NAMES:
            row[name] += record[name]
    return sums


def counters_only(rows: dict[Any, dict[str, Any]]) -> dict[Any, dict[str, int]]:
    return {k: {n: row[n] for n in NAMES} for k, row in rows.items()}


def _produce(settings: Settings, events: list[dict[str, Any]], path: Path) -> None:
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    result = ioacct(settings, "produce", "--jsonl", str(path))
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def sent(pipeline_settings: Settings, worker: WorkerProcess,
         tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = Path(tmp_path_factory.mktemp("sim"))
    jsonl = tmp / "events.jsonl"
    start_ns = time.time_ns() - 3 * HOUR_NS
    result = ioacct(pipeline_settings, "produce", "--sim", "--events", str(N_EVENTS),
                    "--volumes", "40", "--sim-rate", "5", "--seed", "5",
                    "--start-ns", str(start_ns), "--write-jsonl", str(jsonl))
    assert result.returncode == 0, result.stderr
    on_time = [orjson.loads(line) for line in jsonl.read_bytes().splitlines()]
    hours = billing_oracle(on_time)
    # Every hour of the run is billed once the partition has been idle (its watermark
    # then passes wall clock - grace - idle timeout).
    # (The simulated records themselves may bring adjustments: a record holds up to 100 ms
    # of one volume's events, and another volume's record may have closed the hour.)
    wait_until(lambda: {(r["volume_id"], r["hour_start_ns"]) for r in ledger(pipeline_settings)}
               == set(hours), 120, "record 0 of every hour", [worker])
    wait_until(lambda: sums_by(ledger(pipeline_settings), lambda r: r["volume_id"])
               == counters_only(counters_oracle(on_time)), 120, "the on-time ledger", [worker])
    before = {r["record_id"] for r in ledger(pipeline_settings)}
    # Late: one event in each of five volumes' first hour (one record each), then a
    # second late event for the first of them, in a record of its own.
    volumes = sorted({e["volume_id"] for e in on_time})[:5]
    late_records: list[list[dict[str, Any]]] = []
    for n, volume_id in enumerate(volumes + volumes[:1]):
        first = min((e for e in on_time if e["volume_id"] == volume_id),
                    key=lambda e: e["complete_ns"])
        hour = first["complete_ns"] - first["complete_ns"] % HOUR_NS
        complete = hour + 17 * NS_PER_S + n
        late_records.append([{**first, "op": "write", "status": "ok", "bytes": 8192 * (n + 1),
                              "submit_ns": complete - 250_000, "complete_ns": complete}])
    _produce(pipeline_settings, [r[0] for r in late_records[:5]], tmp / "late1.jsonl")
    _produce(pipeline_settings, late_records[5], tmp / "late2.jsonl")
    return {"on_time": on_time, "late_records": late_records, "before": before}


def test_ledger_sums_to_counters_and_oracle(
    pipeline_settings: Settings, worker: WorkerProcess, sent: dict[str, Any],
) -> None:
    events = sent["on_time"] + [e for r in sent["late_records"] for e in r]
    expected = counters_only(counters_oracle(events))
    records: list[dict[str, Any]] = []

    def settled() -> bool:
        nonlocal records
        records = ledger(pipeline_settings)
        return sums_by(records, lambda r: r["volume_id"]) == expected

    wait_until(settled, 120, "the ledger to sum to the oracle", [worker])
    for volume_id, want in expected.items():
        status, counters = worker.get(f"/volumes/{volume_id}/counters")
        assert status == 200 and {n: counters[n] for n in NAMES} == want
    by_hour = counters_only({k: v for k, v in billing_oracle(events).items()})
    assert sums_by(records, lambda r: (r["volume_id"], r["hour_start_ns"])) == by_hour
    sequences: dict[tuple[str, int], list[int]] = {}
    for record in records:
        key = (record["volume_id"], record["hour_start_ns"])
        sequences.setdefault(key, []).append(record["sequence"])
        assert record["record_id"] == billing_record_id(record["tenant_id"], *key,
                                                        record["sequence"])
        assert record["kind"] == ("hour" if record["sequence"] == 0 else "adjustment")
    assert all(sorted(s) == list(range(len(s))) for s in sequences.values())


def test_each_late_record_made_one_adjustment_of_its_delta(
    pipeline_settings: Settings, worker: WorkerProcess, sent: dict[str, Any],
) -> None:
    late_records = sent["late_records"]
    new: list[dict[str, Any]] = []

    def arrived() -> bool:
        nonlocal new
        new = [r for r in ledger(pipeline_settings) if r["record_id"] not in sent["before"]]
        return len(new) >= len(late_records)

    wait_until(arrived, 120, "the adjustments", [worker])
    assert len(new) == len(late_records) and all(r["kind"] == "adjustment" for r in new)
    last_sequence: dict[tuple[str, int], int] = {}
    for record_id_ in sent["before"]:
        tenant, volume, hour, sequence = record_id_.rsplit("/", 3)
        key = (volume, int(hour))
        last_sequence[key] = max(last_sequence.get(key, 0), int(sequence))
    by_key = {(a["volume_id"], a["hour_start_ns"], a["sequence"]): a for a in new}
    for record in late_records:  # in the order they were sent: sequences follow it
        event = record[0]
        key = (event["volume_id"], event["complete_ns"] - event["complete_ns"] % HOUR_NS)
        last_sequence[key] += 1
        adjustment = by_key[(*key, last_sequence[key])]
        assert {n: adjustment[n] for n in NAMES} == counters_only(billing_oracle(record))[key]
