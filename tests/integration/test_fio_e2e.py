"""End to end with a real source: fio runs real I/O, its per-I/O latency log goes through
the real `ioacct produce --fio-lat-log` into a worker on the real broker, and the
pipeline's counters and histograms are held to fio's own JSON report.

fio side: per direction `total_ios`, `io_bytes`, `lat_ns.mean` and `lat_ns.percentile`
(the job has lat_percentiles=1). We read the `_lat` log (total latency), so every check is
against `lat_ns`, never `clat_ns`. fio's percentiles are the midpoint of a log-linear
bucket 1/64 of a power of two wide (stat.c, plat_idx_to_val): "fio's p50 falls in the
pipeline's bin" is checked up to that bucket, and the exact order statistic of the log
must fall in the bin with no tolerance.
"""

from __future__ import annotations

import math
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.config import Settings
from tests.fio_jobs import FioRun, run_fio, run_mixed, trim_target

from .harness import WorkerProcess, ioacct, running_worker, wait_until

pytestmark = pytest.mark.integration

VOLUME = f"fio-{uuid.uuid4().hex[:8]}"
TENANT = "tenant-fio"
FIO_DIRECTION = {"read": "read", "write": "write", "discard": "trim"}
# SEMANTICS.md section 3, written out here rather than imported from the pipeline
BOUNDS_NS = (10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000,
             5_000_000, 10_000_000, 20_000_000, 50_000_000, 100_000_000, 200_000_000,
             500_000_000, 1_000_000_000, 2_000_000_000, 5_000_000_000, 10_000_000_000)
QUANTILES = {"p50": (1, 2, "50.000000"), "p99": (99, 100, "99.000000")}


@pytest.fixture(scope="module")
def worker(pipeline_settings: Settings, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[WorkerProcess]:
    with running_worker(pipeline_settings, Path(tmp_path_factory.mktemp("w"))) as started:
        yield started


@pytest.fixture(scope="module")
def fio_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[FioRun, str]]:
    """op -> (the fio run whose log holds that op, its fio direction); trim when possible."""
    out = Path(tmp_path_factory.mktemp("fio"))
    mixed = run_mixed(out / "mixed")
    runs = {"read": (mixed, "read"), "write": (mixed, "write")}
    with trim_target(out) as (target, how):
        if target is None:
            warnings.warn(f"trim is not supported here ({how}): discard is not checked "
                          "against fio", stacklevel=1)
        else:
            print(f"\ntrim job on {how}")
            runs["discard"] = (run_fio(out / "trim", "trim", target, ios=300), "trim")
    return runs


@pytest.fixture(scope="module")
def produced(pipeline_settings: Settings, worker: WorkerProcess,
             fio_runs: dict[str, tuple[FioRun, str]]) -> dict[str, dict[str, Any]]:
    """Each log through the real command line; op -> fio's figures for that direction."""
    logs = {run.lat_log: run for run, _ in fio_runs.values()}
    printed = ""
    for run in logs.values():
        # the mixed log has times relative to the job's start: --fio-json; the trim log
        # was written with log_unix_epoch=1 and needs nothing
        start = ["--fio-json", str(run.json_path)] if run.lat_log.name.startswith("mix") else []
        result = ioacct(pipeline_settings, "produce", "--fio-lat-log", str(run.lat_log), *start,
                        "--volume-id", VOLUME, "--tenant-id", TENANT)
        assert result.returncode == 0, result.stderr
        assert "skipped" not in result.stdout and "WARNING" not in result.stdout, result.stdout
        print(result.stdout)
        printed += result.stdout
    fio = {op: run.job[direction] for op, (run, direction) in fio_runs.items()}
    for op, figures in fio.items():
        assert figures["total_ios"] > 100 and figures["short_ios"] == figures["drop_ios"] == 0
        # the command's own summary already agrees with fio
        assert f"  {op}: {figures['total_ios']} I/Os, {figures['io_bytes']} bytes" in printed
    return fio


def counters_when_complete(worker: WorkerProcess, fio: dict[str, dict[str, Any]]
                           ) -> dict[str, Any]:
    want = sum(f["total_ios"] for f in fio.values())

    def done() -> dict[str, Any] | None:
        status, body = worker.get(f"/volumes/{VOLUME}/counters")
        got = sum(body.get(f"{op}_ios", 0) for op in fio) if status == 200 else -1
        return body if got == want else None

    return dict(wait_until(done, 120, f"{want} fio I/Os in the counters", [worker]))


