"""A worker's own health in Prometheus text (docs/monitoring.md, "Worker health"): what it
processed and rejected, how far behind each input partition it is, whether it is
recovering, how late its windows close, and the standard process metrics.

Pure: no faust, no aiohttp; the view gathers the figures and this module prints them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from streams.core.monitoring import CLOSE_DELAY_BUCKETS_S, CloseDelays

WORKER_PREFIX = "ioacct_worker_"
# (WorkerStats field, metric suffix, HELP): the worker's counters since it started.
STAT_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("records", "records_total", "Raw records handled (each offset once)."),
    ("events_counted", "events_counted_total", "Events counted into a volume's state."),
    ("events_rejected", "events_rejected_total", "Events dead-lettered with a reason."),
    ("records_rejected", "records_rejected_total", "Raw records dead-lettered whole."),
    ("replays_skipped", "replays_skipped_total",
     "Volume parts of raw records skipped as replays of what was applied."),
    ("dead_letters_failed", "dead_letters_failed_total",
     "Dead letters that could not be published even in their minimal form."),
    ("commit_stalls", "commit_stalls_total",
     "Times a partition's commit was seen held while processed records waited past it."),
    ("records_seen_again", "records_seen_again_total",
     "Records faust delivered a second time (handled once)."),
    ("records_read_past_faust", "records_read_past_faust_total",
     "Records faust skipped, read directly by the guard."),
    ("steps", "steps_total", "Steps of the accounting agent (raw records taken together)."),
    ("records_dropped_revoked", "records_dropped_revoked_total",
     "Buffered records of a partition revoked before their step (its next owner reads them)."),
    ("registry_catch_ups", "registry_catch_ups_total",
     "Reads of the volume registry to its end, for volumes the worker did not know."),
    ("table_checkpoints", "table_checkpoints_total",
     "Checkpoints of the tables made valid: what a worker killed -9 restarts from."),
)
@dataclass(frozen=True)
class PartitionLag:
    """One input partition this worker owns: its end, what was handled, what committed."""

    topic: str
    partition: int
    highwater: int | None  # the next offset to be written (None: not fetched yet)
    handled: int | None  # the next offset the agent will handle
    committed: int | None  # the group's committed offset


def _family(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


def _lag(end: int | None, at: int | None) -> int | None:
    return None if end is None or at is None else max(0, end - at)


def lag_lines(lags: Iterable[PartitionLag]) -> list[str]:
    lags = sorted(lags, key=lambda x: (x.topic, x.partition))
    lines: list[str] = []
    for suffix, pick, help_text in (
        ("consumer_lag_records", lambda x: _lag(x.highwater, x.handled),
         "Records written to an owned input partition and not yet handled."),
        ("commit_lag_records", lambda x: _lag(x.highwater, x.committed),
         "Records of an owned input partition past the group's committed offset."),
    ):
        lines += _family(WORKER_PREFIX + suffix, "gauge", help_text)
        for x in lags:
            value = pick(x)
            if value is not None:
                lines.append(f'{WORKER_PREFIX}{suffix}{{topic="{x.topic}",'
                             f'partition="{x.partition}"}} {value}')
    return lines


def close_delay_lines(delays: CloseDelays) -> list[str]:
    name = WORKER_PREFIX + "window_close_delay_seconds"
    lines = _family(name, "histogram", "Seconds from a 1 s window's end to its first "
                    "emission (grace + idle timeout at most, when keeping up).")
    cumulative = 0
    for bound, count in zip(CLOSE_DELAY_BUCKETS_S, delays.counts, strict=True):
        cumulative += count
        lines.append(f'{name}_bucket{{le="{bound:g}"}} {cumulative}')
    lines.append(f'{name}_bucket{{le="+Inf"}} {delays.total}')
    lines.append(f"{name}_sum {delays.sum_ns / 1e9:.9f}")
    lines.append(f"{name}_count {delays.total}")
    return lines


def process_lines(pid: int | None = None) -> list[str]:
    """The standard process_* metrics of Prometheus' client libraries, from /proc."""
    proc = f"/proc/{pid or os.getpid()}"
    with open(f"{proc}/stat") as f:
        stat = f.read().rsplit(")", 1)[1].split()
    ticks, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    with open("/proc/stat") as f:
        boot_s = next(int(line.split()[1]) for line in f if line.startswith("btime"))
    cpu_s = (int(stat[11]) + int(stat[12])) / ticks  # utime + stime
    lines = _family("process_cpu_seconds_total", "counter", "User and system CPU seconds.")
    lines.append(f"process_cpu_seconds_total {cpu_s:.2f}")
    lines += _family("process_resident_memory_bytes", "gauge", "Resident memory in bytes.")
    lines.append(f"process_resident_memory_bytes {int(stat[21]) * page}")
    lines += _family("process_virtual_memory_bytes", "gauge", "Virtual memory in bytes.")
    lines.append(f"process_virtual_memory_bytes {int(stat[20])}")
    lines += _family("process_open_fds", "gauge", "Open file descriptors.")
    lines.append(f"process_open_fds {len(os.listdir(f'{proc}/fd'))}")
    lines += _family("process_start_time_seconds", "gauge", "Start time, seconds since epoch.")
    lines.append(f"process_start_time_seconds {boot_s + int(stat[19]) / ticks:.2f}")
    return lines


def worker_text(stats: Mapping[str, object], lags: Iterable[PartitionLag], recovering: bool,
                delays: CloseDelays, started_ns: int, now_ns: int | None = None) -> str:
    """The worker's health families, in Prometheus text format 0.0.4."""
    lines: list[str] = []
    for key, suffix, help_text in STAT_COUNTERS:
        lines += _family(WORKER_PREFIX + suffix, "counter", help_text)
        lines.append(f"{WORKER_PREFIX}{suffix} {int(stats[key])}")  # type: ignore[call-overload]
    lines += lag_lines(lags)
    lines += _family(WORKER_PREFIX + "recovering", "gauge",
                     "1 while the worker rebuilds tables from their changelogs, else 0.")
    lines.append(f"{WORKER_PREFIX}recovering {int(recovering)}")
    lines += _family(WORKER_PREFIX + "uptime_seconds", "gauge", "Seconds since it started.")
    now_ns = time.time_ns() if now_ns is None else now_ns
    lines.append(f"{WORKER_PREFIX}uptime_seconds {(now_ns - started_ns) / 1e9:.3f}")
    lines += close_delay_lines(delays)
    lines += process_lines()
    return "\n".join(lines) + "\n"
