"""End to end on the real broker: simulator -> SDK -> Kafka -> two workers -> counters.

Every volume's counters must equal the brute-force oracle exactly, on whichever
worker is asked (requests are routed to the owner), though partitions changed hands
mid-stream, and delivering the same records again must change nothing.
"""

from __future__ import annotations

import asyncio
import gzip
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.config import REPO_ROOT, Settings
from streams.core.keys import TICK_KEY
from tests.conftest import free_port
from tests.oracles.counters import LATENCY_LE_NS, counters_oracle, latency_histogram_oracle

from .harness import (
    WorkerProcess,
    counter_mismatches,
    ioacct,
    operator_token,
    read_topic,
    redeliver,
    running_prometheus,
    running_workers,
    settings_env,
    start_worker,
    volume_parts,
    wait_committed,
    wait_until,
)

pytestmark = pytest.mark.integration

N_EVENTS = 100_000
N_VOLUMES = 1_500
PRODUCE_S = 15  # paced, so that the rebalances below happen mid-stream


@pytest.fixture(scope="module")
def workers(pipeline_settings: Settings, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[list[WorkerProcess]]:
    with running_workers(pipeline_settings, Path(tmp_path_factory.mktemp("workers"))) as both:
        yield both


@pytest.fixture(scope="module")
def sent_events(pipeline_settings: Settings, workers: list[WorkerProcess],
                tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Simulated events sent through the real `ioacct produce --sim`, as the oracle reads them.

    A third worker joins while they flow and leaves once it has partitions: two
    rebalances mid-stream, each handing partitions over through the changelog."""
    tmp = Path(tmp_path_factory.mktemp("sim"))
    jsonl = tmp / "events.jsonl"
    command = [sys.executable, "-m", "streams.cli", "produce", "--sim", "--events",
               str(N_EVENTS), "--rate", str(N_EVENTS / PRODUCE_S), "--volumes", str(N_VOLUMES),
               "--seed", "7", "--write-jsonl", str(jsonl)]
    producer = subprocess.Popen(command, env=settings_env(pipeline_settings), cwd=REPO_ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    guest = start_worker(pipeline_settings, free_port(), tmp)
    try:
        wait_until(lambda: guest.get("/status")[1].get("assigned_partitions"), 120,
                   "the third worker to take partitions", [guest, *workers])
    finally:
        guest.stop()
    out, err = producer.communicate(timeout=300)
    assert producer.returncode == 0, err
    assert f"sent {N_EVENTS} events" in out
    return [orjson.loads(line) for line in jsonl.read_bytes().splitlines()]


def _wait_processed(settings: Settings, workers: list[WorkerProcess]) -> None:
    wait_committed(settings, workers)


def _mismatches(worker: WorkerProcess, expected: dict[str, dict[str, Any]]) -> list[str]:
    return counter_mismatches(worker, expected)


def test_workload_covers_every_op_and_status(sent_events: list[dict[str, Any]]) -> None:
    assert len(sent_events) == N_EVENTS
    assert {e["op"] for e in sent_events} == {"read", "write", "flush", "discard"}
    assert {e["status"] for e in sent_events} == {"ok", "failed", "invalid"}
    assert len({e["volume_id"] for e in sent_events}) >= 1_000


def test_counters_equal_oracle_on_every_worker(
    pipeline_settings: Settings, workers: list[WorkerProcess], sent_events: list[dict[str, Any]],
) -> None:
    _wait_processed(pipeline_settings, workers)
    expected = counters_oracle(sent_events)
    for worker in workers:  # each worker answers for all volumes: half of them routed
        diffs = _mismatches(worker, expected)
        assert not diffs, f"{len(diffs)} differences via {worker.url}, first: {diffs[:10]}"
    assert all(w.get("/status")[1]["events_rejected"] == 0 for w in workers)


def test_query_cli_and_unknown_volume(
    pipeline_settings: Settings, workers: list[WorkerProcess], sent_events: list[dict[str, Any]],
) -> None:
    _wait_processed(pipeline_settings, workers)
    volume_id = sent_events[0]["volume_id"]
    result = ioacct(pipeline_settings, "query", "counters", volume_id, "--url", workers[1].url,
                    "--token", operator_token(pipeline_settings))
    assert result.returncode == 0, result.stderr
    answer = orjson.loads(result.stdout)
    assert answer == {**answer, **counters_oracle(sent_events)[volume_id]}
    assert answer["idle_time_ns"] >= 0
    status, body = workers[0].get("/volumes/vol-never-seen/counters")
    assert (status, body["error"]) == (404, "unknown volume")
    missing = ioacct(pipeline_settings, "query", "counters", "vol-never-seen",
                     "--url", workers[0].url, "--token", operator_token(pipeline_settings))
    assert missing.returncode == 2 and "unknown volume" in missing.stderr


def test_delivering_every_record_twice_changes_nothing(
    pipeline_settings: Settings, workers: list[WorkerProcess], sent_events: list[dict[str, Any]],
) -> None:
    _wait_processed(pipeline_settings, workers)
    raw = [m for m in asyncio.run(read_topic(pipeline_settings, pipeline_settings.raw_topic))
           if m.key != TICK_KEY]
    assert raw, "the raw topic is empty"
    skipped_before = sum(w.get("/status")[1]["replays_skipped"] for w in workers)
    asyncio.run(redeliver(pipeline_settings, raw))
    _wait_processed(pipeline_settings, workers)
    skipped = sum(w.get("/status")[1]["replays_skipped"] for w in workers) - skipped_before
    # replays_skipped counts the volume parts of records (a record holds several volumes)
    assert skipped == volume_parts(raw)
    for worker in workers:
        diffs = _mismatches(worker, counters_oracle(sent_events))
        assert not diffs, f"redelivery changed counters: {diffs[:10]}"


def test_metrics_endpoints_parse_and_equal_the_counters(
    pipeline_settings: Settings, workers: list[WorkerProcess], sent_events: list[dict[str, Any]],
) -> None:
    """Prometheus scrapes every worker; together they expose each volume once, exactly."""
    from prometheus_client.parser import text_string_to_metric_families

    _wait_processed(pipeline_settings, workers)
    expected = counters_oracle(sent_events)
    seen: dict[str, dict[str, Any]] = {}
    histograms: dict[str, dict[str, dict[str, Any]]] = {}
    for n, worker in enumerate(workers):
        gzipped = n == 0  # as Prometheus asks; the other worker's page as curl gets it
        request = urllib.request.Request(worker.url + "/metrics", headers={
            "Authorization": f"Bearer {operator_token(pipeline_settings)}",
            **({"Accept-Encoding": "gzip"} if gzipped else {})})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert response.headers.get("Content-Encoding") == ("gzip" if gzipped else None)
            body = response.read()
            text = (gzip.decompress(body) if gzipped else body).decode()
        for family in text_string_to_metric_families(text):
            if not family.name.startswith("ioacct_volume_"):
                continue  # the worker's own health (api/health.py)
            if family.name == LATENCY:
                _add_histogram_samples(histograms, family.samples)
                continue
            for sample in family.samples:
                volume_id = sample.labels["volume_id"]
                row = seen.setdefault(volume_id, {"tenant_id": sample.labels["tenant_id"]})
                name = sample.name.removeprefix("ioacct_volume_").removesuffix("_total")
                row[name] = sample.value
    assert set(seen) == set(expected)
    for volume_id, want in expected.items():
        got = seen[volume_id]
        assert got["tenant_id"] == want["tenant_id"]
        for op in ("read", "write", "flush", "discard"):
            for counter in (f"{op}_ios", f"{op}_ios_error", f"invalid_{op}_ios"):
                assert got[counter] == want[counter], (volume_id, counter)
            if op != "flush":
                assert got[f"{op}_bytes"] == want[f"{op}_bytes"], (volume_id, op)
            assert got[f"{op}_time_seconds"] == pytest.approx(
                want[f"total_{op}_time_ns"] / 1e9, rel=1e-15, abs=0)
    want_histograms = latency_histogram_oracle(sent_events)
    assert {v: {op: {k: h[k] for k in ("buckets", "count")} for op, h in ops.items()}
            for v, ops in histograms.items()} == {
        v: {op: {k: h[k] for k in ("buckets", "count")} for op, h in ops.items()}
        for v, ops in want_histograms.items()}
    for volume_id, ops in want_histograms.items():
        for op, want_h in ops.items():
            assert histograms[volume_id][op]["sum_s"] == pytest.approx(
                want_h["sum_ns"] / 1e9, rel=1e-15, abs=0), (volume_id, op)


LATENCY = "ioacct_volume_latency_seconds"
LE_TEXT = [f"{bound / 1e9:g}" for bound in LATENCY_LE_NS] + ["+Inf"]


def _add_histogram_samples(out: dict[str, dict[str, dict[str, Any]]], samples: Any) -> None:
    """ioacct_volume_latency_seconds samples into latency_histogram_oracle's form."""
    for sample in samples:
        row = out.setdefault(sample.labels["volume_id"], {}).setdefault(
            sample.labels["op"], {"buckets": [None] * len(LE_TEXT)})
        if sample.name == LATENCY + "_bucket":
            row["buckets"][LE_TEXT.index(sample.labels["le"])] = sample.value
        elif sample.name == LATENCY + "_count":
            row["count"] = sample.value
        else:
            row["sum_s"] = sample.value


def test_a_real_prometheus_scraping_both_workers_stores_the_oracles_counters(
    pipeline_settings: Settings, workers: list[WorkerProcess], sent_events: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    """Debian's Prometheus server scrapes both workers with the operator token; what its
    query API returns for every volume equals the brute-force oracle."""
    _wait_processed(pipeline_settings, workers)
    expected = counters_oracle(sent_events)
    with running_prometheus(tmp_path, [w.url for w in workers],
                            operator_token(pipeline_settings)) as prometheus:
        names = {"read_ios": "ioacct_volume_read_ios_total",
                 "write_bytes": "ioacct_volume_write_bytes_total",
                 "invalid_discard_ios": "ioacct_volume_invalid_discard_ios_total",
                 "flush_ios_error": "ioacct_volume_flush_ios_error_total"}
        for counter, metric in names.items():
            stored = wait_until(lambda m=metric: _complete(prometheus.query(m), expected), 90,
                                f"Prometheus to hold {metric} of every volume", workers)
            for volume_id, want in expected.items():
                assert stored[volume_id] == want[counter], (volume_id, counter)
        time_s = prometheus.query("ioacct_volume_read_time_seconds_total")
        for volume_id, want in expected.items():
            assert time_s[volume_id] == pytest.approx(want["total_read_time_ns"] / 1e9,
                                                      rel=1e-15, abs=0)
        _check_stored_histogram(prometheus, sent_events, workers)
        health = prometheus.query("ioacct_worker_events_counted_total")
        assert len(health) == 2, "one series per worker"
        up = prometheus.query('up{job="ioacct-worker"}')
        assert sorted(up.values()) == [1.0, 1.0]


def _complete(stored: dict[str, float], expected: dict[str, Any]) -> dict[str, float] | None:
    return stored if set(stored) == set(expected) else None


def _series(url: str, expr: str) -> list[tuple[dict[str, str], float]]:
    """An instant query's series: (labels, value)."""
    request = f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = orjson.loads(response.read())
    assert answer["status"] == "success", answer
    return [(s["metric"], float(s["value"][1])) for s in answer["data"]["result"]]


def _check_stored_histogram(prometheus: Any, sent_events: list[dict[str, Any]],
                            workers: list[WorkerProcess]) -> None:
    """The latency histogram of the busiest volume, as Prometheus stored it, bucket for
    bucket equals the oracle's (every op it has, every le, and _count)."""
    want = latency_histogram_oracle(sent_events)
    volume_id = max(want, key=lambda v: (sum(h["count"] for h in want[v].values()), v))
    assert len(want[volume_id]) >= 2, "the busiest volume has latencies of several ops"

    selector = f'{{volume_id="{volume_id}"}}'

    def stored() -> dict[str, dict[str, Any]] | None:
        got: dict[str, dict[str, Any]] = {}
        for labels, value in _series(prometheus.url, f"{LATENCY}_bucket{selector}"):
            row = got.setdefault(labels["op"], {"buckets": [None] * len(LE_TEXT)})
            row["buckets"][LE_TEXT.index(labels["le"])] = int(value)
        for labels, value in _series(prometheus.url, f"{LATENCY}_count{selector}"):
            got.setdefault(labels["op"], {})["count"] = int(value)
        complete = set(got) == set(want[volume_id]) and all(
            None not in row.get("buckets", [None]) and "count" in row for row in got.values())
        return got if complete else None

    got = wait_until(stored, 90, f"Prometheus to hold {volume_id}'s latency histogram", workers)
    assert got == {op: {"buckets": h["buckets"], "count": h["count"]}
                   for op, h in want[volume_id].items()}
