"""The producer spool on a broker of its own that the tests stop and start.

(1) Events recorded while Kafka is down wait in the spool and are sent when it comes
back; (2) a producer killed with SIGKILL while Kafka is down, restarted on the same
spool, sends what the spool holds (records that had landed too: the worker skips
them as replays). Both times every volume's counters equal the oracle exactly.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from streams.config import REPO_ROOT, Settings
from streams.core.codec import CodecError, default_schemas
from streams.core.events import IoEvent
from streams.core.times import NS_PER_S
from streams.kafka import local as kafka_local
from streams.kafka import tls
from streams.sdk.drain_log import SpoolStats
from streams.sdk.frames import FRAME, decode_payload, frame_at
from streams.sdk.producer import IoProducer
from streams.sdk.spool import SUFFIX
from streams.sources.simulator import FleetConfig, FleetSimulator
from tests.conftest import free_port
from tests.oracles.counters import counters_oracle

from .harness import (
    WorkerProcess,
    counter_mismatches,
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
N_OUTAGE, N_AFTER = 30_000, 4_000  # events of (1), and sent after the restart in (2)
N_KILLED, KILLED_RATE = 12_000, 1_000.0  # the killed producer of (2): about 12 s
SEED, VOLUMES, TENANTS = 17, 60, 6


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings of a broker on free ports with a state dir of its own, not started."""
    port = free_port()
    settings = Settings.from_env(
        kafka_port=port, kafka_controller_port=free_port(), bootstrap=f"127.0.0.1:{port}",
        state_dir=Path(tmp_path_factory.mktemp("spool-broker")), partitions=4,
        topic_prefix="spooltest", batch_max_events=32,
    )
    try:
        yield settings
    finally:
        kafka_local.stop(kafka_local.LocalBroker.from_settings(settings))


@pytest.fixture(scope="module")
def events() -> list[IoEvent]:
    """One simulated stream (a volume keeps its tenant), ending a few seconds ago."""
    total, rate = N_OUTAGE + N_AFTER, 2_000.0
    start_ns = time.time_ns() - int(total / rate * NS_PER_S) - 5 * NS_PER_S
    config = FleetConfig(seed=SEED, volumes=VOLUMES, tenants=TENANTS, start_ns=start_ns,
                         events_per_s=rate)
    return list(FleetSimulator(config).events(total))


def test_events_recorded_while_kafka_is_down_are_sent_when_it_is_back(
    private: Settings, events: list[IoEvent], tmp_path: Path,
) -> None:
    broker = kafka_local.LocalBroker.from_settings(private)
    assert broker.pid() is None
    if broker.secure:  # credentials are provisioned before a host's producer starts
        tls.ensure_certificates(broker.home)
        tls.secret(broker.home, private.kafka_user)
    outage = events[:N_OUTAGE]
    stats = asyncio.run(_produce_through_outage(private, broker, outage, tmp_path / "spool"))
    print(f"\noutage: {stats}")
    assert stats.records_spooled == stats.records_acked > 0  # every record waited on disk
    assert (stats.drains, stats.spool_records, stats.records_refused) == (1, 0, 0)
    assert stats.spool_peak_bytes > 0 and not list((tmp_path / "spool").glob("*" + SUFFIX))
    register(private, {(e.volume_id, e.tenant_id) for e in outage})
    with running_worker(private, tmp_path) as worker:
        wait_committed(private, [worker])
        _assert_counters_equal_oracle(worker, outage)


async def _produce_through_outage(settings: Settings, broker: kafka_local.LocalBroker,
                                  events: list[IoEvent], spool_dir: Path) -> SpoolStats:
    producer = IoProducer(settings, spool_dir=spool_dir)
    await producer.start()  # Kafka is not there: starting must not fail
    for n, event in enumerate(events, 1):
        producer.record_event(event)
        if n % 512 == 0:
            await asyncio.sleep(0)
    assert await producer.flush(wait_s=1.0) == producer.records_sent  # all on disk
    await asyncio.to_thread(kafka_local.start, broker)
    created = await asyncio.to_thread(ioacct, settings, "topics")
    assert created.returncode == 0, created.stderr
    assert await asyncio.wait_for(producer.flush(), 180) == 0
    assert await producer.close() == 0
    stats = producer.spool_stats
    assert stats is not None
    return stats


