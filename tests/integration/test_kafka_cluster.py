"""The local three-node KRaft cluster (`ioacct kafka start --brokers 3`): it forms, keeps
its security, and a partition's leader killed -9 loses none of what the SDK sent.

A cluster of its own (own ports and state directory), not the session's single broker.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from streams.config import Settings
from streams.core.codec import default_schemas
from streams.core.events import OPS
from streams.core.raw import raw_batch
from streams.kafka import cluster as kafka_cluster
from streams.kafka.cluster import LocalCluster
from streams.kafka.security import client_kwargs
from streams.kafka.topics import ensure_topics
from streams.sdk.producer import IoProducer
from tests.conftest import free_port_block

from .harness import ioacct, read_topic

pytestmark = pytest.mark.integration
NODES = 3
Event = tuple[str, int, str, int, int, int]  # volume, offset, op, nbytes, submit, complete


@pytest.fixture(scope="module")
def cluster_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    base = free_port_block(2 * NODES)
    settings = Settings.from_env(
        kafka_port=base, kafka_controller_port=base + 1, kafka_brokers=NODES,
        bootstrap=",".join(f"127.0.0.1:{base + 2 * i}" for i in range(NODES)),
        state_dir=Path(tmp_path_factory.mktemp("cluster")), partitions=1,
        kafka_security="SASL_SSL", kafka_user="admin", topic_prefix=f"c{uuid.uuid4().hex[:8]}")
    cluster = LocalCluster.from_settings(settings)
    started = time.monotonic()
    try:
        kafka_cluster.start(cluster)
        print(f"\n3-node cluster started in {time.monotonic() - started:.1f} s")
        asyncio.run(ensure_topics(settings))
        yield settings
    finally:
        kafka_cluster.stop(cluster)


def test_cluster_forms_with_every_node_answering(cluster_settings: Settings) -> None:
    cluster = LocalCluster.from_settings(cluster_settings)
    nodes = kafka_cluster.status(cluster)
    assert sorted(nodes) == [1, 2, 3]
    assert all(pid is not None and answers for pid, answers in nodes.values()), nodes
    assert asyncio.run(kafka_cluster.brokers_registered(cluster)) == NODES
    status = ioacct(cluster_settings, "kafka", "status", "--brokers", "3")
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count(": running (pid") == NODES, status.stdout
    assert "not answering" not in status.stdout


async def _replication(settings: Settings, topic: str) -> tuple[list[int], str]:
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"min.insync.replicas": None})])
    finally:
        await admin.close()
    replicas = [len(part["replicas"]) for part in described[0]["partitions"]]
    entries = configs[0].resources[0][4]  # (name, value, ...) per config
    return replicas, dict((e[0], e[1]) for e in entries)["min.insync.replicas"]


def test_topics_get_three_replicas_and_two_in_sync(cluster_settings: Settings) -> None:
    """IOACCT_KAFKA_BROKERS=3 makes replication 3 / min ISR 2 the settings' defaults."""
    assert (cluster_settings.replication_factor, cluster_settings.min_insync_replicas) == (3, 2)
    for topic in (cluster_settings.raw_topic, f"{cluster_settings.app_id}-counters-changelog"):
        replicas, min_isr = asyncio.run(_replication(cluster_settings, topic))
        assert replicas == [3] * cluster_settings.partitions and min_isr == "2", topic


