"""The chaos run (issue 5): break the pipeline while it works, then compare every number
with oracles computed from the raw topic.

On a broker of its own (127.0.0.1, free ports, a state directory of its own), with
several workers in one consumer group and several simulated hosts producing through
the SDK and its spool, one run does, at random moments while events flow:

- kill -9 a random worker, and start it again after a pause;
- stop the broker (SIGTERM, then SIGKILL on the next restart) and start it again;
- with ``--brokers 3`` (a local three-node cluster, RF 3 / min ISR 2): kill -9 the node
  leading a raw or changelog partition mid-run, and start it again after a pause;
- kill -9 a producer and start it again on the same spool directory;
- send hostile records (tests/hostile.py): random bytes (up to 1 MB), truncated Avro, another
  schema, every event rule of SEMANTICS.md section 1 broken, far-future and ancient
  times, records keyed or partitioned apart from their volume, another tenant's records
  with extreme seqs, a replay with other content, empty batches, a 1 MB record of bad
  events, and one huge valid record.

Then it waits for the workers to settle and compares, with zero tolerance:
- every volume's counters (GET /volumes/{id}/counters) with tests/oracle.py's
  counters_oracle over the events of the raw topic (each (producer_id, seq) once);
- the latest revision of every 1 s, 1 m and 1 h window on the stats topics with
  tests/window_oracle.py (a window key with two records of one revision and other
  values is a difference too: a consumer could pick either);
- the billing ledger, summed by volume and hour, with billing_oracle (a record_id
  published twice with other content is a difference);
- every hostile record in the dead-letter topic with its reason;
- every record in a killed producer's spool reaching the raw topic, and each producer
  that finished having sent exactly what it says it sent;
- no worker exiting unless killed by the run.

The events are made two hours in the past with a revision horizon of a day: the
hour windows and billing hours then all close by the end (an idle partition's
watermark moves to the wall clock), and a broker outage makes every later record
late, so revisions and billing adjustments get exercised hard.

    python -m tests.chaos --events 500000 --workers 3    # make chaos
    python -m tests.chaos --brokers 3 --leader-kills 2   # the same on a three-node cluster
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from streams.config import REPO_ROOT, Settings
from streams.core.codec import HEADER_LEN, default_schemas
from streams.core.counters import COUNTER_NAMES
from streams.core.keys import TICK_KEY
from streams.core.raw import RAW_RECORD_NAMES, RawBatch, raw_batch
from streams.core.windows.acc import WINDOW_LENGTHS_NS
from streams.kafka import cluster as kafka_cluster
from streams.kafka.security import client_kwargs
from streams.sdk.spool import Spool
from streams.sources.simulator import FleetConfig, FleetSimulator
from streams.tools.bench.catchup import CatchUpWatch, describe, distribution
from streams.tools.produce import EXIT_SPOOL_LEFT
from tests.conftest import free_port, free_port_block
from tests.hostile import HostileRound, hostile_round
from tests.integration.harness import (
    WorkerProcess,
    assigned_partitions,
    consumer_lag,
    counter_mismatches,
    ioacct,
    operator_token,
    read_topic,
    register,
    settings_env,
    start_worker,
)
from tests.oracles.counters import billing_oracle, counters_oracle
from tests.oracles.windows import windows_oracle

SCHEMAS = default_schemas()
OPS = ("read", "write", "flush", "discard")  # the IoBatch enum codes, in order
STATUSES = ("ok", "failed", "invalid")
NAMES = [name for name, _ in COUNTER_NAMES]
HUGE_EVENTS = 20_000
MAX_SHOWN = 12  # differences printed per kind


@dataclass
class ChaosPlan:
    events: int = 500_000  # planned, over all producers (the oracle counts what landed)
    workers: int = 3
    producers: int = 2
    rate: float = 1000.0  # events/s over all producers, paced in real time (issue 6: a worker
    # carries a few hundred records/s, and 2 shared cores carry everything)
    volumes: int = 60  # per producer (a simulated host of its own)
    # The producers' batch age: a worker carries a few hundred records/s today (issue 6),
    # so the hosts batch up to 1 s of a volume's events per record.
    batch_max_age_ms: int = 1000
    worker_kills: int = 6
    broker_restarts: int = 2
    producer_kills: int = 2
    hostile_rounds: int = 2
    partitions: int = 8
    seed: int = 1
    event_age_s: int = 7200
    settle_s: float = 600.0  # how long the end may take to equal the oracle
    processing_guarantee: str = "at_least_once"  # faust's; or exactly_once
    brokers: int = 1  # nodes of the local Kafka cluster (3: replicated, RF 3 / min ISR 2)
    leader_kills: int = 2  # kill -9 of a partition leader's node; only with brokers > 1


@dataclass
class ChaosReport:
    plan: ChaosPlan
    events_counted: int = 0  # distinct valid events in the raw topic
    raw_records: int = 0
    volumes: int = 0
    windows: dict[str, int] = field(default_factory=dict)
    billing_records: int = 0
    worker_kills: int = 0
    broker_restarts: int = 0
    producer_kills: int = 0
    producer_restarts: int = 0
    producer_drains: int = 0  # producers started again, without new events, on a spool left
    hostile_records: int = 0
    spool_peak_bytes: int = 0  # largest peak a producer reported
    spool_records_at_kill: list[int] = field(default_factory=list)
    # kill -> the killed worker's partitions caught up (streams/tools/bench/catchup.py)
    worker_recovery_s: list[float] = field(default_factory=list)
    worker_kill_figures: list[dict[str, Any]] = field(default_factory=list)  # per kill
    broker_recovery_s: list[float] = field(default_factory=list)  # broker up -> caught up
    leader_kills: int = 0
    leader_election_s: list[float] = field(default_factory=list)  # kill -> a new leader
    leader_recovery_s: list[float] = field(default_factory=list)  # kill -> caught up
    producer_summaries: list[str] = field(default_factory=list)
    settle_s: float = 0.0
    run_s: float = 0.0
    log: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.log.append(f"{stamp} {line}")
        print(f"[chaos {stamp}] {line}", flush=True)

    def lines(self) -> list[str]:
        def figures(values: list[float]) -> str:
            if not values:
                return "none"
            return (f"{len(values)}: min {min(values):.1f} s, median "
                    f"{sorted(values)[len(values) // 2]:.1f} s, max {max(values):.1f} s")

        return [
            f"events counted: {self.events_counted:,} in {self.raw_records:,} raw records "
            f"({self.volumes} volumes); run {self.run_s:.0f} s, then {self.settle_s:.0f} s "
            "to settle",
            "windows compared: " + ", ".join(f"{k} {v:,}" for k, v in self.windows.items())
            + f"; billing records {self.billing_records:,}",
            f"worker kills (-9): {self.worker_kills}; broker restarts: {self.broker_restarts}; "
            f"producer kills (-9): {self.producer_kills} (restarts {self.producer_restarts}; "
            f"started again to drain a spool left at exit: {self.producer_drains}); "
            f"hostile records: {self.hostile_records}",
            f"spool: peak {self.spool_peak_bytes:,} bytes (largest a producer reported); "
            f"records in a killed producer's spool: {self.spool_records_at_kill}",
            f"worker kill -9 to its partitions caught up (docs/chaos.md, \"Failover\"): "
            f"{describe(self.worker_recovery_s)}",
            *[f"  kill {n}: worker {k['port']}, partitions {k['partitions']}: resumed after "
              f"{_s(k['resumed_s'])}, caught up after {_s(k['caught_up_s'])} (every record "
              f"there at the kill committed after {_s(k['all_at_kill_s'])}; behind by "
              f"{_s(k['behind_before_s'])} before the kill; {k['arrived']} records arrived)"
              for n, k in enumerate(self.worker_kill_figures, 1)],
            f"broker recovery (broker up to every record there then committed): "
            f"{figures(self.broker_recovery_s)}",
            f"leader kills (-9, {self.plan.brokers} brokers): {self.leader_kills}; new leader "
            f"after {figures(self.leader_election_s)}; caught up after "
            f"{figures(self.leader_recovery_s)}",
            f"DIFFERENCES: {len(self.differences)}",
            *[f"  {d}" for d in self.differences[:60]],
        ]


@dataclass
class Producer:
    index: int
    spool_dir: Path
    events: int
    start_ns: int
    process: subprocess.Popen[bytes] | None = None
    out_path: Path | None = None
    started: float = 0.0
    incarnation: int = 0


class ChaosRun:
    def __init__(self, plan: ChaosPlan, workdir: Path) -> None:
        self.plan = plan
        self.workdir = workdir
        self.rng = random.Random(plan.seed)
        port = free_port_block(2 * plan.brokers)
        self.settings = Settings.from_env(
            kafka_port=port, kafka_controller_port=port + 1, kafka_brokers=plan.brokers,
            bootstrap=",".join(f"127.0.0.1:{port + 2 * i}" for i in range(plan.brokers)),
            state_dir=workdir / "state",
            partitions=plan.partitions, topic_prefix="chaos",
            revision_horizon_s=24 * 3600, batch_max_age_ms=plan.batch_max_age_ms,
            processing_guarantee=plan.processing_guarantee,
        )
        self.cluster = kafka_cluster.LocalCluster.from_settings(self.settings)
        self.report = ChaosReport(plan)
        self.ports = [free_port() for _ in range(plan.workers)]
        self.workers: dict[int, WorkerProcess] = {}
        self.down: set[int] = set()  # workers the run killed and has not restarted yet
        self.incarnations: dict[int, int] = dict.fromkeys(self.ports, 0)
        self.producers: list[Producer] = []
        self.spool_snapshots: list[tuple[str, int, bytes]] = []  # (producer_id, seq, value)
        self.hostile_sent: list[tuple[HostileRound, list[tuple[int, int]]]] = []

    # -- processes --------------------------------------------------------------------

    def start_worker(self, port: int) -> None:
        self.incarnations[port] += 1
        log_dir = self.workdir / "logs" / f"run-{self.incarnations[port]}"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.workers[port] = start_worker(self.settings, port, log_dir)

    def start_producer(self, producer: Producer, events: int, start_ns: int) -> None:
        producer.incarnation += 1
        producer.out_path = self.workdir / "logs" / (
            f"producer-{producer.index}-{producer.incarnation}.out")
        producer.out_path.parent.mkdir(parents=True, exist_ok=True)
        per_producer_rate = self.plan.rate / self.plan.producers
        with open(producer.out_path, "wb") as out:
            producer.process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "produce", "--sim",
                 "--events", str(events), "--rate", str(per_producer_rate),
                 "--volumes", str(self.plan.volumes), "--tenants", "10",
                 "--seed", str(self.plan.seed * 100 + producer.index),
                 "--volume-prefix", f"vol-h{producer.index}-", "--start-ns", str(start_ns),
                 "--spool-dir", str(producer.spool_dir), "--no-register"],  # registered first
                env=settings_env(self.settings), cwd=REPO_ROOT, stdout=out,
                stderr=subprocess.STDOUT)
        producer.started = time.monotonic()
        producer.events, producer.start_ns = events, start_ns

    def check_workers(self) -> None:
        """A worker that exited without being killed by the run is a difference: restart
        it, so the run still ends and shows what else goes wrong."""
        for port, worker in list(self.workers.items()):
            if port in self.down:
                continue
            code = worker.process.poll()
            if code is not None:
                self.report.differences.append(
                    f"worker {port} exited by itself with {code}:\n{worker.log_tail(30)}")
                self.report.say(f"worker {port} EXITED BY ITSELF ({code}); restarting it")
                self.start_worker(port)

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.check_workers()
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def wait(self, condition: Callable[[], Any], timeout_s: float, what: str) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_workers()
            try:
                if condition():
                    return True
            except Exception:  # noqa: BLE001 (a worker restarting, the broker away)
                pass
            time.sleep(0.5)
        self.report.differences.append(f"timed out after {timeout_s:.0f} s: {what}")
        self.report.say(f"TIMED OUT: {what}")
        self.dump_worker_stacks()
        return False

    def dump_worker_stacks(self) -> None:
        """SIGUSR1 makes a faust (mode) worker print every thread's and asyncio task's
        stack to its log: what a stalled worker is waiting on, for the report's reader."""
        for port, worker in self.workers.items():
            if port not in self.down and worker.process.poll() is None:
                os.kill(worker.process.pid, signal.SIGUSR1)
                self.report.say(f"worker {port}: stacks dumped to {worker.log_path}")

    def lag_of(self, ends: dict[Any, int]) -> int:
        return asyncio.run(consumer_lag(self.settings, self.settings.raw_topic,
                                        self.settings.app_id, ends))[0]

    def raw_ends(self) -> dict[Any, int]:
        return asyncio.run(consumer_lag(self.settings, self.settings.raw_topic,
                                        self.settings.app_id))[1]

    def caught_up_after(self, since: float, what: str, timeout_s: float = 240) -> float | None:
        """Seconds from ``since`` until the group committed every raw record there now."""
        ends: dict[Any, int] = {}

        def take_ends() -> bool:
            ends.update(self.raw_ends())
            return True

        self.wait(take_ends, 60, f"the raw topic's end offsets ({what})")
        if self.wait(lambda: self.lag_of(ends) == 0, timeout_s, f"catching up after {what}"):
            return time.monotonic() - since
        return None

    # -- the chaos actions --------------------------------------------------------------

    def kill_worker(self) -> None:
        port = self.rng.choice(self.ports)
        worker = self.workers[port]
        watch = CatchUpWatch(self.settings, self._owned(worker))
        watch.start()
        self.down.add(port)
        os.kill(worker.process.pid, signal.SIGKILL)
        watch.killed()
        worker.process.wait()
        self.report.worker_kills += 1
        pause = self.rng.uniform(1.0, 5.0)
        self.report.say(f"kill -9 worker {port} (partitions {watch.partitions}); restarting "
                        f"it in {pause:.1f} s")
        self.sleep(pause)
        self.start_worker(port)
        self.down.discard(port)
        deadline = time.monotonic() + 300
        while not watch.done() and time.monotonic() < deadline:
            self.sleep(0.5)
        watch.stop()
        self._note_kill(port, watch)
        self.wait(lambda: assigned_partitions(list(self.workers.values()))
                  == list(range(self.plan.partitions)), 180,
                  f"every partition assigned after restarting worker {port}")
        # Before the next action: the whole group settled, not only the killed worker's part.
        self.caught_up_after(time.monotonic(), f"killing worker {port}")

    def _owned(self, worker: WorkerProcess) -> list[int]:
        """The raw partitions ``worker`` owns now (every partition if it cannot say)."""
        try:
            status, body = worker.get("/status")
            if status == 200 and body.get("assigned_partitions"):
                return sorted(body["assigned_partitions"])
        except Exception:  # noqa: BLE001 (restarting: then it owns nothing we could name)
            pass
        return list(range(self.plan.partitions))

    def _note_kill(self, port: int, watch: CatchUpWatch) -> None:
        got = watch.result()
        self.report.worker_kill_figures.append({"port": port, **got.as_dict()})
        if got.caught_up_s is None:  # a figure missing, not a count wrong: not a difference
            self.report.say(f"worker {port}'s partitions {got.partitions} not caught up "
                            f"within the watch ({watch.error or 'timed out'})")
            return
        if got.arrived:  # a kill while nothing arrived measures nothing: not in the figures
            self.report.worker_recovery_s.append(got.caught_up_s)
        self.report.say(f"worker {port}: its partitions resumed {got.resumed_s:.1f} s, "
                        f"caught up {got.caught_up_s:.1f} s after the kill ({got.arrived} "
                        "records arrived meanwhile)")

    def restart_broker(self) -> None:
        hard = self.report.broker_restarts % 2 == 0  # kill -9 first, then SIGTERM, ...
        pause = self.rng.uniform(2.0, 8.0)
        self.report.say(f"broker {'kill -9' if hard else 'stop'}; down for {pause:.1f} s")
        if hard:  # every node at once: the whole cluster crashes
            for node in self.cluster.nodes:
                if node.pid() is not None:
                    kafka_cluster.kill_node(self.cluster, node.node_id)
                node.pid_file.unlink(missing_ok=True)
        else:
            kafka_cluster.stop(self.cluster)
        self.sleep(pause)
        kafka_cluster.start(self.cluster)
        up_at = time.monotonic()
        self.report.broker_restarts += 1
        took = self.caught_up_after(up_at, "the broker restart")
        if took is not None:
            self.report.broker_recovery_s.append(took)
            self.report.say(f"broker back; group caught up {took:.1f} s after it was up")

    def kill_leader(self) -> None:
        """kill -9 the node leading a raw partition, then (next time) a changelog one."""
        topic = (f"{self.settings.app_id}-counters-changelog" if self.report.leader_kills % 2
                 else self.settings.raw_topic)
        partition = self.rng.randrange(self.plan.partitions)
        leader = asyncio.run(kafka_cluster.partition_leader(self.cluster, topic, partition))
        pause = self.rng.uniform(2.0, 8.0)
        self.report.say(f"kill -9 node {leader}, leader of {topic}[{partition}]; "
                        f"down for {pause:.1f} s")
        killed_at = time.monotonic()
        kafka_cluster.kill_node(self.cluster, leader)
        if self.wait(lambda: asyncio.run(kafka_cluster.partition_leader(
                self.cluster, topic, partition)) not in (leader, -1), 120, "a new leader"):
            self.report.leader_election_s.append(time.monotonic() - killed_at)
        self.sleep(max(0.0, killed_at + pause - time.monotonic()))
        kafka_cluster.restart_node(self.cluster, leader)
        self.report.leader_kills += 1
        took = self.caught_up_after(killed_at, "the leader kill")
        if took is not None:
            self.report.leader_recovery_s.append(took)
            self.report.say(f"node {leader} back; group caught up {took:.1f} s after the kill")

    def kill_producer(self) -> None:
        alive = [p for p in self.producers if p.process and p.process.poll() is None]
        if not alive:
            self.report.say("no producer left to kill")
            return
        producer = self.rng.choice(alive)
        assert producer.process is not None
        os.kill(producer.process.pid, signal.SIGKILL)
        producer.process.wait()
        elapsed = time.monotonic() - producer.started
        self.report.producer_kills += 1
        spool = Spool(producer.spool_dir, self.settings.spool_max_bytes)
        try:
            entries = spool.read(10**9, 1 << 40)
        finally:
            spool.abandon()
        for entry in entries:
            if entry.topic == self.settings.raw_topic:
                record = SCHEMAS.decode(entry.value)[1]  # IoBatch or IoBatch2
                self.spool_snapshots.append((record["producer_id"], record["seq"], entry.value))
        self.report.spool_records_at_kill.append(len(entries))
        done = int(elapsed * self.plan.rate / self.plan.producers)
        rest = max(1000, producer.events - done)
        self.report.say(f"kill -9 producer {producer.index} after {elapsed:.0f} s "
                        f"({len(entries)} record(s) in its spool); restarting it for "
                        f"{rest} more events")
        self.sleep(self.rng.uniform(0.5, 3.0))
        self.start_producer(producer, rest, producer.start_ns + int(elapsed * 1e9))
        self.report.producer_restarts += 1

    def fleet_volumes(self) -> list[tuple[str, str]]:
        """Every (volume, tenant) the producers and the hostile rounds count on (the
        hostile rounds' unregistered volume stays unregistered)."""
        plan = self.plan
        pairs = [(v.volume_id, v.tenant_id) for index in range(plan.producers)
                 for v in FleetSimulator(FleetConfig(
                     seed=plan.seed * 100 + index, volumes=plan.volumes, tenants=10,
                     volume_prefix=f"vol-h{index}-")).volumes]
        return pairs + list(hostile_round(0, "x", plan.partitions).registrations.items())

    def send_hostile(self) -> None:
        n = len(self.hostile_sent)
        # Good events of the hostile rounds are as old as the producers' (their hours close).
        round_ = hostile_round(seed=100 + n, producer_id=f"hostile-{n}",
                               partitions=self.settings.partitions,
                               huge_events=HUGE_EVENTS if n == 0 else 0,
                               at_ns=time.time_ns() - self.plan.event_age_s * 10**9)
        positions = asyncio.run(self._send(round_))
        self.hostile_sent.append((round_, positions))
        self.report.hostile_records += len(round_.values)
        self.report.say(f"sent {len(round_.values)} hostile records (round {n})")

    async def _send(self, round_: HostileRound) -> list[tuple[int, int]]:
        producer = AIOKafkaProducer(**client_kwargs(self.settings),
                                    enable_idempotence=True, max_request_size=8 << 20)
        await producer.start()
        try:
            out = []
            for value, key, partition in zip(round_.values, round_.keys, round_.partitions,
                                             strict=True):
                meta = await producer.send_and_wait(self.settings.raw_topic, value=value,
                                                    key=key, partition=partition)
                out.append((meta.partition, meta.offset))
            return out
        finally:
            await producer.stop()

    # -- the run ----------------------------------------------------------------------

    def run(self) -> ChaosReport:
        started = time.monotonic()
        kafka_cluster.start(self.cluster)
        try:
            self._run()
        finally:
            for worker in self.workers.values():
                worker.stop()
            for producer in self.producers:
                if producer.process and producer.process.poll() is None:
                    producer.process.kill()
                    producer.process.wait()
            kafka_cluster.stop(self.cluster)
        self.report.run_s = time.monotonic() - started - self.report.settle_s
        return self.report

    def _run(self) -> None:
        plan, report = self.plan, self.report
        assert ioacct(self.settings, "topics").returncode == 0
        operator_token(self.settings)
        for port in self.ports:
            self.start_worker(port)
        self.wait(lambda: assigned_partitions(list(self.workers.values()))
                  == list(range(plan.partitions))
                  and all(w.get("/status")[1].get("assigned_partitions")
                          for w in self.workers.values()),
                  180, f"{plan.workers} workers to share every partition")
        report.say(f"broker {self.settings.bootstrap_servers}, {plan.workers} workers on "
                   f"ports {self.ports}; state in {self.workdir}")
        start_ns = time.time_ns() - plan.event_age_s * 10**9
        per_producer = plan.events // plan.producers
        register(self.settings, self.fleet_volumes())  # as the operator would, before any I/O
        for index in range(plan.producers):
            producer = Producer(index, self.workdir / "spool" / f"p{index}", per_producer,
                                start_ns)
            self.producers.append(producer)
            self.start_producer(producer, per_producer, start_ns)
        duration = plan.events / plan.rate
        actions = (["worker"] * plan.worker_kills + ["broker"] * plan.broker_restarts
                   + ["producer"] * plan.producer_kills + ["hostile"] * plan.hostile_rounds
                   + ["leader"] * (plan.leader_kills if plan.brokers > 1 else 0))
        self.rng.shuffle(actions)
        # Producer kills first, then a broker restart (so producers spool through it):
        # every action waits for the group to catch up, so later ones may come after the
        # producers have finished.
        actions.sort(key=lambda a: a != "producer")
        if "broker" in actions:
            actions.remove("broker")
            actions.insert(actions.count("producer"), "broker")
        times = sorted(self.rng.uniform(0.05, 0.85) * duration for _ in actions)
        t0 = time.monotonic()
        report.say(f"{len(self.producers)} producers, {plan.events:,} events planned over "
                   f"~{duration:.0f} s; actions: {actions}")
        do = {"worker": self.kill_worker, "broker": self.restart_broker,
              "producer": self.kill_producer, "hostile": self.send_hostile,
              "leader": self.kill_leader}
        for at, action in zip(times, actions, strict=True):
            self.sleep(max(0.0, t0 + at - time.monotonic()))
            do[action]()
        self._wait_producers()
        settle_started = time.monotonic()
        self.caught_up_after(settle_started, "the end of production", 600)
        self._compare(settle_started)
        report.settle_s = time.monotonic() - settle_started

    def _wait_producers(self) -> None:
        for producer in self.producers:
            assert producer.process is not None and producer.out_path is not None
            left = producer.events / (self.plan.rate / self.plan.producers)
            timeout = max(60.0, left - (time.monotonic() - producer.started) + 180)
            if not self.wait(lambda p=producer: p.process.poll() is not None, timeout,  # type: ignore[misc]
                             f"producer {producer.index} to finish"):
                continue
            out = producer.out_path.read_text(errors="replace")
            self.report.producer_summaries.append(out)
            if producer.process.returncode == EXIT_SPOOL_LEFT:
                # Its close gave up on Kafka (the broker down longer than the spool's close
                # wait) and kept the rest in its spool: what a supervisor does next is start
                # the producer again on that spool, which sends it first. Then nothing else.
                self.report.producer_drains += 1
                self.report.say(f"producer {producer.index} left records in its spool; "
                                "starting it again on the spool, with no new events")
                self.start_producer(producer, 0, producer.start_ns)
                self.wait(lambda p=producer: p.process.poll() is not None, 180,  # type: ignore[misc]
                          f"producer {producer.index} to drain its spool")
                out = producer.out_path.read_text(errors="replace")
                self.report.producer_summaries.append(out)
            if producer.process.returncode != 0:
                self.report.differences.append(
                    f"producer {producer.index} exited with {producer.process.returncode}:\n"
                    f"{out[-2000:]}")
            peak = re.search(r"peak (\d+) bytes", out)
            if peak:
                self.report.spool_peak_bytes = max(self.report.spool_peak_bytes,
                                                   int(peak.group(1)))
            lines = out.strip().splitlines()
            self.report.say(f"producer {producer.index} done: "
                            + " / ".join(lines[:1] + lines[-3:]))

    # -- the comparison ---------------------------------------------------------------

    def _compare(self, settle_started: float) -> None:
        """Poll until everything equals the oracle or ``settle_s`` passes; the
        differences of the last poll are the run's."""
        report = self.report
        raw = asyncio.run(read_topic(self.settings, self.settings.raw_topic, idle_s=3.0))
        events, found = self._oracle_events(raw)
        report.raw_records = sum(1 for m in raw if m.key != TICK_KEY)
        report.events_counted = len(events)
        expected = {
            "counters": counters_oracle(events),
            "billing": {k: {n: row[n] for n in NAMES}
                        for k, row in billing_oracle(events).items()},
            **{f"{n // 10**9}s": windows_oracle(events, n) for n in WINDOW_LENGTHS_NS},
        }
        report.volumes = len(expected["counters"])
        report.windows = {k: len(v) for k, v in expected.items() if k.endswith("s")
                          and k != "counters"}
        fixed = self._producer_differences(found) + self._dead_letter_differences()
        diffs: list[str] = []
        deadline = settle_started + self.plan.settle_s
        while True:
            self.check_workers()
            try:
                diffs = self._output_differences(expected)
            except Exception as exc:  # noqa: BLE001 (a read failed: try again)
                diffs = [f"reading the outputs failed: {exc!r}"]
            if not diffs or time.monotonic() > deadline:
                break
            report.say(f"{len(diffs)} difference(s) so far, e.g. {diffs[0][:200]}; waiting")
            time.sleep(10)
        report.differences += fixed + diffs

    def _oracle_events(self, raw: list[Any]) -> tuple[list[dict[str, Any]], set[tuple[str, int]]]:
        """Every event the raw topic holds that must count: each producer record once per
        (producer_id, seq), and the good events of the hostile rounds."""
        hostile_at = {pos for _, positions in self.hostile_sent for pos in positions}
        seen: set[tuple[str, int]] = set()
        events: list[dict[str, Any]] = []
        tick_header = SCHEMAS.headers["Tick"]
        for message in raw:
            if (message.partition, message.offset) in hostile_at:
                continue
            if message.key == TICK_KEY and message.value[:HEADER_LEN] == tick_header:
                continue
            name, record = SCHEMAS.decode(message.value)
            if name not in RAW_RECORD_NAMES:
                self.report.differences.append(f"unexpected {name} record in the raw topic")
                continue
            key = (record["producer_id"], record["seq"])
            if key in seen:
                continue
            seen.add(key)
            events += _plain_events(raw_batch(name, record))
        for round_, _ in self.hostile_sent:
            events += round_.good
        return events, seen

    def _producer_differences(self, found: set[tuple[str, int]]) -> list[str]:
        diffs = [f"record {pid}/{seq} was in a killed producer's spool but never reached "
                 "the raw topic" for pid, seq, _ in self.spool_snapshots
                 if (pid, seq) not in found]
        for out in self.report.producer_summaries:
            sent = re.search(r"sent (\d+) events", out)
            pid = re.search(r"producer id: (\S+)", out)
            if not (sent and pid):
                diffs.append(f"a producer's summary lacks its figures:\n{out[-1000:]}")
        return diffs

    def _dead_letter_differences(self) -> list[str]:
        """Every hostile record dead-lettered with its reason: a record rejected whole by
        one dead letter without event indexes, a record's bad events by one listing them
        (a worker killed after publishing but before committing may make one again)."""
        dead = [SCHEMAS.decode(m.value, expect="DeadLetter")[1] for m in asyncio.run(
            read_topic(self.settings, self.settings.dlq_topic, idle_s=2.0))]
        by_position: dict[tuple[int, int], list[dict[str, Any]]] = {}
        for record in dead:
            key = (record["source_partition"], record["source_offset"])
            by_position.setdefault(key, []).append(record)
        diffs = []
        for round_, positions in self.hostile_sent:
            for index, reason in round_.whole_reasons.items():
                got = [r["reason"] for r in by_position.get(positions[index], [])
                       if not r["event_indexes"]]
                if not any(reason in r for r in got):
                    diffs.append(f"hostile record at {positions[index]}: want '{reason}' in "
                                 f"the dead-letter topic, found {got}")
            for index, reasons in round_.event_reasons.items():
                listed = [dict(zip(r["event_indexes"], r["event_reasons"], strict=True))
                          for r in by_position.get(positions[index], [])
                          if r["events"] == round_.bad_events[index]]
                for event_index, reason in reasons.items():
                    got = [one.get(event_index, "") for one in listed]
                    if not any(reason in r for r in got):
                        diffs.append(f"hostile event {event_index} of {positions[index]}: "
                                     f"want '{reason}', found {got}")
        return diffs

    def _output_differences(self, expected: dict[str, Any]) -> list[str]:
        diffs: list[str] = []
        worker = next(iter(self.workers.values()))
        mismatches = counter_mismatches(worker, expected["counters"])
        diffs += [f"counters {m}" for m in mismatches[:MAX_SHOWN]]
        if len(mismatches) > MAX_SHOWN:
            diffs.append(f"... {len(mismatches) - MAX_SHOWN} more counter differences")
        for n in WINDOW_LENGTHS_NS:
            name = f"{n // 10**9}s"
            got, conflicts = self._latest_windows(n)
            diffs += [f"{name} window {k}: two records of revision {r} with other values"
                      for k, r in conflicts[:MAX_SHOWN]]
            diffs += _dict_differences(f"{name} window", expected[name], got)
        ledger, conflicts = self._ledger()
        diffs += [f"billing record {k} published twice with other content"
                  for k in conflicts[:MAX_SHOWN]]
        diffs += _dict_differences("billing hour", expected["billing"], ledger)
        return diffs

    def _latest_windows(self, length_ns: int) -> tuple[dict[Any, Any], list[Any]]:
        latest: dict[tuple[str, int], dict[str, Any]] = {}
        conflicts = []
        for message in asyncio.run(read_topic(self.settings, self.settings.stats_topic(length_ns),
                                              idle_s=2.0)):
            if message.key.startswith(b"~"):  # a watermark marker, not a window
                continue
            record = SCHEMAS.decode(message.value, expect="WindowStats")[1]
            key = (record["volume_id"], record["window_start_ns"])
            previous = latest.get(key)
            if previous is not None and previous["revision"] == record["revision"] and (
                    previous != record):
                conflicts.append((key, record["revision"]))
            if previous is None or record["revision"] >= previous["revision"]:
                latest[key] = record
        return {k: {f: v for f, v in w.items() if f != "revision"}
                for k, w in latest.items()}, conflicts

    def _ledger(self) -> tuple[dict[Any, Any], list[str]]:
        by_id: dict[str, dict[str, Any]] = {}
        conflicts = []
        for message in asyncio.run(read_topic(self.settings, self.settings.billing_topic,
                                              idle_s=2.0)):
            record = SCHEMAS.decode(message.value, expect="BillingRecord")[1]
            previous = by_id.get(record["record_id"])
            if previous is not None and previous != record:
                conflicts.append(record["record_id"])
            by_id[record["record_id"]] = record
        self.report.billing_records = len(by_id)
        sums: dict[tuple[str, int], dict[str, int]] = {}
        for record in by_id.values():
            row = sums.setdefault((record["volume_id"], record["hour_start_ns"]),
                                  dict.fromkeys(NAMES, 0))
            for name in NAMES:
                row[name] += record[name]
        return sums, conflicts


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f} s"