def test_a_killed_producer_restarted_on_its_spool_loses_and_doubles_nothing(
    private: Settings, events: list[IoEvent], tmp_path: Path,
) -> None:
    broker = kafka_local.LocalBroker.from_settings(private)
    kafka_local.start(broker)  # (running after the first test)
    private = private.with_overrides(topic_prefix="spooltest2")  # a pipeline of its own
    assert ioacct(private, "topics").returncode == 0
    spool_dir, log_path = tmp_path / "spool", tmp_path / "first.log"
    before = _raw_events(private)
    # The simulated fleet, paced; no acknowledged position is ever persisted, so the
    # restarted producer resends what had landed too.
    config = FleetConfig(seed=SEED, volumes=VOLUMES, tenants=TENANTS, start_ns=time.time_ns(),
                         events_per_s=KILLED_RATE)
    first = _spawn_producer(private, spool_dir, log_path, config, N_KILLED,
                            {"IOACCT_SPOOL_ACK_INTERVAL_S": "3600",
                             "IOACCT_SPOOL_CLOSE_WAIT_S": "600"})
    try:
        wait_until(lambda: _alive(first, log_path) and _raw_events(private) > before, 120,
                   "the first records to land")
        kafka_local.stop(broker)
        # Every event recorded, the producer waits for Kafka in close(): all in the spool.
        wait_until(lambda: _alive(first, log_path) and _spool_events(spool_dir)[0] == N_KILLED,
                   120, "every event in the spool of the first producer")
        entries = _spool_events(spool_dir)[1]
        first.send_signal(signal.SIGKILL)
        assert first.wait(30) == -signal.SIGKILL
    finally:
        first.kill()
    sent = list(FleetSimulator(config).events(N_KILLED))
    kafka_local.start(broker)
    landed_before_restart = _raw_events(private) - before
    after = events[N_OUTAGE:]
    after_path = tmp_path / "after.jsonl"
    after_path.write_bytes(b"".join(orjson.dumps(e.to_json()) + b"\n" for e in after))
    second = ioacct(private, "produce", "--jsonl", str(after_path), "--spool-dir", str(spool_dir))
    assert second.returncode == 0, second.stdout + second.stderr
    sent += after
    print(f"\nkilled: {entries} records in its spool, {landed_before_restart} of its "
          f"{N_KILLED} events had landed; the restart said:\n{second.stdout}")
    assert "0 record(s) (0 bytes) left" in second.stdout
    assert f"{entries} recovered from an earlier run" in second.stdout
    with running_worker(private, tmp_path) as worker:
        wait_committed(private, [worker])
        _assert_counters_equal_oracle(worker, sent)
        assert worker.get("/status")[1]["replays_skipped"] > 0  # the landed ones, resent


def _alive(process: subprocess.Popen[bytes], log_path: Path) -> bool:
    assert process.poll() is None, log_path.read_text(errors="replace")[-3000:]
    return True


def _spawn_producer(settings: Settings, spool_dir: Path, log_path: Path, config: FleetConfig,
                    count: int, extra_env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`ioacct produce --sim` in real time: the same events as FleetSimulator(config)."""
    command = [sys.executable, "-m", "streams.cli", "produce", "--sim", "--events", str(count),
               "--rate", str(config.events_per_s), "--volumes", str(config.volumes),
               "--tenants", str(config.tenants), "--seed", str(config.seed),
               "--start-ns", str(config.start_ns), "--spool-dir", str(spool_dir)]
    with open(log_path, "wb") as log:
        return subprocess.Popen(command, env={**settings_env(settings), **extra_env},
                                cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)


def _batches(values: list[bytes]) -> dict[tuple[str, int], int]:
    """Events per (producer_id, seq) of the raw records (either layout) among these values."""
    found: dict[tuple[str, int], int] = {}
    for value in values:
        try:
            name, record = SCHEMAS.decode(value)
        except CodecError:
            continue
        if name in ("IoBatch", "IoBatch2"):
            found[(record["producer_id"], record["seq"])] = len(record["op"])
    return found


def _raw_events(settings: Settings) -> int:
    """Events on the raw topic, each record counted once however often it landed."""
    messages = asyncio.run(read_topic(settings, settings.raw_topic, idle_s=1.0))
    return sum(_batches([m.value for m in messages]).values())


def _spool_events(directory: Path) -> tuple[int, int]:
    """(events, entries) readable in a spool's segments right now, read beside its owner."""
    values: list[bytes] = []
    for path in sorted(directory.glob("*" + SUFFIX)):
        data, pos = path.read_bytes(), 0
        while (size := frame_at(data, pos)) > 0:
            values.append(decode_payload(data[pos + FRAME.size:pos + size])[2])
            pos += size
    return sum(_batches(values).values()), len(values)


def _assert_counters_equal_oracle(worker: WorkerProcess, sent: list[IoEvent]) -> None:
    expected = counters_oracle([e.to_json() for e in sent])
    assert len(expected) == VOLUMES
    diffs = counter_mismatches(worker, expected)
    assert not diffs, f"{len(diffs)} differences, first: {diffs[:10]}"

