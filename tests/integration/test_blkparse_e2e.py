"""blkparse for real: the shipped sample is what the real blkparse prints for the binary
trace in tests/blktrace_binary.py, and `ioacct produce --blkparse` sends it, through the
real command line and broker, into counters that match the pure parser and blkparse's
own summary."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.config import Settings
from streams.sources.blkparse import BlkparseSource, VolumeTarget
from streams.sources.report import SourceReport
from tests.blktrace_binary import sample_trace
from tests.oracles.counters import counters_oracle

from .harness import WorkerProcess, ioacct, running_worker, wait_until

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).parent.parent / "unit" / "sources" / "data" / "blkparse_sample.txt"
SUFFIX = uuid.uuid4().hex[:8]
VOLUMES = {"8,0": VolumeTarget(f"bp-a-{SUFFIX}", "tenant-1"),
           "8,16": VolumeTarget(f"bp-b-{SUFFIX}", "tenant-2")}


def test_the_sample_is_what_blkparse_prints() -> None:
    blkparse = shutil.which("blkparse")
    assert blkparse, "blkparse is not installed: run `bash deploy/debian-packages.sh blktrace`"
    printed = subprocess.run([blkparse, "-i", "-"], input=sample_trace(), capture_output=True,
                             check=True, timeout=60).stdout.decode()
    assert printed == SAMPLE.read_text()


@pytest.fixture(scope="module")
def worker(pipeline_settings: Settings, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[WorkerProcess]:
    with running_worker(pipeline_settings, Path(tmp_path_factory.mktemp("w"))) as started:
        yield started


def test_produce_blkparse_counts_every_request_once(pipeline_settings: Settings,
                                                    worker: WorkerProcess) -> None:
    start_ns = time.time_ns() - 60 * 10**9
    mapping = ",".join(f"{dev}={t.volume_id}:{t.tenant_id}" for dev, t in VOLUMES.items())
    result = ioacct(pipeline_settings, "produce", "--blkparse", "-", "--volume-map", mapping,
                    "--start-ns", str(start_ns), input=SAMPLE.read_text())
    assert result.returncode == 0, result.stderr
    print(result.stdout)
    for device in ("8,0", "8,16", "8,32"):
        assert any(line.startswith(f"  {device}: ") and line.endswith(": agree")
                   for line in result.stdout.splitlines()), device
    assert "1 x completion (C) with no issue (D) before it" in result.stdout
    assert "1 x issue (D) with no completion (C) by the end of the input" in result.stdout
    events = BlkparseSource(VOLUMES, SourceReport("oracle"), start_ns).events(
        SAMPLE.read_text().splitlines())
    expected = counters_oracle(e.to_json() for e in events)
    for target in VOLUMES.values():
        want = expected[target.volume_id]

        def counted(volume_id: str = target.volume_id, want: dict = want) -> bool:
            status, body = worker.get(f"/volumes/{volume_id}/counters")
            return status == 200 and all(body[k] == v for k, v in want.items()
                                         if k != "idle_time_ns")

        wait_until(counted, 90, f"{target.volume_id}'s counters", [worker])
