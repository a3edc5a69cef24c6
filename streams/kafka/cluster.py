"""The local KRaft cluster: N combined broker+controller nodes from the same jars.

`ioacct kafka start --brokers N` (IOACCT_KAFKA_BROKERS). Node i (1..N) listens on
kafka_port + 2*(i-1) and its controller on kafka_controller_port + 2*(i-1)
(config.kafka_node_ports); all N form one controller quorum and one cluster id. With
N = 1 it is the single broker of streams/kafka/local.py, in the same directory as ever;
with N > 1 node i lives in ``<state_dir>/kafka-<port>/node-<i>/`` and every node shares
the ``tls/`` (one CA, one certificate for 127.0.0.1) and ``secrets/`` beside them, so a
client's settings are the same for one node or three. What the chaos run needs is here
too: a node's pid, kill -9 and restart of one node, the leader of a partition.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from streams.config import Settings, kafka_node_ports
from streams.kafka import local
from streams.kafka.local import KafkaError, LocalBroker

BROKERS_FILE = "brokers"  # in the cluster home: the node count its data was made for


@dataclass(frozen=True)
class LocalCluster:
    """The local nodes of one state directory and base port."""

    home: Path
    nodes: tuple[LocalBroker, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalCluster:
        home, size = settings.kafka_home(), settings.kafka_brokers
        try:
            ports = kafka_node_ports(settings.kafka_port, settings.kafka_controller_port, size)
        except ValueError as exc:
            raise KafkaError(str(exc)) from exc
        secure = settings.kafka_security.upper() == "SASL_SSL"
        if size == 1:
            return cls(home, (LocalBroker(ports[0][0], ports[0][1], home, secure),))
        return cls(home, tuple(
            LocalBroker(port, controller, home / f"node-{i}", secure, node_id=i,
                        voters=voters(ports), shared=home, cluster_size=size)
            for i, (port, controller) in enumerate(ports, start=1)))

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def node(self, node_id: int) -> LocalBroker:
        return self.nodes[node_id - 1]

    def pids(self) -> dict[int, int | None]:
        """Each node's pid (None: not running), by node id."""
        return {node.node_id: node.pid() for node in self.nodes}


def voters(ports: list[tuple[int, int]]) -> str:
    """controller.quorum.voters for nodes 1..N on these (client, controller) ports."""
    return ",".join(f"{i}@127.0.0.1:{controller}"
                    for i, (_, controller) in enumerate(ports, start=1))


def made_for(cluster: LocalCluster) -> int | None:
    """The node count the cluster home's data was made for (None: no data yet)."""
    path = cluster.home / BROKERS_FILE
    if path.exists():
        return int(path.read_text().strip())
    if (cluster.home / "data" / "meta.properties").exists():
        return 1  # a single broker made before the cluster existed
    return None


def check_mode(cluster: LocalCluster) -> None:
    made, size = made_for(cluster), len(cluster.nodes)
    if made is not None and made != size:
        raise KafkaError(f"the Kafka data in {cluster.home} was made for {made} node(s), not "
                         f"{size} (--brokers, IOACCT_KAFKA_BROKERS): remove that directory "
                         f"(its records too; `make clean` removes .state) or start {made}")


def _cluster_id(cluster: LocalCluster) -> str:
    """The id a node already formatted carries (a half-made cluster), else a new one."""
    for node in cluster.nodes:
        meta = node.home / "data" / "meta.properties"
        if meta.exists():
            for line in meta.read_text().splitlines():
                if line.startswith("cluster.id="):
                    return line.split("=", 1)[1].strip()
    return local.new_cluster_id()


def start(cluster: LocalCluster, timeout_s: float = 120.0) -> bool:
    """Start every node not running and wait until each answers and the cluster counts
    all of them; True when this call started at least one."""
    check_mode(cluster)
    down = [node for node in cluster.nodes if node.pid() is None]
    for node in down:
        local.check_ports_free(node)
    if down:
        local.ensure_built()
        cluster_id = _cluster_id(cluster)
        for node in down:
            local.format_storage(node, node.write_config(), cluster_id)
        (cluster.home / BROKERS_FILE).write_text(f"{len(cluster.nodes)}\n")
        for node in down:  # all at once: no node is ready before a quorum of them runs
            local.launch(node)
    wait_ready(cluster, timeout_s)
    return bool(down)


