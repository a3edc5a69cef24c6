"""fio's per-I/O latency log -> SEMANTICS.md events.

Pure logic: no faust, no aiokafka, no files. fio writes one line per finished
I/O when a job has ``write_lat_log=NAME``, ``log_avg_msec=0`` and
``log_offset=1``:

    time_ms, latency_ns, direction, block_size, offset[, priority]

``time_ms`` counts from the job's start (fio's ``td->epoch``), or is a Unix
time in ms when the job also has ``log_unix_epoch=1``. fio writes three such
logs: ``NAME_lat.N.log`` (total latency: from fio's submission of the I/O to
its completion), ``NAME_clat.N.log`` (completion latency, without the
submission part) and ``NAME_slat.N.log`` (submission latency only). We read
the ``_lat`` log: its latency is what SEMANTICS.md calls latency (request
accepted -> completed), and it is what fio's JSON reports as ``lat_ns``. So

    complete_ns = job start + time_ms * 1e6,  submit_ns = complete_ns - latency_ns

and the check against fio is ``lat_ns`` (mean, and percentiles with
``lat_percentiles=1``). ``time_ms`` has a resolution of 1 ms; latencies are
exact nanoseconds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from streams.core.events import IoEvent
from streams.sources.report import SourceReport

NS_PER_MS = 1_000_000
# fio's enum fio_ddir: 0 read, 1 write, 2 trim, 3 sync (fsync), 4 datasync (fdatasync).
FIO_DIRECTIONS: dict[int, str] = {0: "read", 1: "write", 2: "discard", 3: "flush", 4: "flush"}
# A relative time_ms this large would be a 31-year job: the log has log_unix_epoch=1.
UNIX_EPOCH_MS_MIN = 10**12
# An epoch in ns before 2001-09-09 is a unit mistake (s or ms given for ns).
START_NS_MIN = 10**18

_LOG_NAME_RE = re.compile(r"_(lat|clat|slat)\.(\d+)\.log$")


class FioLogError(ValueError):
    """A line or a JSON report fio would not have written; the message is the reason."""


@dataclass(frozen=True, slots=True)
class FioLogLine:
    """One line of a latency log."""

    time_ms: int
    latency_ns: int
    direction: int
    block_size: int
    offset: int


def parse_log_line(text: str) -> FioLogLine:
    """Parse ``time, latency, direction, bs, offset[, prio]``; raise FioLogError otherwise."""
    fields = [f.strip() for f in text.split(",")]
    if len(fields) < 5:
        raise FioLogError(f"{len(fields)} columns, expected 5 or 6 (time, latency, "
                          "direction, block size, offset[, priority]): was the log written "
                          "with log_offset=1?")
    if len(fields) > 6:
        raise FioLogError(f"{len(fields)} columns, expected 5 or 6")
    try:
        time_ms, latency_ns, direction, block_size, offset = (int(f) for f in fields[:5])
    except ValueError:
        raise FioLogError("a column is not an integer") from None
    if min(time_ms, latency_ns, block_size, offset) < 0:
        raise FioLogError("a negative time, latency, block size or offset")
    return FioLogLine(time_ms, latency_ns, direction, block_size, offset)


def log_kind(path: str) -> str | None:
    """``lat``, ``clat`` or ``slat`` from fio's file name ``NAME_<kind>.<job>.log``."""
    match = _LOG_NAME_RE.search(path)
    return match.group(1) if match else None


def log_job_number(path: str) -> int | None:
    """fio's job number (1-based, in the order of the JSON report's ``jobs``) from the name."""
    match = _LOG_NAME_RE.search(path)
    return int(match.group(2)) if match else None


def job_start_ns(report: dict[str, Any], job_number: int | None) -> int:
    """The epoch ns at which a job's log times start, from fio's JSON report.

    fio >= 3.36 writes ``job_start`` (ms since the epoch) per job. Older fio (3.33
    on Debian 12) does not: then ``timestamp_ms`` (when the report was written,
    after the last job ended) minus the job's ``job_runtime`` (ms), which is off
    by the few ms fio spends between the last I/O and the report, and is only
    right for a job that ran until the end. ``log_unix_epoch=1`` needs neither.
    """
    jobs = report.get("jobs")
    if not isinstance(jobs, list) or not jobs:
        raise FioLogError("the fio JSON report has no jobs")
    if job_number is None:
        if len(jobs) > 1:
            raise FioLogError(f"the report has {len(jobs)} jobs and the log's name "
                              "does not say which (NAME_lat.N.log)")
        job_number = 1
    if not 1 <= job_number <= len(jobs):
        raise FioLogError(f"the log is job {job_number}, the report has {len(jobs)} job(s)")
    job = jobs[job_number - 1]
    if isinstance(job.get("job_start"), int) and job["job_start"] > 0:
        return int(job["job_start"]) * NS_PER_MS
    stamp_ms, runtime_ms = report.get("timestamp_ms"), job.get("job_runtime")
    if not isinstance(stamp_ms, int) or not isinstance(runtime_ms, int):
        raise FioLogError("the report has neither job_start nor timestamp_ms and job_runtime")
    return (stamp_ms - runtime_ms) * NS_PER_MS


def check_start_ns(start_ns: int) -> None:
    if start_ns < START_NS_MIN:
        raise FioLogError(f"start {start_ns} is not in epoch nanoseconds (it would be "
                          "before 2001-09-09: seconds or milliseconds?)")


def to_event(line: FioLogLine, volume_id: str, tenant_id: str, start_ns: int | None,
             host_id: str | None = None) -> IoEvent:
    """The event of one log line; ``start_ns`` is the job's start (None: epoch times)."""
    op = FIO_DIRECTIONS.get(line.direction)
    if op is None:
        raise FioLogError(f"direction {line.direction} is not read/write/trim/sync")
    if line.time_ms >= UNIX_EPOCH_MS_MIN:
        complete_ns = line.time_ms * NS_PER_MS
    elif start_ns is None:
        raise FioLogError("times are relative to the job's start: give --start-ns or "
                          "--fio-json (or write the log with log_unix_epoch=1)")
    else:
        complete_ns = start_ns + line.time_ms * NS_PER_MS
    flush = op == "flush"
    return IoEvent(volume_id=volume_id, tenant_id=tenant_id, op=op, status="ok",
                   offset=0 if flush else line.offset, bytes=0 if flush else line.block_size,
                   submit_ns=complete_ns - line.latency_ns, complete_ns=complete_ns,
                   host_id=host_id)


def fio_events(lines: Iterable[str], volume_id: str, tenant_id: str, start_ns: int | None,
               report: SourceReport, host_id: str | None = None) -> Iterator[IoEvent]:
    """One event per log line; lines fio would not write are skipped into ``report``."""
    for line_no, text in enumerate(lines, 1):
        report.lines += 1
        if not text.strip():
            report.other_line("blank line")
            continue
        try:
            event = to_event(parse_log_line(text), volume_id, tenant_id, start_ns, host_id)
        except FioLogError as exc:
            report.skip(str(exc), line_no)
            continue
        report.on_event(event)
        yield event
