"""Process control for the bench: free ports, worker subprocesses (the project's and the
naive anchor's), and the topics, offsets and lag they are measured by."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.config import REPO_ROOT, Settings
from streams.core.times import NS_PER_S
from streams.kafka.topics import TopicSpec, topic_specs

POLL_S = 0.2  # how often a worker's progress and the group's lag are polled


class BenchError(RuntimeError):
    """A measurement could not be made; the message says why."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process from /proc (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # the name may hold spaces: after it
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settings_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in vars(settings).items():
        env[f"IOACCT_{name.upper()}"] = str(value)
    env["IOACCT_BOOTSTRAP"] = settings.bootstrap_servers
    return env


@dataclass
class Proc:
    """A worker subprocess: the project's, or the naive anchor's."""

    process: subprocess.Popen[bytes]
    web_port: int
    log_path: Path
    token: str | None = None  # an operator token for the project's worker; the anchor has none

    def alive(self) -> bool:
        return self.process.poll() is None

    def get(self, path: str) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        request = urllib.request.Request(f"http://127.0.0.1:{self.web_port}{path}",
                                         headers=headers)
        with urllib.request.urlopen(request, timeout=5) as response:
            return orjson.loads(response.read())

    def cpu_seconds(self) -> float:
        """The CPU time the worker has used so far, all its threads (user + system)."""
        return cpu_seconds(self.process.pid)

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise BenchError("no VmRSS in /proc")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 3) -> None:
        """SIGTERM, then SIGKILL: nothing a benchmark worker holds needs keeping."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def spawn(args: list[str], env: dict[str, str], web_port: int, log_path: Path) -> Proc:
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, *args], env=env, cwd=REPO_ROOT,
                                   stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    return Proc(process, web_port, log_path)


def spawn_worker(settings: Settings, log_dir: Path, name: str,
                 web_port: int | None = None, token: str | None = None) -> Proc:
    """``web_port``: that port, and so that data dir (a worker started again); else a free
    one. ``token``: the operator token to read it with (a worker started again keeps its
    predecessor's, as a restarted service does: no ``token create`` on the failover path);
    else a new one."""
    port = web_port or free_port()
    env = settings_env(settings.with_overrides(web_port=port))
    if token is None:
        made = subprocess.run([sys.executable, "-m", "streams.cli", "token", "create",
                               "--operator", "--label", "bench"], env=env, cwd=REPO_ROOT,
                              capture_output=True, text=True, check=False)
        if made.returncode != 0:
            raise BenchError(f"cannot create an operator token: {made.stderr.strip()}")
        token = made.stdout.strip()
    level = os.environ.get("IOACCT_BENCH_WORKER_LOGLEVEL", "warning")  # info: where time goes
    proc = spawn(["-m", "streams.cli", "worker", "--loglevel", level], env, port,
                 log_dir / f"worker-{name}.log")
    proc.token = token
    return proc


async def create_topics(bootstrap: str, specs: Sequence[TopicSpec]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            try:
                await admin.create_topics([NewTopic(s.name, s.partitions, s.replication_factor,
                                                    topic_configs=s.config) for s in missing])
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()
    await wait_leaders(bootstrap, {s.name: s.partitions for s in specs})


async def wait_leaders(bootstrap: str, topics: dict[str, int], timeout_s: float = 30) -> None:
    """Until every partition of these topics has a leader (no retries when producing)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            await consumer._client.force_metadata_update()  # noqa: SLF001
            cluster = consumer._client.cluster  # noqa: SLF001
            if all(len(cluster.partitions_for_topic(t) or ()) == n and all(
                    (cluster.leader_for_partition(TopicPartition(t, p)) or -1) >= 0
                    for p in range(n)) for t, n in topics.items()):
                return
            await asyncio.sleep(0.2)
    finally:
        await consumer.stop()


async def pipeline_topics(settings: Settings, append_time_1s: bool = False) -> None:
    """The pipeline's topics; ``append_time_1s``: stats.1s records carry the broker's
    append time as their timestamp (latency, figure e)."""
    specs = topic_specs(settings)
    if append_time_1s:
        name = settings.stats_topic(NS_PER_S)
        specs = [replace(s, config={**s.config, "message.timestamp.type": "LogAppendTime"})
                 if s.name == name else s for s in specs]
    await create_topics(settings.bootstrap_servers, specs)


async def all_ends(consumer: AIOKafkaConsumer, topic: str) -> dict[TopicPartition, int]:
    """The end offset of every partition of ``topic``, with a started consumer."""
    await consumer._client.force_metadata_update()  # noqa: SLF001
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    return dict(await consumer.end_offsets(tps))


async def end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return await all_ends(consumer, topic)
    finally:
        await consumer.stop()


async def committed_lag(admin: AIOKafkaAdminClient, group: str,
                        ends: dict[TopicPartition, int]) -> int:
    committed = await admin.list_consumer_group_offsets(group)
    lag = 0
    for tp, end in ends.items():
        meta = committed.get(tp)
        lag += max(0, end - (meta.offset if meta is not None and meta.offset >= 0 else 0))
    return lag