def wait_ready(cluster: LocalCluster, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for node in cluster.nodes:
        local.wait_ready(node, max(1.0, deadline - time.monotonic()))
    while len(cluster.nodes) > 1:
        registered = asyncio.run(brokers_registered(cluster))
        if registered == len(cluster.nodes):
            return
        if time.monotonic() > deadline:
            raise KafkaError(f"only {registered} of {len(cluster.nodes)} nodes joined the "
                             f"cluster within {timeout_s:.0f} s; see {cluster.home}/node-*/logs")
        time.sleep(0.5)


async def brokers_registered(cluster: LocalCluster) -> int:
    """How many brokers the cluster's metadata lists (0: no node answers)."""
    from aiokafka.admin import AIOKafkaAdminClient

    kwargs = local.admin_kwargs(cluster.nodes[0])
    admin = AIOKafkaAdminClient(request_timeout_ms=5000,
                                **{**kwargs, "bootstrap_servers": cluster.bootstrap})
    try:
        await admin.start()
        return len((await admin.describe_cluster())["brokers"])
    except Exception:
        return 0
    finally:
        await admin.close()


def stop(cluster: LocalCluster, timeout_s: float = 60.0) -> list[int]:
    """Stop every node (all SIGTERMed first: a controlled shutdown needs the others up
    only as long as it lasts); returns the ids of the nodes that were running."""
    running = [node for node in cluster.nodes if node.pid() is not None]
    for node in running:
        pid = node.pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
    for node in running:
        local.stop(node, timeout_s)
    return [node.node_id for node in running]


def status(cluster: LocalCluster) -> dict[int, tuple[int | None, bool]]:
    """By node id: its pid (None: not running) and whether it answers a client."""
    return {node.node_id: (node.pid(), node.pid() is not None and local.answers(node))
            for node in cluster.nodes}


def kill_node(cluster: LocalCluster, node_id: int) -> int:
    """kill -9 one node (no controlled shutdown, as a crash); returns its pid."""
    node = cluster.node(node_id)
    pid = node.pid()
    if pid is None:
        raise KafkaError(f"node {node_id} ({node.bootstrap}) is not running")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while node.pid() is not None and time.monotonic() < deadline:
        local.reap(pid)
        time.sleep(0.05)
    return pid


def restart_node(cluster: LocalCluster, node_id: int, timeout_s: float = 90.0) -> int:
    """Start a stopped node again on its own data; returns its new pid once it answers."""
    node = cluster.node(node_id)
    if node.pid() is not None:
        raise KafkaError(f"node {node_id} ({node.bootstrap}) still runs")
    pid = local.launch(node)
    local.wait_ready(node, timeout_s)
    return pid


async def partition_leader(cluster: LocalCluster, topic: str, partition: int) -> int:
    """The node id leading ``topic``'s ``partition`` now (-1: none, an election is on)."""
    return (await partition_state(cluster, topic, partition))[0]


async def partition_state(cluster: LocalCluster, topic: str,
                          partition: int) -> tuple[int, list[int]]:
    """(leader node id, in-sync replica node ids) of one partition, from fresh metadata."""
    from aiokafka.admin import AIOKafkaAdminClient

    kwargs = {**local.admin_kwargs(cluster.nodes[0]), "bootstrap_servers": cluster.bootstrap}
    admin = AIOKafkaAdminClient(request_timeout_ms=5000, **kwargs)
    try:
        await admin.start()
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    for part in described[0]["partitions"]:
        if part["partition"] == partition:
            return int(part["leader"]), sorted(int(r) for r in part["isr"])
    raise KafkaError(f"no partition {partition} of {topic!r} on {cluster.bootstrap}")