def _dict_differences(what: str, want: dict[Any, Any], got: dict[Any, Any]) -> list[str]:
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    wrong = [k for k in want if k in got and got[k] != want[k]]
    out = [f"{what} {k} missing" for k in missing[:MAX_SHOWN]]
    out += [f"{what} {k} published but not in the oracle" for k in extra[:MAX_SHOWN]]
    for k in wrong[:MAX_SHOWN]:
        fields_ = {f: (got[k].get(f), v) for f, v in want[k].items() if got[k].get(f) != v}
        out.append(f"{what} {k} differs (got, want): {fields_}")
    hidden = len(missing) + len(extra) + len(wrong) - len(out)
    if hidden > 0:
        out.append(f"... {hidden} more {what} differences "
                   f"({len(missing)} missing, {len(extra)} extra, {len(wrong)} wrong)")
    return out


def run_chaos(plan: ChaosPlan, workdir: Path) -> ChaosReport:
    return ChaosRun(plan, workdir).run()


def main(argv: list[str] | None = None) -> int:
    defaults = ChaosPlan()
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--workdir", type=Path, help="state and logs (default: a new "
                        "directory under .state/chaos)")
    parser.add_argument("--json", type=Path, help="also write the report here as JSON")
    args = parser.parse_args(argv)
    # The run's own clients: a node killed on purpose makes every refused connect an ERROR.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    plan = ChaosPlan(**{k: getattr(args, k) for k in asdict(defaults)})
    base = REPO_ROOT / ".state" / "chaos"
    base.mkdir(parents=True, exist_ok=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="run-", dir=base))
    report = run_chaos(plan, workdir)
    print("\n".join(["", "chaos run: " + json.dumps(asdict(plan)), *report.lines()]))
    if args.json:
        data = {**asdict(report),
                "worker_recovery_distribution_s": distribution(report.worker_recovery_s)}
        args.json.write_text(json.dumps(data, indent=2, default=str))
    return 1 if report.differences else 0



def _plain_events(raw: RawBatch) -> list[dict[str, Any]]:
    """A raw record's events in the canonical JSON form the oracles read."""
    cols = raw.columns
    return [{"volume_id": cols.volumes[v], "tenant_id": cols.tenants[v], "host_id": raw.host_id,
             "op": OPS[op], "status": STATUSES[status], "offset": offset, "bytes": nbytes,
             "submit_ns": submit, "complete_ns": complete}
            for v, op, status, offset, nbytes, submit, complete in zip(
                cols.volume.tolist(), cols.op.tolist(), cols.status.tolist(),
                raw.offset.tolist(), cols.nbytes.tolist(), cols.submit_ns.tolist(),
                cols.complete_ns.tolist(), strict=True)]


if __name__ == "__main__":
    sys.exit(main())
