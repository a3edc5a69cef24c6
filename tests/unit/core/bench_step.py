"""CPU time per record of the accounting step's pure work, record by record (account_record
+ on_records) against the step judged at once (account_step + on_parts), on the bench's
fleet (Zipf volumes at 100,000 events/s, the SDK's default batching) at several volume
counts. Not a test (no wall-clock thresholds in tests): run it by hand,

    python -m tests.unit.core.bench_step [events] [records per step]

Steps of up to 1,000 records of one partition (or the second argument's), as the agent
takes them; counters and windows in dicts (no RocksDB, no faust, no Kafka). Small steps
(say 20 records) make later steps revise the windows earlier ones stored, as a worker
that keeps up does; 1,000-record steps mostly open new windows.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict

from streams.config import Settings
from streams.core.codec import default_schemas
from streams.core.ingest import Placement
from streams.tools.bench.workloads import partition_batches, simulated_events
from tests.unit.core import test_step
from tests.unit.core.test_step import Run, at_once, one_by_one

STEP_RECORDS = 1000
PARTITIONS = 8


def steps_of(volumes: int, events: int, step_records: int = STEP_RECORDS
             ) -> tuple[list[list[tuple[bytes, Placement]]], int]:
    settings = Settings.from_env()
    fleet = simulated_events(volumes, events, 100_000.0, time.time_ns())
    schemas = default_schemas()
    by_partition: dict[int, list[tuple[bytes, Placement]]] = defaultdict(list)
    records = partition_batches(fleet, settings, PARTITIONS)
    for out in records:
        assert out.partition is not None
        payload = schemas.encode("IoBatch2", out.record)
        by_partition[out.partition].append(
            (payload, Placement(out.key, out.partition, PARTITIONS)))
    steps = [recs[i:i + step_records] for recs in by_partition.values()
             for i in range(0, len(recs), step_records)]
    return steps, len(records)


def cpu_s(way: object, steps: list[list[tuple[bytes, Placement]]]) -> float:
    runs: dict[int, Run] = {}
    started = time.process_time()
    for n, step in enumerate(steps):
        partition = step[0][1].partition
        run = runs.setdefault(partition, Run())
        way(run, step, time.time_ns() + n)  # type: ignore[operator]
    return time.process_time() - started


def main() -> None:
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    step_records = int(sys.argv[2]) if len(sys.argv) > 2 else STEP_RECORDS
    test_step.NOW = time.time_ns()  # the fleet's events end now: none too old or too new
    test_step.MAX_EVENTS = 100_000  # the worker's step_max_events
    print(f"{'volumes':>8} {'records':>8} {'ev/rec':>7} {'by record us/rec':>17} "
          f"{'at once us/rec':>15} {'speedup':>8}")
    for volumes in (100, 1_000, 100_000):
        steps, records = steps_of(volumes, events, step_records)
        slow = cpu_s(one_by_one, steps)
        fast = cpu_s(at_once, steps)
        print(f"{volumes:>8,} {records:>8,} {events / records:>7.0f} "
              f"{slow / records * 1e6:>17.0f} {fast / records * 1e6:>15.0f} "
              f"{slow / fast:>7.2f}x")


if __name__ == "__main__":
    main()
