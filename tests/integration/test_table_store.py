"""The worker's tables on RocksDB (the default store), on the real broker: a cleanly
stopped worker resumes from its local tables plus the changelog's tail; one killed -9
restores its newest valid checkpoint (or, here, an older one) and reads the changelog
from there, or, with
checkpoints off, drops its tables and rebuilds them from the changelog. Every way every
counter equals the oracle.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.config import REPO_ROOT, Settings
from streams.pipeline.app import tables_dir
from streams.pipeline.checkpoints import CHECKPOINTS, newest_valid
from streams.pipeline.tables import CLEAN_MARK
from tests.conftest import free_port
from tests.oracles.counters import counters_oracle

from .harness import (
    WorkerProcess,
    counter_mismatches,
    ioacct,
    settings_env,
    start_worker,
    wait_committed,
    wait_until,
)

pytestmark = pytest.mark.integration


def _produce(settings: Settings, tmp: Path, run: int) -> list[dict[str, Any]]:
    """The same seeded fleet each run (a volume keeps its tenant), at other times and from
    another producer: new events to count."""
    jsonl = tmp / f"events-{run}.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "produce", "--sim", "--events", "3000",
         "--volumes", "40", "--seed", "7", "--write-jsonl", str(jsonl)],
        env=settings_env(settings), cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return [orjson.loads(line) for line in jsonl.read_bytes().splitlines()]


def _started(settings: Settings, port: int, log_dir: Path) -> WorkerProcess:
    worker = start_worker(settings, port, log_dir)
    wait_until(lambda: worker.get("/status")[1].get("assigned_partitions"), 120,
               "the worker to be assigned", [worker])
    return worker


def _equal_oracle(settings: Settings, worker: WorkerProcess,
                  events: list[dict[str, Any]]) -> None:
    wait_committed(settings, [worker])
    diffs = counter_mismatches(worker, counters_oracle(events))
    assert not diffs, f"{len(diffs)} differences, first: {diffs[:10]}"


def _saved_checkpoint(tables: Path, tmp: Path) -> Path:
    """A copy of the newest valid checkpoint (made while the worker runs: it keeps two,
    and prunes the older one only when a third is valid)."""
    newest = newest_valid(tables)
    assert newest is not None
    return Path(shutil.copytree(newest, tmp / "saved" / newest.name))


def _killed(worker: WorkerProcess, tables: Path) -> None:
    worker.process.send_signal(signal.SIGKILL)
    worker.process.wait()
    assert not (tables / CLEAN_MARK).exists()


def test_clean_stop_resumes_local_tables_and_a_kill_restores_or_rebuilds_them(
    pipeline_settings: Settings, tmp_path: Path,
) -> None:
    settings = pipeline_settings.with_overrides(topic_prefix="tstore", table_checkpoint_s=1.0,
                                                heap_release_s=1.0)
    assert settings.table_store == "rocksdb"
    assert ioacct(settings, "topics").returncode == 0
    port = free_port()
    tables = tables_dir(settings.with_overrides(web_port=port))
    worker = _started(settings, port, tmp_path)
    events = _produce(settings, tmp_path, 1)
    _equal_oracle(settings, worker, events)
    assert list(tables.glob("windows-*.db")) and not (tables / CLEAN_MARK).exists()
    wait_until(lambda: worker.get("/status")[1]["table_checkpoints"] >= 1, 60,
               "a valid checkpoint of the tables", [worker])
    wait_until(lambda: worker.get("/status")[1]["heap_releases"] >= 1, 30,
               "free heap given back (pipeline/heap.py)", [worker])
    old = _saved_checkpoint(tables, tmp_path)  # of run 1 alone
    worker.stop()  # SIGTERM: a clean stop
    assert worker.process.returncode == 0, worker.log_tail()
    assert (tables / CLEAN_MARK).exists(), worker.log_tail()

    worker = _started(settings, port, tmp_path)  # resumes: the mark is taken
    assert not (tables / CLEAN_MARK).exists()
    assert "did not stop cleanly" not in worker.log_path.read_text()
    events += _produce(settings, tmp_path, 2)
    _equal_oracle(settings, worker, events)

    _killed(worker, tables)
    # The checkpoint of run 1 in place of the newer ones: run 2 comes from the changelog.
    shutil.rmtree(tables / CHECKPOINTS)
    shutil.copytree(old, tables / CHECKPOINTS / old.name)
    worker = _started(settings, port, tmp_path)
    log = worker.log_path.read_text()
    assert "did not stop cleanly" in log and f"restored from {old.name}" in log, log[-2000:]
    assert worker.get("/status")[1]["tables_at_start"] == "restored"
    _equal_oracle(settings, worker, events)
    events += _produce(settings, tmp_path, 3)
    _equal_oracle(settings, worker, events)

    wait_until(lambda: worker.get("/status")[1]["table_checkpoints"] >= 2, 60,
               "two valid checkpoints of the tables", [worker])
    _killed(worker, tables)  # now from its own newest checkpoint
    worker = _started(settings, port, tmp_path)
    assert "restored from valid-" in worker.log_path.read_text()
    events += _produce(settings, tmp_path, 4)
    _equal_oracle(settings, worker, events)

    _killed(worker, tables)
    off = settings.with_overrides(table_checkpoint_s=0.0)
    worker = _started(off, port, tmp_path)
    try:
        assert "dropped and rebuilt from the changelog" in worker.log_path.read_text()
        assert worker.get("/status")[1]["tables_at_start"] == "rebuilt"
        events += _produce(off, tmp_path, 5)
        _equal_oracle(off, worker, events)
    finally:
        worker.stop()
