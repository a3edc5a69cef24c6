"""A local KRaft Apache Kafka node (broker and controller in one JVM): build, start, stop.

The broker is assembled from its Maven Central artifacts by deploy/kafka/pom.xml
(DESIGN.md decision 1): no Docker, no download outside the package registries.
A single broker's pid, configuration, data and logs live in ``<state_dir>/kafka-<port>/``;
a cluster's nodes (streams/kafka/cluster.py) each in ``node-<i>/`` below it, sharing its
``tls/`` and ``secrets/``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.config import REPO_ROOT, Settings
from streams.kafka import tls

POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
LIBS = REPO_ROOT / "deploy" / "kafka" / "target" / "libs"
JAVA_HEAP = os.environ.get("IOACCT_KAFKA_HEAP", "-Xms256m -Xmx1g")


class KafkaError(RuntimeError):
    """The local broker could not be built, started or stopped; the message says why."""


@dataclass(frozen=True)
class LocalBroker:
    """One local broker, identified by its ports and state directory."""

    port: int
    controller_port: int
    home: Path
    secure: bool = False  # SASL_SSL with SCRAM users and ACLs (docs/access.md)
    node_id: int = 1
    voters: str = ""  # controller.quorum.voters; empty: this node alone
    shared: Path | None = None  # a cluster's tls/ and secrets/; None: home's own
    cluster_size: int = 1  # replicas of the broker's internal topics

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalBroker:
        """The single broker; a cluster's nodes come from cluster.LocalCluster."""
        if settings.kafka_brokers != 1:
            raise KafkaError(f"IOACCT_KAFKA_BROKERS={settings.kafka_brokers}: this command "
                             "runs a single broker only; unset it or use `ioacct kafka start`")
        return cls(settings.kafka_port, settings.kafka_controller_port, settings.kafka_home(),
                   settings.kafka_security.upper() == "SASL_SSL")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def secrets_home(self) -> Path:
        """Where the CA, the broker certificate and the passwords live (streams.kafka.tls)."""
        return self.shared or self.home

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "server.log"

    def pid(self) -> int | None:
        """The broker's pid when its process is alive, else None."""
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def write_config(self) -> Path:
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        props = self.home / "server.properties"
        props.write_text(self.properties_text())
        (self.home / "log4j.properties").write_text(_LOG4J.format(log=self.log_file))
        return props

    def properties_text(self) -> str:
        """server.properties of this node (secrets made on first use when secured)."""
        text = _SERVER_PROPERTIES.format(
            port=self.port, controller_port=self.controller_port, data=self.home / "data",
            listener="SASL_SSL" if self.secure else "PLAINTEXT", node_id=self.node_id,
            voters=self.voters or f"{self.node_id}@127.0.0.1:{self.controller_port}",
            controller_protocol="SASL_PLAINTEXT" if self.secure else "PLAINTEXT",
            replicas=self.cluster_size, min_isr=internal_min_isr(self.cluster_size))
        if self.secure:
            shared = self.secrets_home
            text += _SECURE_PROPERTIES.format(
                controller_password=tls.secret(shared, "controller"),
                admin_password=tls.secret(shared, "admin"),
                tls=tls.ensure_certificates(shared), store=tls.secret(shared, "tls-store"))
        return text

    def java(self, main_class: str, *args: str, heap: str = JAVA_HEAP) -> list[str]:
        return [
            "java", *heap.split(), "-cp", f"{LIBS}/*",
            f"-Dlog4j.configuration=file:{self.home / 'log4j.properties'}",
            f"-Dkafka.logs.dir={self.home / 'logs'}", main_class, *args,
        ]


def internal_min_isr(nodes: int) -> int:
    """min.insync.replicas of the broker's own topics: 2 once one node may be lost (3+)."""
    return 2 if nodes >= 3 else 1


def ensure_built() -> None:
    """Copy the broker's jars from Maven Central into deploy/kafka/target/libs once."""
    if LIBS.is_dir() and any(LIBS.glob("kafka_2.13-*.jar")):
        return
    print(f"building the local Kafka broker from Maven Central ({POM}) ...", flush=True)
    result = subprocess.run(["mvn", "-B", "-q", "-f", str(POM), "package"], check=False)
    if result.returncode != 0:
        raise KafkaError("mvn could not fetch the Kafka artifacts (is Maven on PATH?)")


def new_cluster_id() -> str:
    """A KRaft cluster id as Kafka's Uuid.randomUuid() makes one: URL-safe base64 of 16
    random bytes, never starting with '-' (Kafka redraws those too: the storage tool's
    parser would read '-t -abc...' as a missing argument, about one start in 64)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def format_storage(broker: LocalBroker, props: Path, cluster_id: str | None = None) -> None:
    """Format the node's data directory once (a cluster passes its one cluster id)."""
    mode_file, mode = broker.home / "security.mode", "SASL_SSL" if broker.secure else "PLAINTEXT"
    if (broker.home / "data" / "meta.properties").exists():
        made = mode_file.read_text().strip() if mode_file.exists() else "PLAINTEXT"
        if made != mode:
            raise KafkaError(f"the broker's data in {broker.home} was made for {made}, not "
                             f"{mode} (IOACCT_KAFKA_SECURITY): remove that directory (its "
                             f"records too; `make clean` removes .state) or set it to {made}")
        return
    cluster_id = cluster_id or new_cluster_id()
    # The admin's SCRAM credential goes into the metadata log at format: the broker's own
    # inter-broker login needs it before any client could create it.
    admin = f"SCRAM-SHA-512=[name=admin,password={tls.secret(broker.secrets_home, 'admin')}]"
    scram = ["--add-scram", admin] if broker.secure else []
    result = subprocess.run(
        broker.java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props),
                    *scram, heap="-Xmx256m"),
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise KafkaError(f"formatting storage failed: {result.stdout}{result.stderr}")
    mode_file.write_text(mode + "\n")


