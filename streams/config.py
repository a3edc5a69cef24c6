"""Settings, from environment variables (IOACCT_*) with command-line overrides.

Every setting has a documented default (README.md, "Settings"); nothing here
talks to Kafka.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from streams.core.windows.acc import WINDOW_NAMES

REPO_ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default: Any) -> Any:
    raw = os.environ.get(f"IOACCT_{name.upper()}")
    if raw is None or raw == "":
        return default
    if isinstance(default, bool):
        return raw.lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    if isinstance(default, Path):
        return Path(raw)
    return raw


def _given(name: str, overrides: dict[str, Any]) -> bool:
    return overrides.get(name) is not None or bool(os.environ.get(f"IOACCT_{name.upper()}"))


def kafka_node_ports(kafka_port: int, controller_port: int, nodes: int) -> list[tuple[int, int]]:
    """(client port, controller port) of local node 1..N: each base port + 2*(i-1), so
    the defaults 9092/9093 give 9092/9093, 9094/9095, 9096/9097. Ports that collide (a
    controller port of kafka_port + 2k, say) are refused here rather than by the JVM."""
    if nodes < 1:
        raise ValueError(f"IOACCT_KAFKA_BROKERS={nodes}: a cluster has at least one node")
    ports = [(kafka_port + 2 * i, controller_port + 2 * i) for i in range(nodes)]
    flat = [port for pair in ports for port in pair]
    if len(set(flat)) != len(flat) or max(flat) > 65535:
        raise ValueError(
            f"the {nodes} local Kafka nodes' ports collide or overflow (client ports "
            f"{kafka_port} + 2*(i-1), controller ports {controller_port} + 2*(i-1)): choose "
            "a controller port of kafka_port + an odd number (the default is kafka_port + 1)")
    return ports


@dataclass(frozen=True)
class Settings:
    """One pipeline's settings; ``IOACCT_<NAME>`` overrides each default."""

    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    # Nodes of the local KRaft cluster (`ioacct kafka start --brokers`): node i (1..N)
    # listens on kafka_port + 2*(i-1), its controller on kafka_controller_port + 2*(i-1).
    kafka_brokers: int = 1
    bootstrap: str = ""  # empty: every local node, 127.0.0.1:{kafka_port},...
    topic_prefix: str = "ioacct"
    partitions: int = 8
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    state_dir: Path = REPO_ROOT / ".state"
    retention_s: int = 7 * 24 * 3600
    future_tolerance_s: int = 300
    max_events_per_record: int = 100_000  # a raw record with more is dead-lettered whole
    raw_retention_ms: int = -1  # infinite: audits replay the raw topic
    # The SDK flushes at this many buffered events or this age (README, "Producer batching").
    batch_max_events: int = 16_384
    batch_max_age_ms: int = 100
    # The accounting agent's step (DESIGN.md decision 2): up to this many raw records at a
    # time, or what came within step_wait_ms (step_catch_up_wait_ms while its records are
    # more than 2 s old: pipeline/batches.py); the windows take at most step_max_events per
    # unit (a step of huge records is cut there, bounding its memory).
    step_max_records: int = 4000
    # and of records of 2 KiB or more (a host's batches), up to this many and this many
    # bytes a step, the next step's taken while one is handled (pipeline/batches.py)
    step_max_big_records: int = 16_000
    step_max_bytes: int = 128 << 20
    step_wait_ms: int = 250
    step_catch_up_wait_ms: int = 3000
    step_max_events: int = 1_000_000
    grace_s: float = 2.0
    idle_timeout_s: float = 5.0
    revision_horizon_s: int = 3600
    retention_1s_s: int = 3600
    retention_1m_s: int = 2 * 24 * 3600
    retention_1h_s: int = 60 * 24 * 3600
    tick_interval_s: float = 1.0
    # Where the tables live (pipeline/tables.py): rocksdb (faust's RocksDB store via rocksdict,
    # under the worker's data dir: memory does not grow with retained windows) or memory
    # (faust's dict store, rebuilt from the changelog at every start).
    table_store: str = "rocksdb"
    # RocksDB's memory (pipeline/rocks.py): a table partition's write buffer (memtable)
    # before a flush to disk; the worker's one block cache of reads and its budget for all
    # memtables (faust's defaults, 64 MB x 3 and 2 GB per table partition, grow RSS).
    table_write_buffer_bytes: int = 1 << 20
    table_block_cache_bytes: int = 8 << 20
    table_memtables_bytes: int = 8 << 20
    # How often the worker gives the free pages of its heap back to the system (glibc's
    # malloc_trim: pipeline/heap.py); 0: never (RSS then keeps what glibc holds for reuse).
    heap_release_s: float = 2.0
    # /metrics: each volume's latency histograms (88 series a volume) besides its counters.
    metrics_latency_histograms: bool = True
    # How often a worker checkpoints its RocksDB tables (pipeline/checkpoints.py): one
    # killed -9 restarts from the newest checkpoint and the changelog's tail instead of
    # rebuilding every table from the changelog. 0: off.
    table_checkpoint_s: float = 10.0
    # How soon the group gives a dead worker's partitions to the others (faust: 60 s).
    session_timeout_s: float = 15.0
    # How often the worker commits the raw offsets it has acknowledged (faust's
    # broker_commit_interval, 2.8 s by default): after its producer's sends landed, so a
    # commit waits for them. Shorter: less read again after a crash or a failover, and a
    # backlog is committed soon after it is processed, not up to 2.8 s later
    # (docs/performance.md, session 31).
    commit_interval_s: float = 0.5
    # Workers keeping a copy of another worker's table partitions from their changelogs,
    # so that one of them takes over a dead worker's partitions without rebuilding them.
    table_standby_replicas: int = 1
    # Kafka static membership (docs/operations.md, "Failover"): a worker started again
    # under the same id takes its partitions back without waiting for the session timeout
    # or moving anyone else's. auto: <app id>-<host name>-<web port>; off: none.
    group_instance_id: str = "auto"
    # faust's processing_guarantee: at_least_once (the default; docs/chaos.md says why)
    # or exactly_once (Kafka transactions).
    processing_guarantee: str = "at_least_once"
    # How the worker's producer compresses what it writes to Kafka (its changelogs and
    # output topics): none, gzip, snappy, lz4 or zstd (aiokafka's codecs, cramjam).
    kafka_compression: str = "zstd"
    # The producer SDK's disk spool (docs/producer.md): on unless IOACCT_SPOOL=0.
    spool: bool = True
    spool_dir: str = ""  # empty: <state_dir>/spool/<topic_prefix>
    spool_max_bytes: int = 1 << 30
    spool_ack_interval_s: float = 0.5  # how often the acknowledged position is fsync'd
    spool_close_wait_s: float = 10.0  # close(): how long to wait for Kafka without progress
    # How long a worker rides out Kafka being unreachable in its own calls (topic creation
    # at start, the gap reader) before it exits without committing (streams/kafka_retry.py).
    kafka_wait_s: float = 300.0
    # How every client reaches Kafka (docs/access.md): SASL_SSL with a SCRAM user, or
    # PLAINTEXT. Empty password file/CA file: the local broker's (<state_dir>/kafka-<port>/).
    kafka_security: str = "SASL_SSL"
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_user: str = "admin"
    kafka_password_file: str = ""
    kafka_ca_file: str = ""
    # HTTP views (docs/access.md, "Limits"): per-token rate limits (requests per second
    # and burst), the most windows one stats answer holds, and HTTPS (both files or none).
    web_rate_per_s: float = 20.0
    web_burst: int = 100
    web_operator_rate_per_s: float = 200.0
    web_operator_burst: int = 1000
    web_max_windows: int = 3600
    web_cert: str = ""  # PEM certificate (chain) the worker serves HTTPS with
    web_key: str = ""  # its PEM private key
    # What a client of the workers (ioacct query, ioacct run) checks a worker's HTTPS
    # certificate against besides the system's CAs: a CA or a self-signed certificate
    # (empty: web_cert, when this host serves one).
    web_ca_file: str = ""
    # Who owns a volume (SEMANTICS.md 1): `required`, the tenant registered for it in the
    # volume registry (`ioacct volume register`); `off`, the first tenant seen with it.
    volume_registry: str = "required"
    # -- durability and size (README.md, "Durability and size limits") --
    # Replicas of every topic and how many must have a write before it is acknowledged:
    # 1/1 fits the local single broker; a cluster wants 3/2 (one broker may be lost).
    # from_env() makes them 3/2 when kafka_brokers >= 3 and neither is set.
    replication_factor: int = 1
    min_insync_replicas: int = 1
    # The raw topic's max.message.bytes; the producer SDK sends no larger request.
    max_record_bytes: int = 1 << 20
    # The dead-letter topic's bound per partition, besides its time retention.
    dlq_retention_bytes: int = 1 << 30
    # Debugging only (docs/performance.md, "What a volume costs"): > 0 starts tracemalloc
    # in the worker with this many frames per traceback, and SIGUSR1 makes it log the
    # largest allocations by traceback; 0 (off) costs nothing.
    debug_tracemalloc_frames: int = 0

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        values = {f.name: _env(f.name, f.default) for f in fields(cls)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        if values["kafka_brokers"] >= 3:  # a cluster that may lose one node: 3/2
            for name, cluster_default in (("replication_factor", 3), ("min_insync_replicas", 2)):
                if not _given(name, overrides):
                    values[name] = cluster_default
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> Settings:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def spool_path(self) -> Path:
        """Where the producer SDK spools records (``spool_dir``, else under the state dir)."""
        return Path(self.spool_dir) if self.spool_dir else (
            self.state_dir / "spool" / self.topic_prefix)

    def kafka_home(self) -> Path:
        """Where the local broker keeps its data, logs and secrets (streams.kafka.local)."""
        return self.state_dir / f"kafka-{self.kafka_port}"

    def kafka_password_path(self) -> Path:
        """The file holding ``kafka_user``'s password (the local broker's by default)."""
        return Path(self.kafka_password_file) if self.kafka_password_file else (
            self.kafka_home() / "secrets" / f"{self.kafka_user}.password")

    def kafka_ca_path(self) -> Path:
        """The CA certificate that signed the brokers' (the local broker's by default)."""
        return Path(self.kafka_ca_file) if self.kafka_ca_file else (
            self.kafka_home() / "tls" / "ca.pem")

    @property
    def bootstrap_servers(self) -> str:
        if self.bootstrap:
            return self.bootstrap
        # Not kafka_node_ports(): a collision is `kafka start`'s error, not every client's.
        return ",".join(f"127.0.0.1:{self.kafka_port + 2 * i}"
                        for i in range(max(1, self.kafka_brokers)))

    @property
    def app_id(self) -> str:
        """Faust app id = consumer group; changelog topics are named after it."""
        return f"{self.topic_prefix}-worker"

    def topic(self, name: str) -> str:
        """Full topic name, e.g. topic('io.raw') -> 'ioacct.io.raw'."""
        return f"{self.topic_prefix}.{name}"

    @property
    def raw_topic(self) -> str:
        return self.topic("io.raw")

    @property
    def dlq_topic(self) -> str:
        return self.topic("io.dlq")

    @property
    def monitoring_topic(self) -> str:
        return self.topic("monitoring.1m")

    @property
    def billing_topic(self) -> str:
        return self.topic("billing.hourly")

    @property
    def tokens_topic(self) -> str:
        return self.topic("auth.tokens")

    @property
    def registry_topic(self) -> str:
        """The volume registry (key = volume_id): who owns each volume."""
        return self.topic("volumes.registry")

    def stats_topic(self, window_len_ns: int) -> str:
        return self.topic(f"stats.{WINDOW_NAMES[window_len_ns]}")

    @property
    def web_url(self) -> str:
        scheme = "https" if self.web_cert else "http"
        return f"{scheme}://{self.web_host}:{self.web_port}"
