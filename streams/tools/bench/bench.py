"""`ioacct bench`: the throughput, latency and memory figures, in one run.

Starts a broker of its own (free ports, a temporary state directory; stopped at
the end), gives every measurement its own topic prefix, and prints one table
(or, with ``--json``, one JSON object). What each figure measures:

(a) anchor, naive Faust: a minimal Faust app of our own (``naive.naive_app``),
    one JSON Kafka record per event, an agent that updates a table entry (a dict of
    counters per volume) for every event. Events are produced beforehand, the worker
    runs as a subprocess.
(b) anchor, plain Avro: the same events in the same records as (c), but each record
    a plain Avro array of event records (SEMANTICS.md section 1, the obvious layout),
    read by a plain aiokafka consumer loop that decodes them with fastavro and does
    nothing else. In-process.
(c) the project's worker (``ioacct worker`` subprocess) over a backlog produced
    beforehand with the producer SDK: consume, validate, counters, 1 s/1 m/1 h
    windows, billing, publish, commit.
(d) the producer SDK: ns per ``record()`` call (buffering only), and events/s into
    Kafka from one process (record + flush, acks=all).
(e) latency from the end of a 1 s window (= the completion of its last event) to the
    append of its record on ``stats.1s``, with simulated events sent in real time.
(f) worker RSS per active volume, from 100 to 100,000 volumes (``--max-volumes``).
(g) how (c) and (f) change with the number of volumes and with the batch size.
(h), (i) anchors, Kafka Streams and quix-streams: the first of (b)'s events as layout-2
    records, per-volume 1 s event-time windows (count, bytes, latency sum/min/max) to a
    topic; subprocesses timed by their consumer group, output checked (anchors.py).
(j) steady state (``steady.py``): a worker carrying a live fleet past a scaled-down
    revision horizon and 1 s retention: RSS over time, bytes per stored 1 s window on disk
    and in the changelog.
(k) failover (``failover.py``): two workers carrying half of (c)'s rate (as (e)); one
    killed -9 a few times and started again; kill to its partitions caught up, per kill.

Rates are timed from the last moment the worker had processed nothing (polled every
0.2 s) until the group's committed offsets reach the end of what was produced before
it started; the (g) batch-size points over a few seconds of a longer backlog. Never use
these numbers as test thresholds: the machine is shared. docs/performance.md has a run
and what its profile showed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from streams.config import Settings
from streams.core.events import IoEvent
from streams.core.times import NS_PER_S
from streams.core.windows.warm import warm_up
from streams.kafka import local as kafka_local
from streams.kafka.topics import TopicSpec
from streams.sources.simulator import FleetConfig
from streams.tools.bench.anchors import ANCHOR_NAMES, anchor_bench
from streams.tools.bench.failover import FailoverPlan, failover_run
from streams.tools.bench.floor import floor_run
from streams.tools.bench.latency import latency_run
from streams.tools.bench.naive import naive_run
from streams.tools.bench.procs import BenchError, create_topics, free_port, pipeline_topics
from streams.tools.bench.profile import summarize_profile
from streams.tools.bench.report import f_report_of, render, render_f, report_of
from streams.tools.bench.runs import (
    inprocess_rate,
    plain_avro_consume,
    record_call_ns,
    sdk_to_kafka,
    worker_run,
)
from streams.tools.bench.steady import SteadyPlan, steady_run, steady_settings
from streams.tools.bench.workloads import (
    DISABLED_AGE_MS,
    PlainAvroProducer,
    block_events,
    produce_backlog,
    simulated_events,
)


@dataclass(frozen=True)
class Plan:
    """How big each measurement is."""

    main_volumes: int = 1000
    # (c) again with the same fleet rate over fewer and more volumes: the cost should stay
    # flat (issue 17: (c) at 100,000 >= 0.8 x (c) at 1,000).
    c_volume_points: tuple[int, ...] = (100, 100_000)
    # (c) again with main_volumes sending this many events/s in all (the target's own
    # rate): what one worker carries of a fleet that busy, whose records are bigger
    # (worker_by_fleet_rate). Reported, not a target. Over this many times (c)'s events:
    # it runs about twice as fast, and a short run is mostly its last commit.
    c_fleet_rates: tuple[float, ...] = (1_000_000.0,)
    c_fleet_events_factor: float = 2.0
    # (c) again this many times, each over a backlog of its own, right after the first
    # run: (c) is the median of all its runs. The same code's CPU per event moved between
    # ~1.45 and ~2.1 µs from one run to the next on this machine (docs/performance.md,
    # session 29), for minutes at a time: one run's (c) says as much of the machine as
    # of the worker.
    c_repeats: int = 2
    # The fleet whose records (b) and (c) read: main_volumes Zipf volumes sending this many
    # events/s in all, batched by the SDK's defaults (a record per partition and host per
    # flush, at 16384 buffered events or 100 ms of the events' own time).
    fleet_rate: float = 100_000.0
    worker_min_s: float = 20.0  # (c) runs at least this long
    # ... and over at least this many events: the 4 s sizing run can read low (144,000
    # events/s in session 24's whole run, whose (c) then did 372,000 until processed),
    # and a short run is much its last commit, a wait of ~1-5 s (that (c): 14 s, 5 s
    # of it that wait).
    c_min_events: int = 6_000_000
    calib_events: int = 30_000
    calib_window_s: float = 4.0  # the short worker run that sizes (c); 0: guess instead
    worker_factor_guess: float = 0.3  # worker rate / in-process rate, without that run
    b_min_events: int = 300_000
    naive_events: int = 8_000
    record_events: int = 200_000
    kafka_events: int = 200_000
    latency_s: float = 15.0
    volume_points: tuple[int, int] = (100, 100_000)  # the (f) target is at 100,000
    events_per_volume_record: int = 4
    batch_points: tuple[int, ...] = (1, 16, 256, 4096)
    batch_volumes: int = 16
    point_s: float = 4.0  # work per (g) point
    anchor_events: tuple[int, int] = (2_000_000, 200_000)  # (h), (i): at most, of (b)'s events
    steady: SteadyPlan = field(default_factory=SteadyPlan)  # (j)
    failover: FailoverPlan = field(default_factory=FailoverPlan)  # (k)


FULL = Plan()
ONLY_F_RECORDS_PER_S = 200.0  # sizes (f)'s low point when no worker run measured it
QUICK = Plan(worker_min_s=2.0, c_min_events=0, c_repeats=0, calib_events=3_000,
             calib_window_s=0,
             b_min_events=20_000, naive_events=300, record_events=20_000,
             kafka_events=20_000, latency_s=6.0,
             volume_points=(100, 1_000), batch_points=(1, 256), batch_volumes=4, point_s=1.0,
             anchor_events=(20_000, 5_000),
             steady=SteadyPlan(horizon_s=5, duration_s=20.0),
             failover=FailoverPlan(kills=1, settle_s=5.0))


@dataclass
class Bench:
    """One run of every measurement, each on topics of its own; the figures, the (g)
    points and what the report says about how they were made."""

    base: Settings
    plan: Plan
    log_dir: Path
    profile: Path | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    figures: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    points: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    progress: Callable[[str], None] = lambda _: None

    def settings(self, name: str, **overrides: Any) -> Settings:
        return self.base.with_overrides(topic_prefix=f"b{self.run_id}{name}", **overrides)

    def step(self, text: str) -> None:
        self.progress(f"[{time.strftime('%H:%M:%S')}] {text}")

    def main_events(self, count: int) -> list[IoEvent]:
        """The fleet of (b) and (c), its last event about now."""
        return simulated_events(self.plan.main_volumes, count, self.plan.fleet_rate,
                                time.time_ns())

    async def run(self) -> None:
        plan = self.plan
        self.step("calibrating in-process")
        calib = self.main_events(plan.calib_events)
        inprocess = inprocess_rate(calib, self.base.batch_max_events, self.base.batch_max_age_ms)
        self.info["inprocess_events_per_s"] = inprocess
        worker_rate = await self.calibrate_worker(inprocess)
        n_c = max(1, plan.c_min_events, int(worker_rate * plan.worker_min_s * 1.2))
        n_b = max(n_c, plan.b_min_events)
        self.step(f"simulating {n_b:,} events for (b), the first {n_c:,} of them for (c)")
        started = time.perf_counter()
        events = self.main_events(n_b)
        sim_rate = n_b / (time.perf_counter() - started)
        await self.plain_avro(events)
        await self.worker_main(events[:n_c])
        await self.worker_repeats(n_c)
        await self.worker_by_volumes(n_c)
        await self.anchors(events)
        await self.naive(events[:plan.naive_events])
        await self.producer_sdk(events)
        del events
        await self.worker_by_fleet_rate(n_c)
        await self.latency(sim_rate)
        await self.volume_points()
        await self.batch_points()
        await self.steady()
        await self.failover()

    async def failover(self) -> None:
        """(k) at (e)'s rate and volumes: half of (c), or less if one sending process
        cannot do that much; a fixed rate if (e) did not run."""
        e = self.info.get("e")
        plan = self.plan.failover
        if e is not None:
            basis = ("half of (c)" if e["rate_target"] >= e["half_of_c"] else
                     "half of (c), capped at half of one sending process, as (e)")
            plan = replace(plan, rate=e["rate_target"], volumes=e["volumes"], rate_basis=basis)
        self.step(f"(k) failover: {plan.kills} kills, {plan.rate:,.0f} events/s")
        run = await failover_run(self.settings("k"), self.log_dir, plan)
        self.figures.update(run.figures)
        self.info["k"] = run.info

    async def run_c(self) -> None:
        """``--only c``: (b), (c) and (l), (c) by volume count and by fleet rate, nothing
        else."""
        plan = self.plan
        calib = self.main_events(plan.calib_events)
        inprocess = inprocess_rate(calib, self.base.batch_max_events, self.base.batch_max_age_ms)
        self.info["inprocess_events_per_s"] = inprocess
        n_c = max(1, plan.c_min_events,
                  int(await self.calibrate_worker(inprocess) * plan.worker_min_s * 1.2))
        events = self.main_events(max(n_c, plan.b_min_events))
        await self.plain_avro(events)
        await self.worker_main(events[:n_c])
        del events
        await self.worker_repeats(n_c)
        await self.worker_by_volumes(n_c)
        await self.worker_by_fleet_rate(n_c)

    async def worker_repeats(self, n_c: int) -> None:
        """(c) again ``c_repeats`` times, over as many events of the same fleet, each
        run on a backlog and topics of its own: (c) becomes the median of all its runs
        (the first one's records and CPU stay its details), and every run is
        listed."""
        runs: list[dict[str, Any]] = [{
            "events_per_s": self.figures["c_events_per_s"],
            "cpu_us_per_event": self.figures.get("c_cpu_us_per_event")}]
        for k in range(1, self.plan.c_repeats + 1):
            self.step(f"(c) run {k + 1} of {self.plan.c_repeats + 1}")
            point = await self.c_point(f"cx{k}", self.plan.main_volumes, self.plan.fleet_rate,
                                       n_c)
            runs.append({"events_per_s": point["events_per_s"],
                         "cpu_us_per_event": point["cpu_us_per_event"]})
        self.points["c_runs"] = runs
        self.figures["c_first_events_per_s"] = runs[0]["events_per_s"]
        self.figures["c_events_per_s"] = statistics.median(r["events_per_s"] for r in runs)

    async def worker_by_volumes(self, n_c: int) -> None:
        """(c) over the same number of events at the same fleet rate, from other numbers
        of volumes (their records carry as many events, spread over more volumes)."""
        points = []
        for volumes in self.plan.c_volume_points:
            point = await self.c_point(f"cv{volumes}", volumes, self.plan.fleet_rate, n_c)
            points.append(point)
            self.figures[f"c_events_per_s_{volumes}_volumes"] = point["events_per_s"]
        self.points["c_volumes"] = points

    async def worker_by_fleet_rate(self, n_c: int) -> None:
        """(c) over more events (``c_fleet_events_factor``) from the same volumes, the
        fleet sending faster. Each of the fleet's hosts runs an SDK with a buffer of its own (one
        producer sends for all of them here: its buffer is theirs together), so records
        are cut by the 100 ms age as a real host's are, not by one shared buffer."""
        points = []
        hosts = FleetConfig().hosts
        n = int(n_c * self.plan.c_fleet_events_factor)
        for rate in self.plan.c_fleet_rates:
            point = await self.c_point(
                f"cr{rate:.0f}", self.plan.main_volumes, rate, n,
                batch_max_events=self.base.batch_max_events * hosts)
            points.append({**point, "fleet_rate": rate, "hosts": hosts})
            self.figures[f"c_events_per_s_fleet_{rate:.0f}"] = point["events_per_s"]
        self.points["c_fleet_rates"] = points

    async def c_point(self, name: str, volumes: int, rate: float, n: int,
                      **overrides: Any) -> dict[str, Any]:
        """(c) on ``n`` events of ``volumes`` volumes sending ``rate`` events/s in all."""
        s = self.settings(name, **overrides)
        await pipeline_topics(s)
        events = simulated_events(volumes, n, rate, time.time_ns())
        self.step(f"(c) at {volumes:,} volumes, {rate:,.0f} events/s: producing {n:,} events")
        records, sent = await produce_backlog(s, events)
        active = len({e.volume_id for e in events})
        del events
        run = await worker_run(s, self.log_dir, name, records, sent, 300 + sent / 200)
        return {"volumes": volumes, "active": active, "events": sent, "records": records,
                "events_per_s": run.events_per_s, "records_per_s": run.records_per_s,
                "seconds": run.seconds, "cpu_us_per_event": run.cpu_us_per_event,
                "on_cpu": run.on_cpu}

    async def steady(self) -> None:
        plan = self.plan.steady
        self.step(f"(j) a live fleet for {plan.duration_s:.0f} s, horizon {plan.horizon_s} s")
        run = await steady_run(steady_settings(self.settings("j"), plan), self.log_dir, plan)
        self.figures.update(run.figures)
        self.info["j"] = run.info

    async def calibrate_worker(self, inprocess: float) -> float:
        """A short time-boxed worker run on the (c) layout: how big (c) must be."""
        plan = self.plan
        if plan.calib_window_s <= 0:
            guess = inprocess * plan.worker_factor_guess
            self.info["sizing_run"] = {"events_per_s": guess, "records_per_s": 200.0}
            self.info["worker_factor"] = plan.worker_factor_guess
            return guess
        s = self.settings("c0")
        await pipeline_topics(s)
        n = max(1000, int(inprocess * plan.calib_window_s))
        self.step(f"sizing (c): a {plan.calib_window_s:g} s worker run ({n:,} events ready)")
        records, sent = await produce_backlog(s, self.main_events(n))
        run = await worker_run(s, self.log_dir, "c0", records, sent, 120 + sent / 100,
                               window_s=plan.calib_window_s)
        self.info["sizing_run"] = {"events_per_s": run.events_per_s,
                                   "records_per_s": run.records_per_s}
        self.info["worker_factor"] = run.events_per_s / inprocess
        return run.events_per_s

    async def plain_avro(self, events: Sequence[IoEvent]) -> None:
        s = self.settings("b")
        await create_topics(s.bootstrap_servers, [TopicSpec(s.raw_topic, s.partitions, {})])
        self.step(f"(b) producing {len(events):,} events in the plain Avro layout")
        records, sent = await produce_backlog(s, events, PlainAvroProducer)
        self.step("(b) consuming and decoding")
        got_records, got_events, seconds = await plain_avro_consume(s.bootstrap_servers,
                                                                    s.raw_topic)
        if (got_records, got_events) != (records, sent):
            raise BenchError(f"(b) read {got_records} records / {got_events} events, "
                             f"sent {records} / {sent}")
        self.figures["b_events_per_s"] = got_events / seconds
        self.figures["b_records_per_s"] = got_records / seconds
        self.info["b"] = {"events": got_events, "records": got_records, "seconds": seconds,
                          "events_per_record": got_events / got_records}

    async def worker_main(self, events: Sequence[IoEvent]) -> None:
        s = self.settings("c")
        await pipeline_topics(s)
        self.step("(c) producing the backlog with the SDK")
        records, sent = await produce_backlog(s, events)
        self.step(f"(c) worker over {sent:,} events in {records:,} records")
        run = await worker_run(s, self.log_dir, "c", records, sent, 300 + sent / 200,
                               self.profile)
        self.figures["c_events_per_s"] = run.events_per_s
        self.figures["c_records_per_s"] = run.records_per_s
        self.figures["c_processed_events_per_s"] = run.events / run.processed_seconds
        self.figures["c_seconds"] = run.seconds
        self.figures["c_worker_rss_bytes"] = run.rss_bytes
        if run.cpu_us_per_event is not None and run.on_cpu is not None:
            self.figures["c_cpu_us_per_event"] = run.cpu_us_per_event
            self.figures["c_on_cpu"] = run.on_cpu
        self.info["c"] = {"events": sent, "records": records, "events_per_record": sent / records,
                          "volumes": self.plan.main_volumes, "fleet_rate": self.plan.fleet_rate,
                          "units": run.units}
        if self.profile is not None and self.profile.exists():
            self.info["profile"] = summarize_profile(self.profile)
        await self.floor(s, records, sent)

    async def floor(self, s: Settings, records: int, events: int) -> None:
        """(l) over (c)'s backlog, right after (c): its worker without the accounting
        (floor.py)."""
        self.step(f"(l) the worker's floor over (c)'s {events:,} events")
        run = await floor_run(s, self.log_dir, records, events, 120 + events / 20_000)
        self.figures["l_events_per_s"] = run.events_per_s
        if run.cpu_us_per_event is not None and run.on_cpu is not None:
            self.figures["l_cpu_us_per_event"] = run.cpu_us_per_event
            self.figures["l_on_cpu"] = run.on_cpu
        self.info["l"] = {"events": run.events, "records": run.records, "seconds": run.seconds}

    async def anchors(self, events: Sequence[IoEvent]) -> None:
        """(h) and (i): the first events of (b)'s, as layout-2 records (anchors.py)."""
        for kind, most in zip("hi", self.plan.anchor_events, strict=True):
            self.step(f"({kind}) {ANCHOR_NAMES[kind]} anchor over {min(most, len(events)):,} "
                      "events")
            run = await anchor_bench(self.settings(kind), kind, events[:most], self.log_dir)
            self.figures[f"{kind}_events_per_s"] = run.events_per_s
            self.info[kind] = {"events": run.events, "records": run.records,
                               "seconds": run.seconds, "windows": len(run.windows),
                               "rss_bytes": run.rss_bytes}

    async def naive(self, events: Sequence[IoEvent]) -> None:
        self.step(f"(a) naive Faust over {len(events):,} events")
        run = await naive_run(self.base, f"b{self.run_id}a", events, self.log_dir)
        self.figures["a_events_per_s"] = run.events_per_s
        self.info["a"] = {"events": run.events, "seconds": run.seconds}

    async def producer_sdk(self, events: Sequence[IoEvent]) -> None:
        self.step("(d) producer SDK")
        n = min(len(events), self.plan.record_events)
        per_call, loop_ns = await record_call_ns(events[:n], self.base)
        self.figures["d_record_ns_per_event"] = per_call
        self.figures["d_loop_ns_per_event"] = loop_ns
        s = self.settings("d")
        await create_topics(s.bootstrap_servers, [TopicSpec(s.raw_topic, s.partitions, {})])
        n_kafka = min(len(events), self.plan.kafka_events)
        rate, records = await sdk_to_kafka(s, events[:n_kafka])
        self.figures["d_sdk_events_per_s"] = rate
        self.info["d"] = {"record_events": n, "kafka_events": n_kafka, "kafka_records": records}

    async def latency(self, sim_rate: float) -> None:
        c = self.figures["c_events_per_s"]
        # One process simulates, buffers and sends: at most half of what it can do alone.
        capacity = 1 / (1 / sim_rate + 1 / self.figures["d_sdk_events_per_s"])
        rate = min(c / 2, capacity / 2)
        # The fleet of (c) scaled down to this rate: per-volume rates, and so the records'
        # sizes, as in (c). (All of (c)'s volumes at this rate would send records of an
        # event or two, and the worker would lag behind instead of showing its latency.)
        volumes = max(1, round(self.plan.main_volumes * rate / self.plan.fleet_rate))
        self.step(f"(e) latency at {rate:,.0f} events/s from {volumes:,} volumes for "
                  f"{self.plan.latency_s:.0f} s")
        lat = await latency_run(self.settings("e"), self.log_dir, rate, self.plan.latency_s,
                                volumes)
        self.figures["e_p50_s"] = lat.p50_s
        self.figures["e_p99_s"] = lat.p99_s
        self.figures["e_max_s"] = lat.max_s
        self.figures["e_rate_sent"] = lat.rate_sent
        self.info["e"] = {"rate_target": rate, "half_of_c": c / 2, "windows": lat.windows,
                          "one_process_capacity": capacity, "volumes": volumes}

    async def _block_point(self, name: str, volumes: int, per_record: int, events: int,
                           window_s: float | None) -> dict[str, float]:
        """A worker over ``volumes`` volumes, records of exactly ``per_record`` events;
        ``window_s``: time-boxed (see timed_run), else until everything is committed."""
        rounds = max(1, math.ceil(events / (volumes * per_record)))
        total = volumes * per_record * rounds
        events_list = block_events(volumes, per_record, rounds, time.time_ns(),
                                   max(NS_PER_S, int(total / self.plan.fleet_rate * NS_PER_S)))
        s = self.settings(name, batch_max_events=per_record, batch_max_age_ms=DISABLED_AGE_MS)
        await pipeline_topics(s)
        self.step(f"(g) {volumes:,} volumes, {per_record} events/record, {total:,} events")
        records, sent = await produce_backlog(s, events_list)
        del events_list
        run = await worker_run(s, self.log_dir, name, records, sent, 300 + records / 20,
                               window_s=window_s)
        return {"volumes": volumes, "events_per_record": per_record,
                "events": run.events, "records": run.records, "events_per_s": run.events_per_s,
                "records_per_s": run.records_per_s, "seconds": run.seconds,
                "rss_bytes": run.rss_bytes, "until_committed": float(window_s is None),
                "rss_at_end_bytes": run.rss_at_end_bytes or run.rss_bytes}

    async def volume_points(self) -> None:
        """Every volume active (one record of k events each, or more for the low point)."""
        low, high = self.plan.volume_points
        k = self.plan.events_per_volume_record
        records_per_s = self.info["sizing_run"]["records_per_s"]
        n_low = max(low * k, int(records_per_s * k * self.plan.point_s))
        points = [await self._block_point(f"v{low}", low, k, n_low, None),
                  await self._block_point(f"v{high}", high, k, high * k, None)]
        self.points["volumes"] = points
        for p in points:
            self.figures[f"g_events_per_s_{p['volumes']:.0f}_volumes"] = p["events_per_s"]
            self.figures[f"f_rss_bytes_{p['volumes']:.0f}_volumes"] = p["rss_bytes"]
        for key, figure in (("rss_bytes", "f_bytes_per_volume"),
                            ("rss_at_end_bytes", "f_bytes_per_volume_at_end")):
            self.figures[figure] = (points[1][key] - points[0][key]) / (high - low)
        self.info["f"] = {"volumes": [low, high]}

    async def run_only_f(self) -> None:
        """``--only f``: the two (f) points alone; the low point's backlog sized by
        calibrate_worker's guessed records/s (its worker run skipped)."""
        self.info["sizing_run"] = {"events_per_s": 0.0, "records_per_s": ONLY_F_RECORDS_PER_S}
        await self.volume_points()

    async def batch_points(self) -> None:
        """Time-boxed: the backlog is generous, the rate is taken over point_s."""
        points = []
        factor = self.info["worker_factor"]
        v = self.plan.batch_volumes
        for size in self.plan.batch_points:
            sample = block_events(max(1, min(v, 20_000 // size)), size,
                                  max(1, 20_000 // (v * size)), time.time_ns(), NS_PER_S)
            estimate = inprocess_rate(sample, size, DISABLED_AGE_MS) * factor
            n = max(2 * v * size, int(2 * estimate * self.plan.point_s))
            n = min(n, BATCH_POINT_MAX_EVENTS)
            points.append(await self._block_point(f"k{size}", v, size, n, self.plan.point_s))
            self.figures[f"g_events_per_s_batch_{size}"] = points[-1]["events_per_s"]
        self.points["batch_sizes"] = points


# A (g) backlog the producer's spool (IOACCT_SPOOL_MAX_BYTES, 1 GiB) holds with room to
# spare while the broker takes it (~30 B an event): 36 M events of 4,096-event records
# filled it once (session 14). Still several times what point_s of the fastest point needs.
BATCH_POINT_MAX_EVENTS = 16_000_000


def run_bench(quick: bool = False, profile: Path | None = None, verbose: bool = True,
              keep_logs: Path | None = None, base: Settings | None = None,
              max_volumes: int | None = None, only: str | None = None) -> dict[str, Any]:
    """Start a broker, measure everything (``only``: "c", "bc" or "f", those runs alone), stop
    the broker; the report as a dict."""
    plan = QUICK if quick else FULL
    if only == "bc":  # (b) and (c) alone: run_c without the by-volume points
        plan, only = replace(plan, c_volume_points=(), c_fleet_rates=()), "c"
    if max_volumes is not None:
        plan = replace(plan, volume_points=(plan.volume_points[0], max_volumes))
    state_dir = Path(tempfile.mkdtemp(prefix="ioacct-bench-"))
    base = (base or Settings.from_env()).with_overrides(
        kafka_port=free_port(), kafka_controller_port=free_port(), state_dir=state_dir)
    # Plaintext: every run, the anchors' too, on one broker without TLS, so the figures
    # compare the consumers' own work (a secured cluster adds its TLS cost to each alike).
    base = base.with_overrides(bootstrap=f"127.0.0.1:{base.kafka_port}",
                               kafka_security="PLAINTEXT")
    log_dir = keep_logs or state_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    bench = Bench(base, plan, log_dir, profile)
    # A producer retries while a new topic's partitions get their leaders: not news.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    if verbose:
        bench.progress = lambda text: print(text, file=sys.stderr, flush=True)
    broker = kafka_local.LocalBroker.from_settings(base)
    bench.step(f"starting a broker on {base.bootstrap_servers} (state {state_dir})")
    try:
        # numba's cache filled before any worker starts (after a change, ~5-10 s to
        # compile): no run of the bench times a compilation
        bench.step(f"compiled loops ready in {warm_up():.1f} s")
        kafka_local.start(broker)
        runs = {"c": bench.run_c, "f": bench.run_only_f}
        asyncio.run(runs[only]() if only in runs else bench.run())
    finally:
        bench.step("stopping the broker")
        kafka_local.stop(broker)
        shutil.rmtree(state_dir, ignore_errors=True)
    return f_report_of(bench, quick) if only == "f" else report_of(bench, quick)


def cli_bench(args: argparse.Namespace, settings: Settings) -> int:
    """`ioacct bench`: the broker, topics and ports are the bench's own; the pipeline's
    other settings (grace, batch size, ...) come from the environment as usual."""
    profile = Path(args.profile).resolve() if args.profile else None
    try:
        report = run_bench(args.quick, profile, base=settings,
                           keep_logs=Path(args.logs).resolve() if args.logs else None,
                           max_volumes=getattr(args, "max_volumes", None),
                           only=getattr(args, "only", None))
    except (BenchError, kafka_local.KafkaError) as exc:
        print(f"ioacct bench: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    else:
        print(render_f(report) if report.get("only") == "f" else render(report))
    return 0