def test_ios_and_bytes_equal_fios_exactly(worker: WorkerProcess,
                                          produced: dict[str, dict[str, Any]]) -> None:
    counters = counters_when_complete(worker, produced)
    for op, fio in produced.items():
        print(f"{op}: fio total_ios={fio['total_ios']} io_bytes={fio['io_bytes']}; pipeline "
              f"{op}_ios={counters[f'{op}_ios']} {op}_bytes={counters[f'{op}_bytes']}")
        assert (counters[f"{op}_ios"], counters[f"{op}_bytes"]) == (fio["total_ios"],
                                                                    fio["io_bytes"])
        assert counters[f"{op}_ios_error"] == counters[f"invalid_{op}_ios"] == 0
    assert counters["flush_ios"] == counters["rejected"] == 0
    assert counters["tenant_id"] == TENANT


def test_mean_latency_is_fios_within_a_thousandth(worker: WorkerProcess,
                                                  produced: dict[str, dict[str, Any]]) -> None:
    counters = counters_when_complete(worker, produced)
    for op, fio in produced.items():
        mean_ns = counters[f"total_{op}_time_ns"] / counters[f"{op}_ios"]
        error = abs(mean_ns - fio["lat_ns"]["mean"]) / fio["lat_ns"]["mean"]
        print(f"{op}: fio lat_ns.mean={fio['lat_ns']['mean']:.3f} pipeline "
              f"{mean_ns:.3f} (relative difference {error:.2e})")
        assert error <= 1e-3


def histogram_bin(histogram: list[int], num: int, den: int) -> int:
    """SEMANTICS.md section 3: the first bin where the cumulative count reaches ceil(q n)."""
    rank = -(-sum(histogram) * num // den)
    cumulative = 0
    for i, count in enumerate(histogram):
        cumulative += count
        if cumulative >= rank:
            return i
    raise AssertionError("empty histogram")


def fio_bucket(value_ns: int) -> tuple[float, float]:
    """The values fio's percentile stands for: [v - w/2, v + w/2), w = 2^(msb - 6)."""
    width = 2 ** (value_ns.bit_length() - 1 - 6) if value_ns.bit_length() - 1 > 6 else 1
    return value_ns - width / 2, value_ns + width / 2


def test_fios_percentiles_fall_in_the_pipelines_histogram_bins(
    worker: WorkerProcess, produced: dict[str, dict[str, Any]],
    fio_runs: dict[str, tuple[FioRun, str]],
) -> None:
    counters_when_complete(worker, produced)
    histograms: dict[str, list[int]] = {}

    def all_binned() -> bool:
        status, body = worker.get(f"/volumes/{VOLUME}/stats?window=1s&from=now-30m&to=now")
        assert status == 200, body
        for op in produced:
            rows = [w[f"{op}_latency_histogram"] for w in body["windows"]]
            histograms[op] = [sum(col) for col in zip(*rows, strict=True)] if rows else []
        return all(sum(histograms[op]) == fio["total_ios"] for op, fio in produced.items())

    wait_until(all_binned, 90, "every fio I/O in a 1 s window's histogram", [worker])
    for op, fio in produced.items():
        run, direction = fio_runs[op]
        code = {"read": 0, "write": 1, "trim": 2}[direction]
        latencies = sorted(int(line.split(",")[1]) for line in run.lat_log.read_text()
                           .splitlines() if int(line.split(",")[2]) == code)
        for name, (num, den, key) in QUANTILES.items():
            i = histogram_bin(histograms[op], num, den)
            lo, hi = (BOUNDS_NS[i - 1] if i else 0), (BOUNDS_NS[i] if i < len(BOUNDS_NS)
                                                      else math.inf)
            fio_ns = int(fio["lat_ns"]["percentile"][key])
            exact_ns = latencies[-(-len(latencies) * num // den) - 1]
            # fio's rank: the first count >= pct / 100.0 * n in doubles (stat.c), which
            # Python's floats reproduce; it can be one above ceil(q n) when q n is whole
            fio_rank_ns = latencies[math.ceil(float(key) / 100.0 * len(latencies)) - 1]
            f_lo, f_hi = fio_bucket(fio_ns)
            print(f"{op} {name}: fio {fio_ns} ns (stands for [{f_lo:.0f}, {f_hi:.0f})), "
                  f"the log's exact {exact_ns} ns, pipeline bin {i} = [{lo}, {hi}); fio's "
                  f"value itself {'inside' if lo <= fio_ns < hi else 'OUTSIDE'}")
            assert lo <= exact_ns < hi, "the pipeline's bin misses the log's own percentile"
            assert f_lo <= fio_rank_ns < f_hi, "fio's percentile is not the log's"
            assert f_lo < hi and lo < f_hi, "fio's percentile is outside the pipeline's bin"