def admin_kwargs(broker: LocalBroker) -> dict[str, Any]:
    """aiokafka keyword arguments that log in to this broker as its admin."""
    kwargs: dict[str, Any] = {"bootstrap_servers": broker.bootstrap}
    if broker.secure:
        from aiokafka.helpers import create_ssl_context  # lazily: only the CLI needs it

        kwargs.update(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                      sasl_plain_username="admin",
                      sasl_plain_password=tls.secret(broker.secrets_home, "admin"),
                      ssl_context=create_ssl_context(
                          cafile=str(broker.secrets_home / "tls" / "ca.pem")))
    return kwargs


async def _answers(broker: LocalBroker) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient  # lazily: only the CLI needs it

    admin = AIOKafkaAdminClient(request_timeout_ms=3000, **admin_kwargs(broker))
    try:
        await admin.start()
        await admin.list_topics()
        return True
    except Exception:
        return False
    finally:
        await admin.close()


def answers(broker: LocalBroker) -> bool:
    """The node's port is open and it answers the admin's metadata request."""
    return _port_open(broker.port) and asyncio.run(_answers(broker))


def _port_open(port: int) -> bool:
    # A plain connect first: aiokafka logs every refused connection as an error.
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_ready(broker: LocalBroker, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if broker.pid() is None:
            raise KafkaError(f"the broker exited during start-up; see {broker.log_file}:\n"
                             + _tail(broker.log_file))
        if answers(broker):
            return
        time.sleep(0.5)
    raise KafkaError(f"the broker did not answer within {timeout_s:.0f} s; see {broker.log_file}")


def start(broker: LocalBroker, timeout_s: float = 90.0) -> bool:
    """Start the broker unless it runs; True when this call started it."""
    if broker.pid() is not None:
        wait_ready(broker, timeout_s)
        return False
    check_ports_free(broker)
    ensure_built()
    format_storage(broker, broker.write_config())
    launch(broker)
    wait_ready(broker, timeout_s)
    return True


def check_ports_free(broker: LocalBroker) -> None:
    for port in (broker.port, broker.controller_port):
        if _port_taken(port):
            # Another process (a broker of another state directory?) would answer our
            # readiness check and take our records: say so instead of "started".
            raise KafkaError(f"127.0.0.1:{port} is already in use by a process this state "
                             f"directory ({broker.home}) did not start; stop it or choose "
                             "other ports (--kafka-port, --kafka-controller-port)")


def launch(broker: LocalBroker) -> int:
    """Start the node's JVM on its written, formatted configuration; returns its pid."""
    props = broker.home / "server.properties"
    with open(broker.home / "logs" / "stdout.log", "ab") as out:
        process = subprocess.Popen(
            broker.java("kafka.Kafka", str(props)), stdout=out, stderr=subprocess.STDOUT,
            # A session of its own: the caller's Ctrl-C is the caller's to relay.
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    broker.pid_file.write_text(str(process.pid))
    return process.pid


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def stop(broker: LocalBroker, timeout_s: float = 60.0) -> bool:
    """Stop the broker (SIGTERM, then SIGKILL after the timeout); True if it was running."""
    pid = broker.pid()
    if pid is None:
        broker.pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while broker.pid() is not None and time.monotonic() < deadline:
        time.sleep(0.2)
        reap(pid)
    if broker.pid() is not None:
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        reap(pid)
    broker.pid_file.unlink(missing_ok=True)
    return True


def reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


_SERVER_PROPERTIES = """\
# Written by `ioacct kafka start`; edit deploy/kafka or streams/kafka/local.py instead.
process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters}
listeners={listener}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners={listener}://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map={listener}:{listener},CONTROLLER:{controller_protocol}
inter.broker.listener.name={listener}
log.dirs={data}
num.partitions=1
offsets.topic.replication.factor={replicas}
offsets.topic.num.partitions=8
transaction.state.log.replication.factor={replicas}
transaction.state.log.min.isr={min_isr}
default.replication.factor={replicas}
min.insync.replicas={min_isr}
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.segment.bytes=67108864
"""

# Clients: SCRAM-SHA-512 over TLS. The controller listener (loopback, the broker's own
# quorum traffic) takes PLAIN with a password only the broker knows: no anonymous door.
# Deny by default: a principal may do only what an ACL grants (streams/kafka/users.py).
_SECURE_PROPERTIES = """\
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=\
org.apache.kafka.common.security.plain.PlainLoginModule required \
username="controller" password="{controller_password}" user_controller="{controller_password}";
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=\
org.apache.kafka.common.security.scram.ScramLoginModule required \
username="admin" password="{admin_password}";
ssl.keystore.location={tls}/broker.p12
ssl.keystore.type=PKCS12
ssl.keystore.password={store}
ssl.key.password={store}
ssl.truststore.location={tls}/trust.p12
ssl.truststore.type=PKCS12
ssl.truststore.password={store}
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin;User:controller
"""

_LOG4J = """\
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File={log}
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
"""
