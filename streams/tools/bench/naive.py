"""Anchor (a), naive Faust: what a Faust user writes first, one JSON record per event and
a table write per event, run as a worker subprocess over events produced beforehand.

Run as ``python -m streams.tools.bench.naive naive-worker ...`` by :func:`naive_run`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from streams.config import Settings
from streams.core.events import IoEvent
from streams.kafka.topics import TopicSpec
from streams.tools.bench.procs import create_topics, end_offsets, free_port, spawn
from streams.tools.bench.runs import Run, timed_run

NAIVE_TABLE = "volume-counters"


def naive_app(bootstrap: str, app_id: str, topic: str, partitions: int, web_port: int,
              datadir: str, commit_s: float) -> Any:
    """What a Faust user writes first: a record per event, a table write per event. It
    commits every ``commit_s``, as (c)'s worker does (its runs end with a commit)."""
    import faust

    app = faust.App(app_id, broker=f"kafka://{bootstrap}", store="memory://",
                    topic_partitions=partitions, web_host="127.0.0.1", web_port=web_port,
                    datadir=datadir, autodiscover=False, consumer_auto_offset_reset="earliest",
                    broker_commit_interval=commit_s)
    events = app.topic(topic, key_type=bytes, key_serializer="raw", value_serializer="json")
    counters = app.Table(NAIVE_TABLE, default=dict, partitions=partitions)
    processed = [0]  # instrumentation for the benchmark, not part of the anchor's work

    @app.agent(events)
    async def account(stream: Any) -> None:
        async for event in stream:
            volume = event["volume_id"]
            counts = counters[volume]
            prefix = f"{event['op']}_{event['status']}"
            counts[prefix + "_ios"] = counts.get(prefix + "_ios", 0) + 1
            counts[prefix + "_bytes"] = counts.get(prefix + "_bytes", 0) + event["bytes"]
            counts[prefix + "_time_ns"] = (counts.get(prefix + "_time_ns", 0)
                                           + event["complete_ns"] - event["submit_ns"])
            counters[volume] = counts
            processed[0] += 1

    @app.page("/progress")
    async def progress(web: Any, request: Any) -> Any:
        return web.json({"events": processed[0]})

    return app


def run_naive_worker(argv: list[str]) -> int:
    """The anchor's worker process: ``naive-worker --bootstrap ... --web-port ...``."""
    import faust

    p = argparse.ArgumentParser()
    for name in ("--bootstrap", "--app-id", "--topic", "--datadir"):
        p.add_argument(name, required=True)
    p.add_argument("--partitions", type=int, required=True)
    p.add_argument("--web-port", type=int, required=True)
    p.add_argument("--commit-s", type=float, required=True)
    a = p.parse_args(argv)
    asyncio.set_event_loop(asyncio.new_event_loop())
    app = naive_app(a.bootstrap, a.app_id, a.topic, a.partitions, a.web_port, a.datadir,
                    a.commit_s)
    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()
    return 0


async def produce_json(bootstrap: str, topic: str, events: Sequence[IoEvent]) -> None:
    """One JSON record per event, keyed by volume (the naive anchor's input)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all",
                                enable_idempotence=True)
    await producer.start()
    try:
        for n, event in enumerate(events):
            await producer.send(topic, key=event.volume_id.encode(),
                                value=orjson.dumps(event.to_json()))
            if n % 1000 == 999:
                await asyncio.sleep(0)
        await producer.flush()
    finally:
        await producer.stop()


async def naive_run(base: Settings, prefix: str, events: Sequence[IoEvent], log_dir: Path
                    ) -> Run:
    """Produce ``events`` as JSON, run the anchor's worker over them and time it."""
    bootstrap, partitions = base.bootstrap_servers, base.partitions
    app_id, topic = f"{prefix}-naive", f"{prefix}.naive.events"
    await create_topics(bootstrap, [
        TopicSpec(topic, partitions, {}),
        TopicSpec(f"{app_id}-{NAIVE_TABLE}-changelog", partitions, {"cleanup.policy": "compact"}),
    ])
    await produce_json(bootstrap, topic, events)
    ends = await end_offsets(bootstrap, topic)
    port = free_port()
    proc = spawn(["-m", "streams.tools.bench.naive", "naive-worker", "--bootstrap", bootstrap,
                  "--app-id", app_id, "--topic", topic, "--partitions", str(partitions),
                  "--web-port", str(port), "--datadir", str(log_dir / f"naive-{prefix}"),
                  "--commit-s", str(base.commit_interval_s)],
                 dict(os.environ), port, log_dir / "worker-naive.log")
    try:
        return await timed_run(proc, lambda body: (int(body["events"]),) * 2, "/progress",
                               len(events), len(events), bootstrap, app_id, ends,
                               timeout_s=120 + len(events) / 100)
    finally:
        proc.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["naive-worker"]:
        sys.exit(run_naive_worker(sys.argv[2:]))
    sys.exit(f"usage: {sys.argv[0]} naive-worker ... (use `ioacct bench`)")
