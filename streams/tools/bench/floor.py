"""Figure (l), the worker's floor: what (c)'s worker costs before any accounting.

The same faust app as the worker's (pipeline/app.py ``faust_app``: the same settings,
the same fixes to faust and the same drain of fetched records, the same GC thresholds),
the same steps (pipeline/batches.py ``take_steps``, split by partition, acknowledged after
each step) and the same decode of every raw record (core/ingest.py ``decode_raw``), and
then nothing: no rules, no state, no windows, no table write, no output (the Ticks that
(c)'s worker wrote into the topic are skipped, as the worker reads them and no more). It
reads (c)'s own raw topic right after (c), under a consumer group of its own, and is
timed as (c) is: until the group has committed the end of the topic.

So (l) is what faust, aiokafka and fastavro cost on this machine for (c)'s records, and
(c)'s CPU an event less (l)'s is what the accounting adds (docs/performance.md, "What is
measured").

Run as ``python -m streams.tools.bench.floor floor-worker APP_ID`` by :func:`floor_run`."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
from pathlib import Path
from typing import Any

from streams.config import Settings
from streams.core.codec import HEADER_LEN, default_schemas
from streams.core.ingest import decode_raw
from streams.pipeline.app import GC_THRESHOLDS, bytes_topic, faust_app
from streams.pipeline.batches import EXIT_AGENT_FAILED, by_partition, take_steps
from streams.tools.bench.procs import end_offsets, free_port, settings_env, spawn
from streams.tools.bench.runs import Run, timed_run

FLOOR_SUFFIX = "-floor"  # its consumer group: the worker's app id and this


def floor_app(settings: Settings, app_id: str) -> Any:
    """The worker's faust app with one agent over the raw topic that decodes each record
    of each step and counts its events (module doc); ``/progress`` says how many."""
    app = faust_app(settings, app_id)
    raw = bytes_topic(app, settings.raw_topic, settings.partitions)
    schemas = default_schemas()
    tick_header = schemas.headers["Tick"]
    seen = {"events": 0, "records": 0}  # the benchmark's count, as the worker's /status
    s = settings

    @app.agent(raw, name="floor")
    async def floor(stream: Any) -> None:
        async for events in take_steps(stream, s.step_max_records, s.step_wait_ms / 1000,
                                       s.step_catch_up_wait_ms / 1000,
                                       s.step_max_big_records, s.step_max_bytes):
            for group in by_partition(events).values():
                for event in group:
                    if event.value[:HEADER_LEN] == tick_header:
                        continue  # (c)'s worker's clock ticks: the worker reads no more
                    name, record = decode_raw(event.value, schemas)
                    if name != "IoBatch2":  # the bench's backlog is the SDK's: a defect
                        print(f"(l) reads layout 2 records (the SDK's), not {name}",
                              file=sys.stderr, flush=True)
                        os._exit(EXIT_AGENT_FAILED)
                    seen["events"] += len(record["op"])  # one byte an event
                    seen["records"] += 1

    @app.page("/progress")
    async def progress(web: Any, request: Any) -> Any:
        return web.json(seen)

    return app


def run_floor_worker(app_id: str) -> int:
    """The floor's worker process under consumer group ``app_id``; its settings come from
    the environment, as the worker's (``IOACCT_*``)."""
    import faust

    asyncio.set_event_loop(asyncio.new_event_loop())
    app = floor_app(Settings.from_env(), app_id)
    gc.set_threshold(*GC_THRESHOLDS)
    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()
    return 0


async def floor_run(settings: Settings, log_dir: Path, records: int, events: int,
                    timeout_s: float) -> Run:
    """Run the floor over what ``settings``' raw topic holds now (``records`` records of
    ``events`` events, (c)'s backlog) and time it, with its CPU time (runs.timed_run)."""
    floor = settings.with_overrides(web_port=free_port(), state_dir=settings.state_dir / "floor")
    floor.state_dir.mkdir(parents=True, exist_ok=True)  # faust makes its data dir only
    app_id = settings.app_id + FLOOR_SUFFIX
    ends = await end_offsets(floor.bootstrap_servers, floor.raw_topic)
    proc = spawn(["-m", "streams.tools.bench.floor", "floor-worker", app_id],
                 settings_env(floor), floor.web_port, log_dir / "worker-floor.log")
    try:
        return await timed_run(
            proc, lambda body: (int(body["events"]), int(body["records"])), "/progress",
            events, records, floor.bootstrap_servers, app_id, ends, timeout_s)
    finally:
        proc.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["floor-worker"] and len(sys.argv) == 3:
        sys.exit(run_floor_worker(sys.argv[2]))
    sys.exit(f"usage: {os.path.basename(sys.argv[0])} floor-worker APP_ID (use `ioacct bench`)")
