"""End to end on the real broker: `ioacct audit` agrees with what a real worker published,
and names every forged, altered or deleted billing record (SEMANTICS.md section 6)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams.config import Settings
from streams.core.codec import default_schemas
from streams.core.counters import COUNTER_NAMES
from streams.core.times import HOUR_NS, NS_PER_S
from streams.core.windows.acc import WINDOW_LENGTHS_NS
from streams.kafka.security import client_kwargs
from tests.conftest import free_port
from tests.oracles.counters import billing_oracle
from tests.oracles.windows import windows_oracle

from .harness import (
    WorkerProcess,
    ioacct,
    read_topic,
    running_worker,
    wait_settled,
    wait_until,
)

pytestmark = pytest.mark.integration

N_EVENTS = 20_000
NAMES = [name for name, _ in COUNTER_NAMES]


@pytest.fixture(scope="module")
def settings(pipeline_settings: Settings) -> Settings:
    # Events of three hours ago still revise windows: a horizon of a day (as in a normal
    # run, where nothing is an hour late; see docs/audit.md).
    return pipeline_settings.with_overrides(revision_horizon_s=24 * 3600)


@pytest.fixture(scope="module")
def worker(settings: Settings, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[WorkerProcess]:
    with running_worker(settings, Path(tmp_path_factory.mktemp("w"))) as started:
        yield started


def keys_of(settings: Settings, topic: str) -> set[bytes]:
    """The keys of a topic's records, watermark markers (key ~watermark/<partition>) left
    out: they name no window."""
    return {m.key for m in asyncio.run(read_topic(settings, topic, idle_s=1.0))
            if not m.key.startswith(b"~")}


@pytest.fixture(scope="module")
def run(settings: Settings, worker: WorkerProcess, tmp_path_factory: pytest.TempPathFactory
        ) -> dict[str, Any]:
    """20,000 simulated events from three hours ago, through the worker, all published."""
    jsonl = Path(tmp_path_factory.mktemp("sim")) / "events.jsonl"
    start_ns = time.time_ns() - 3 * HOUR_NS
    result = ioacct(settings, "produce", "--sim", "--events", str(N_EVENTS), "--volumes", "40",
                    "--sim-rate", "5", "--seed", "9", "--start-ns", str(start_ns),
                    "--write-jsonl", str(jsonl))
    assert result.returncode == 0, result.stderr
    events = [orjson.loads(line) for line in jsonl.read_bytes().splitlines()]
    hours = {f"{row['tenant_id']}/{volume}/{hour}/0".encode()
             for (volume, hour), row in billing_oracle(events).items()}
    wait_until(lambda: hours <= keys_of(settings, settings.billing_topic), 120,
               "record 0 of every (volume, hour)", [worker])
    for length in WINDOW_LENGTHS_NS:
        want = {b"%s/%d" % (v.encode(), s) for v, s in windows_oracle(events, length)}
        wait_until(lambda want=want, length=length:
                   want == keys_of(settings, settings.stats_topic(length)),
                   90, f"every {length // NS_PER_S} s window", [worker])
    # Every window is out, but later records may still revise some (late completions,
    # in-flight intervals): wait for every stage to have committed what it read.
    wait_settled(settings, [worker])
    return {"start_ns": start_ns, "events": events}


def audit(settings: Settings, *args: str) -> tuple[int, Any, str]:
    result = ioacct(settings, "audit", *args, timeout=120)
    body = orjson.loads(result.stdout) if "--json" in args and result.stdout else result.stdout
    return result.returncode, body, result.stderr


def test_audit_agrees_with_the_worker(settings: Settings, run: dict[str, Any]) -> None:
    code, report, stderr = audit(settings, "--from", str(run["start_ns"]), "--to", "now",
                                 "--json")
    assert code == 0, (stderr, report["differences"][:10] if isinstance(report, dict) else "")
    assert report["ok"] is True and report["differences"] == []
    assert report["events_replayed"] == N_EVENTS == report["events_counted"]
    assert report["volumes"] == len({e["volume_id"] for e in run["events"]})
    assert len(report["hours"]) == len(billing_oracle(run["events"]))
    assert sum(h["billed_events"] for h in report["hours"]) == N_EVENTS
    assert {h["status"] for h in report["hours"]} == {"OK"}
    starts = {e["complete_ns"] for e in run["events"]}
    assert report["windows_checked"]["1s"] >= len({s - s % NS_PER_S for s in starts})
    assert "events/s" in stderr and "records/s" in stderr  # the replay rate, on stderr


def test_text_report_volume_filter_and_errors(settings: Settings, run: dict[str, Any]) -> None:
    volume = sorted({e["volume_id"] for e in run["events"]})[3]
    code, text, _ = audit(settings, "--from", "now-4h", "--to", "now", "--volume", volume)
    assert code == 0, text
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["VOLUME", "HOUR"]
    rows = [line.split() for line in lines[1:] if line.startswith(volume)]
    assert rows and all(row[-1] == "OK" for row in rows)
    assert lines[-1].endswith("OK: the published records agree with the raw topic")
    code, _, stderr = audit(settings, "--from", "yesterday", "--to", "now")
    assert code == 2 and "yesterday" in stderr, stderr
    code, _, stderr = audit(settings, "--from", "now", "--to", "now-1h")
    assert code == 2 and "must be after" in stderr
    nobody = settings.with_overrides(bootstrap=f"127.0.0.1:{free_port()}")
    code, _, stderr = audit(nobody, "--from", "now-1h", "--to", "now")
    assert code == 2 and "cannot reach Kafka" in stderr, stderr
    code, _, stderr = audit(settings.with_overrides(topic_prefix="no-such-prefix"),
                            "--from", "now-1h", "--to", "now")
    assert code == 2 and "no topic 'no-such-prefix.billing.hourly'" in stderr, stderr


async def _send(settings: Settings, messages: list[tuple[bytes, bytes | None, int]]) -> None:
    producer = AIOKafkaProducer(**client_kwargs(settings))
    await producer.start()
    try:
        for key, value, partition in messages:
            await producer.send_and_wait(settings.billing_topic, value=value, key=key,
                                         partition=partition)
    finally:
        await producer.stop()


def test_forged_altered_and_deleted_records_are_named(settings: Settings,
                                                      run: dict[str, Any]) -> None:
    schemas = default_schemas()
    ledger: dict[tuple[str, int], list[tuple[dict[str, Any], int]]] = {}
    for message in asyncio.run(read_topic(settings, settings.billing_topic, idle_s=1.0)):
        record = schemas.decode(message.value, expect="BillingRecord")[1]
        ledger.setdefault((record["volume_id"], record["hour_start_ns"]), []).append(
            (record, message.partition))
    (a, b, c) = sorted(ledger)[:3]
    forged_hours = set()

    def audit_names(what: str) -> list[dict[str, Any]]:
        code, report, stderr = audit(settings, "--from", str(run["start_ns"]), "--to", "now",
                                     "--json")
        assert code == 1, (stderr, report)
        named = [d for d in report["differences"] if what in d["detail"]]
        assert named, report["differences"]
        assert {(d["volume_id"], d["hour_start_ns"]) for d in report["differences"]} \
            <= forged_hours, report["differences"]
        assert not report["ok"]
        return named

    # (a) A fake adjustment: the next sequence, a few reads nobody did.
    record, partition = max(ledger[a], key=lambda rp: rp[0]["sequence"])
    sequence = record["sequence"] + 1
    fake = {**record, **dict.fromkeys(NAMES, 0), "read_ios": 5, "read_bytes": 20480,
            "sequence": sequence, "kind": "adjustment",
            "record_id": f"{record['tenant_id']}/{a[0]}/{a[1]}/{sequence}"}
    asyncio.run(_send(settings, [(fake["record_id"].encode(),
                                  schemas.encode("BillingRecord", fake), partition)]))
    forged_hours.add(a)
    [named] = audit_names(fake["record_id"])
    assert (named["volume_id"], named["hour_start_ns"], named["what"]) == (*a, "billing")
    assert "not backed by the raw topic" in named["detail"]

    # (b) A second copy of an existing record, with more bytes read.
    record, partition = ledger[b][0]
    altered = {**record, "read_bytes": record["read_bytes"] + 4096}
    asyncio.run(_send(settings, [(record["record_id"].encode(),
                                  schemas.encode("BillingRecord", altered), partition)]))
    forged_hours.add(b)
    [named] = audit_names(f"conflicting copies of {record['record_id']}")
    assert f"read_bytes {record['read_bytes']} vs {record['read_bytes'] + 4096}" \
        in named["detail"]

    # (c) A tombstone: the record deleted from the compacted topic.
    record, partition = ledger[c][0]
    asyncio.run(_send(settings, [(record["record_id"].encode(), None, partition)]))
    forged_hours.add(c)
    audit_names(f"record {record['record_id']} was deleted")
    code, text, _ = audit(settings, "--from", str(run["start_ns"]), "--to", "now")
    assert code == 1 and "DIFFERENCES" in text.splitlines()
    assert sum(1 for line in text.splitlines() if line.endswith(" DIFF")) == 3