async def _plaintext_write(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(producer.start(), 15)
        await asyncio.wait_for(producer.send_and_wait(topic, b"x", key=b"k"), 15)
    finally:
        await producer.stop()


@pytest.mark.parametrize("node_id", [1, 2, 3])
def test_a_client_without_credentials_is_refused_by_every_node(
        cluster_settings: Settings, node_id: int) -> None:
    bootstrap = LocalCluster.from_settings(cluster_settings).node(node_id).bootstrap
    with pytest.raises((KafkaError, TimeoutError)):
        asyncio.run(_plaintext_write(bootstrap, cluster_settings.raw_topic))


def test_a_wrong_password_is_refused(cluster_settings: Settings, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    settings = cluster_settings.with_overrides(kafka_password_file=str(wrong))
    with pytest.raises(KafkaError):
        asyncio.run(_admin_login(settings))


async def _admin_login(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(request_timeout_ms=5000, **client_kwargs(settings))
    try:
        await admin.start()
        await admin.list_topics()
    finally:
        await admin.close()


def _events(messages: list[Any]) -> list[Event]:
    schemas, events = default_schemas(), []
    for message in messages:
        name, record = schemas.decode(message.value)
        batch = raw_batch(name, record)
        cols = batch.columns
        for i in range(len(batch)):
            events.append((cols.volumes[cols.volume[i]], int(batch.offset[i]),
                           OPS[cols.op[i]], int(cols.nbytes[i]),
                           int(cols.submit_ns[i]), int(cols.complete_ns[i])))
    return events


class Fleet:
    """Sends rounds of distinct events through one SDK producer, timing each round's
    acknowledgement (flush): the slowest round after the kill is the SDK's stall."""

    def __init__(self, producer: IoProducer) -> None:
        self.producer = producer
        self.sent: list[Event] = []
        self.round_s: list[tuple[float, float]] = []  # (round start, seconds to ack)

    async def round(self, events: int = 40) -> None:
        began = time.monotonic()
        for _ in range(events):
            n = len(self.sent)
            event = (f"vol-{n % 5}", n * 4096, ("read", "write")[n % 2], 512 + n % 4096,
                     1_000_000 * n, 1_000_000 * n + 7_000 + n % 1000)
            self.producer.record(event[0], "tenant-1", event[2], "ok", event[1], event[3],
                                 event[4], event[5])
            self.sent.append(event)
        left = await self.producer.flush(wait_s=120)
        assert left == 0, f"{left} records never acknowledged"
        self.round_s.append((began, time.monotonic() - began))


async def _failover(settings: Settings, cluster: LocalCluster, spool: Path) -> dict[str, Any]:
    topic = settings.raw_topic
    async with IoProducer(settings, spool_dir=spool) as producer:
        fleet = Fleet(producer)
        for _ in range(10):
            await fleet.round()
        leader = await kafka_cluster.partition_leader(cluster, topic, 0)
        kill = asyncio.create_task(asyncio.to_thread(kafka_cluster.kill_node, cluster, leader))
        killed_at = time.monotonic()
        while not kill.done() or time.monotonic() - killed_at < 20:
            await fleet.round()
        await kill
        new_leader = await kafka_cluster.partition_leader(cluster, topic, 0)
        after = [seconds for began, seconds in fleet.round_s if began >= killed_at - 1]
    return {"sent": fleet.sent, "leader": leader, "new_leader": new_leader,
            "stall_s": max(after), "rounds_after_kill": len(after)}


async def _wait_in_sync(cluster: LocalCluster, topic: str, timeout_s: float) -> list[int]:
    deadline, isr = time.monotonic() + timeout_s, []
    while time.monotonic() < deadline:
        _, isr = await kafka_cluster.partition_state(cluster, topic, 0)
        if len(isr) == NODES:
            break
        await asyncio.sleep(0.5)
    return isr


def test_the_sdk_loses_nothing_when_the_leader_is_killed(
        cluster_settings: Settings, tmp_path: Path) -> None:
    cluster = LocalCluster.from_settings(cluster_settings)
    result = asyncio.run(_failover(cluster_settings, cluster, tmp_path / "spool"))
    print(f"\nkilled leader node {result['leader']}; new leader {result['new_leader']}; "
          f"slowest acknowledgement after the kill {result['stall_s']:.2f} s over "
          f"{result['rounds_after_kill']} rounds")
    assert result["new_leader"] not in (result["leader"], -1)
    restarted_at = time.monotonic()
    kafka_cluster.restart_node(cluster, result["leader"])
    isr = asyncio.run(_wait_in_sync(cluster, cluster_settings.raw_topic, 120))
    print(f"node {result['leader']} back in the ISR {time.monotonic() - restarted_at:.1f} s "
          "after its restart")
    assert isr == [1, 2, 3]
    got = _events(asyncio.run(read_topic(cluster_settings, cluster_settings.raw_topic)))
    assert len(got) == len(result["sent"])  # every event once: none lost, none twice
    assert sorted(got) == sorted(result["sent"])


def test_a_user_added_on_the_cluster_may_write_on_every_node(cluster_settings: Settings) -> None:
    """Credentials and ACLs live in the replicated metadata log: one `kafka user add`
    serves every node."""
    made = ioacct(cluster_settings, "kafka", "user", "add", "hv", "--role", "hypervisor")
    assert made.returncode == 0, made.stderr
    cluster = LocalCluster.from_settings(cluster_settings)
    for node in cluster.nodes:
        settings = cluster_settings.with_overrides(kafka_user="hv", bootstrap=node.bootstrap)
        asyncio.run(_write(settings, cluster_settings.dlq_topic))  # raw: the failover test's


async def _write(settings: Settings, topic: str) -> None:
    producer = AIOKafkaProducer(request_timeout_ms=10_000, **client_kwargs(settings))
    await producer.start()
    try:
        await asyncio.wait_for(producer.send_and_wait(topic, b"x", key=b"k"), 20)
    finally:
        await producer.stop()
