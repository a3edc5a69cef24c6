"""In-process events/s of the scalar twin vs the vectorised windows and billing hours
(issue 17 part 2). Not a test: ``python -m tests.unit.core.windows.bench_vector``.

50,000 events over 1,000 volumes with Zipf-like rates (volume k gets weight 1/k), latencies
log-uniform in 100 us .. 50 ms, completions spread over ``SPAN_S`` seconds; once as one
batch and once as 100 records of 500 (each record: its events, all volumes in it).
"""

from __future__ import annotations

import time
import timeit
from collections.abc import Callable

import numpy as np

from streams.core.batch import Columns, EventBatch
from streams.core.billing import BillingBook
from streams.core.times import NS_PER_S
from streams.core.windows.book import WindowBook, WindowSettings
from streams.core.windows.stages import PartitionWindows
from streams.state.stages import open_partition_windows
from tests.unit.core.windows import scalar_twin

T0 = 1_700_000_000 * NS_PER_S
N_EVENTS, N_VOLUMES, SPAN_S = 50_000, 1_000, 1


def fleet(seed: int = 1) -> Columns:
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, N_VOLUMES + 1)
    volume = rng.choice(N_VOLUMES, N_EVENTS, p=weights / weights.sum()).astype(np.intp)
    complete = np.sort(T0 + rng.integers(0, SPAN_S * NS_PER_S, N_EVENTS)).astype(np.int64)
    latency = np.exp(rng.uniform(np.log(100_000), np.log(50_000_000), N_EVENTS)).astype(np.int64)
    op = rng.choice(4, N_EVENTS, p=[0.6, 0.3, 0.05, 0.05]).astype(np.uint8)
    status = rng.choice(3, N_EVENTS, p=[0.98, 0.01, 0.01]).astype(np.uint8)
    nbytes = np.where(op == 2, 0, 4096 * rng.integers(1, 64, N_EVENTS)).astype(np.int64)
    return Columns(tuple(f"vol-{k}" for k in range(N_VOLUMES)),
                   tuple(f"tenant-{k % 50}" for k in range(N_VOLUMES)),
                   volume, op, status, nbytes, complete - latency, complete)


def per_volume(columns: Columns) -> list[EventBatch]:
    """What the scalar path takes: one EventBatch per volume present."""
    out = []
    for v in np.unique(columns.volume).tolist():
        take = columns.take(columns.volume == v)
        out.append(EventBatch(columns.volumes[v], columns.tenants[v], take.op.tobytes(),
                              take.status.tobytes(), take.nbytes.tolist(),
                              take.submit_ns.tolist(), take.complete_ns.tolist(),
                              range(len(take))))
    return out


def best_s(run: Callable[[], object], setup: Callable[[], None], repeat: int = 5) -> float:
    """The best of ``repeat`` runs, in CPU seconds of this process (the machine is shared:
    wall time would count the other processes' turns)."""
    times = []
    for _ in range(repeat):
        setup()
        times.append(timeit.Timer(run, timer=time.process_time).timeit(number=1))
    return min(times)


def main() -> None:
    columns = fleet()
    records = [columns.take(np.arange(i, i + 500)) for i in range(0, N_EVENTS, 500)]
    whole_batches = per_volume(columns)
    record_batches = [per_volume(r) for r in records]
    books: dict[str, object] = {}

    def fresh() -> None:
        books["w"] = WindowBook(WindowSettings(), {})
        books["b"] = BillingBook({})
        books["p"] = PartitionWindows(0, open_partition_windows(0, {}, WindowSettings()).table,
                                      WindowSettings())

    def scalar(batches: list[EventBatch]) -> None:
        for batch in batches:
            scalar_twin.add_events(books["w"], batch, None)  # type: ignore[arg-type]
            scalar_twin.add_billing(books["b"], batch)  # type: ignore[arg-type]

    def vector(parts: list[Columns]) -> None:
        for part in parts:
            books["w"].add_columns(part, None)  # type: ignore[attr-defined]
            books["b"].add_columns(part)  # type: ignore[attr-defined]

    cases = {
        "scalar, one batch": lambda: scalar(whole_batches),
        "scalar, 100 records of 500": lambda: [scalar(b) for b in record_batches],
        "vector, one batch": lambda: vector([columns]),
        "vector, 100 records of 500, one call each": lambda: vector(records),
        "stage on_records, 100 records as one batch (dict table, JSON store)":
            lambda: books["p"].on_records(  # type: ignore[attr-defined]
                [(r, ("p", n)) for n, r in enumerate(records)], T0),
        "stage on_columns, 100 records one unit each (dict table, JSON store)":
            lambda: [books["p"].on_columns(r, T0, ("p", n))  # type: ignore[attr-defined]
                     for n, r in enumerate(records)],
    }
    for name, run in cases.items():
        seconds = best_s(run, fresh)
        print(f"{name:70s} {N_EVENTS / seconds:>12,.0f} events/s  ({seconds * 1e3:.1f} ms)")


if __name__ == "__main__":
    main()
