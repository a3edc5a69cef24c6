"""Monitoring view of the pipeline's numbers: CloudWatch-style 1 m records.

Pure logic: no faust, no aiokafka, no I/O. See docs/monitoring.md.

* :func:`monitoring_record` turns one 1 m window record (SEMANTICS.md section 3, as
  :func:`streams.core.windows.acc.window_stats` makes it, plus ``revision``) into a record in the
  vocabulary of the CloudWatch EBS volume metrics (Avro ``io.ioacct.VolumeMetrics1m``,
  ``schemas/monitoring_1m.avsc``), for the topic ``ioacct.monitoring.1m``. (The Prometheus
  text of a worker's ``/metrics`` is ``streams.api.prometheus``.)

Every division here is one correctly rounded division of exact integers (Python's ``int /
int``), never a float computed from another float, so a double in a record is the double
nearest to the exact rational value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streams.core.events import OPS
from streams.core.keys import window_key
from streams.core.times import NS_PER_S

MONITORING_PERIOD_S = 60
MONITORING_WINDOW_NS = MONITORING_PERIOD_S * NS_PER_S


def _seconds(ns: int) -> float:
    """Integer nanoseconds as seconds: the double nearest to ns / 1e9."""
    return ns / NS_PER_S


def _avg_latency_s(stats: Mapping[str, Any], op: str) -> float | None:
    """Mean latency of the window's ok+failed ``op`` requests in seconds; None when none.

    The same quantity as section 3's ``avg_{op}_latency_ns`` / 1e9, but computed from the
    exact integers (total time over ok+failed count) in one rounding.
    """
    timed = stats[f"{op}_ios"] + stats[f"{op}_ios_error"]
    if timed == 0:
        return None
    return int(stats[f"total_{op}_time_ns"]) / (timed * NS_PER_S)


def _optional_seconds(ns: int | None) -> float | None:
    return None if ns is None else _seconds(ns)


def monitoring_record(stats: Mapping[str, Any]) -> dict[str, Any]:
    """One ``ioacct.monitoring.1m`` record (Avro ``VolumeMetrics1m``) from a 1 m window.

    ``stats`` is one 1 m window record: the dict :func:`streams.core.windows.acc.window_stats`
    returns, plus ``revision``. The record names its metrics as CloudWatch does for EBS
    volumes, in CloudWatch's units (bytes, counts, seconds), adds the ones CloudWatch lacks
    (p99 latency, errors, invalid requests, flush and discard), and keeps the exact integer
    nanoseconds beside the seconds that CloudWatch uses for time.

    Mapping (``{op}`` counters are section 3's: the section 2 counters restricted to the
    events completing in the window; latency and times count ``ok`` and ``failed``
    requests, never ``invalid`` ones):

    * ``VolumeReadBytes`` / ``VolumeWriteBytes`` = ``{op}_bytes`` (ok requests).
    * ``VolumeReadOps`` / ``VolumeWriteOps`` = ``{op}_ios``: completed (``ok``) requests
      only, as CloudWatch counts completed operations; failed ones are in
      ``Volume{Op}Errors``.
    * ``VolumeTotalReadTime`` / ``VolumeTotalWriteTime`` = ``total_{op}_time_ns`` / 1e9:
      ok *and* failed requests (section 2, QEMU's ``account_failed=on``).
    * ``VolumeIdleTime`` = ``idle_time_ns`` / 1e9: the part of the minute with no ok/failed
      request of *any* op in flight (CloudWatch counts only reads and writes).
    * ``VolumeQueueLength``: the number of requests in flight averaged over the minute,
      i.e. iostat's ``aqu-sz``, which is what CloudWatch's ``VolumeQueueLength`` ("the
      number of read and write operation requests waiting to be completed", averaged over
      the period) measures. Here it is the sum over all four ops of section 3's
      ``avg_{op}_queue_depth``, computed as sum of ``{op}_inflight_time_ns`` / 60 s in one
      rounding. Flush and discard are included (CloudWatch counts reads and writes only).
    * ``VolumeAverageReadLatency`` / ``VolumeAverageWriteLatency`` = ``avg_{op}_latency_ns``
      / 1e9, over ok+failed requests, so with failures it is not ``VolumeTotal{Op}Time /
      Volume{Op}Ops``; None when there were no such requests. Named in CloudWatch's style:
      its classic set has no average latency (consoles derive it as total time / ops).
    * ``VolumeP99ReadLatency`` / ``VolumeP99WriteLatency`` = ``p99_{op}_latency_ns`` / 1e9
      (a histogram bin's upper bound, section 3); None when there were no requests.
    * ``Volume{Op}Errors`` = ``{op}_ios_error``; ``VolumeInvalidOps`` = the sum of
      ``invalid_{op}_ios`` over the four ops; ``VolumeFlushOps``, ``VolumeDiscardOps``,
      ``VolumeDiscardBytes`` as their section 3 counters.
    * ``total_read_time_ns``, ``total_write_time_ns``, ``idle_time_ns``: the exact integers.

    Raises ValueError when ``stats`` is not a 1 m window, KeyError when a field (such as
    ``revision``) is missing.
    """
    length = stats["window_length_ns"]
    if length != MONITORING_WINDOW_NS:
        raise ValueError(f"monitoring records are made of 1 m windows, got a window of "
                         f"{length} ns")
    inflight_ns = sum(int(stats[f"{op}_inflight_time_ns"]) for op in OPS)
    return {
        "volume_id": stats["volume_id"],
        "tenant_id": stats["tenant_id"],
        "timestamp_ns": stats["window_start_ns"],
        "period_s": MONITORING_PERIOD_S,
        "revision": stats["revision"],
        "VolumeReadBytes": stats["read_bytes"],
        "VolumeWriteBytes": stats["write_bytes"],
        "VolumeReadOps": stats["read_ios"],
        "VolumeWriteOps": stats["write_ios"],
        "VolumeTotalReadTime": _seconds(stats["total_read_time_ns"]),
        "VolumeTotalWriteTime": _seconds(stats["total_write_time_ns"]),
        "VolumeIdleTime": _seconds(stats["idle_time_ns"]),
        "VolumeQueueLength": inflight_ns / length,
        "VolumeAverageReadLatency": _avg_latency_s(stats, "read"),
        "VolumeAverageWriteLatency": _avg_latency_s(stats, "write"),
        "VolumeP99ReadLatency": _optional_seconds(stats["p99_read_latency_ns"]),
        "VolumeP99WriteLatency": _optional_seconds(stats["p99_write_latency_ns"]),
        "VolumeReadErrors": stats["read_ios_error"],
        "VolumeWriteErrors": stats["write_ios_error"],
        "VolumeFlushErrors": stats["flush_ios_error"],
        "VolumeDiscardErrors": stats["discard_ios_error"],
        "VolumeInvalidOps": sum(stats[f"invalid_{op}_ios"] for op in OPS),
        "VolumeFlushOps": stats["flush_ios"],
        "VolumeDiscardOps": stats["discard_ios"],
        "VolumeDiscardBytes": stats["discard_bytes"],
        "total_read_time_ns": stats["total_read_time_ns"],
        "total_write_time_ns": stats["total_write_time_ns"],
        "idle_time_ns": stats["idle_time_ns"],
    }


def monitoring_key(record: Mapping[str, Any]) -> bytes:
    """Kafka key of a monitoring record: ``volume_id/window_start_ns``, as the stats topics.

    The topic is compacted, so the latest revision of a minute replaces the earlier ones.
    """
    return window_key(str(record["volume_id"]), record["timestamp_ns"])


# Seconds from a 1 s window's end to its first emission: grace + at most the idle timeout
# when the pipeline keeps up (SEMANTICS.md section 4).
CLOSE_DELAY_BUCKETS_S: tuple[float, ...] = (0.5, 1, 2, 3, 5, 8, 13, 30, 60, 120)
_CLOSE_DELAY_BOUNDS_NS = np.array([bound * 1e9 for bound in CLOSE_DELAY_BUCKETS_S])


@dataclass
class CloseDelays:
    """A Prometheus histogram of window close delays, kept by the worker."""

    counts: list[int] = field(default_factory=lambda: [0] * len(CLOSE_DELAY_BUCKETS_S))
    total: int = 0
    sum_ns: int = 0

    def observe(self, delay_ns: int) -> None:
        self.total += 1
        self.sum_ns += delay_ns
        for i, bound in enumerate(CLOSE_DELAY_BUCKETS_S):
            if delay_ns <= bound * 1e9:
                self.counts[i] += 1
                break

    def observe_many(self, delays_ns: list[int]) -> None:
        """:meth:`observe` each (one pass of numpy over a unit's windows)."""
        if not delays_ns:
            return
        self.total += len(delays_ns)
        self.sum_ns += sum(delays_ns)
        bucket = np.searchsorted(_CLOSE_DELAY_BOUNDS_NS, np.array(delays_ns, dtype=np.float64),
                                 side="left")
        for i, n in enumerate(np.bincount(bucket, minlength=len(self.counts) + 1)
                              [:len(self.counts)].tolist()):
            self.counts[i] += n
