"""Monitoring views of the pipeline's numbers: CloudWatch-style 1 m records, Prometheus text.

Pure logic: no faust, no aiokafka, no I/O. See docs/monitoring.md.

* :func:`monitoring_record` turns one 1 m window record (SEMANTICS.md section 3, as
  :func:`streams.core.windows.acc.window_stats` makes it, plus ``revision``) into a record in the
  vocabulary of the CloudWatch EBS volume metrics (Avro ``io.ioacct.VolumeMetrics1m``,
  ``schemas/monitoring_1m.avsc``), for the topic ``ioacct.monitoring.1m``.
* :func:`prometheus_text` renders cumulative per-volume counters (SEMANTICS.md section 2, as
  :meth:`streams.core.counters.VolumeState.counters_json` makes them) in the Prometheus text
  exposition format 0.0.4, for a worker's ``/metrics`` view.

Every division here is one correctly rounded division of exact integers (Python's ``int /
int``), never a float computed from another float, so a double in a record is the double
nearest to the exact rational value.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from streams.core.counters import COUNTER_NAMES
from streams.core.events import OPS
from streams.core.keys import window_key
from streams.core.times import NS_PER_S

MONITORING_PERIOD_S = 60
MONITORING_WINDOW_NS = MONITORING_PERIOD_S * NS_PER_S
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METRIC_PREFIX = "ioacct_volume_"


# --- the ioacct.monitoring.1m record ---------------------------------------------------------

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


# --- Prometheus text exposition format 0.0.4 -------------------------------------------------

def _metric_for(counter: str) -> tuple[str, str, bool]:
    """(family name, HELP text, value in seconds?) of one section 2 counter name."""
    if counter.startswith("total_") and counter.endswith("_time_ns"):
        op = counter[len("total_"):-len("_time_ns")]
        return (f"{METRIC_PREFIX}{op}_time_seconds_total",
                f"Seconds spent by ok and failed {op} requests, submit to completion "
                f"(SEMANTICS.md section 2 {counter} / 1e9, exact).", True)
    if counter.startswith("invalid_"):
        op = counter[len("invalid_"):-len("_ios")]
        what = f"{op} requests with status invalid, rejected before any I/O"
    elif counter.endswith("_ios_error"):
        what = f"{counter[:-len('_ios_error')]} requests with status failed"
    elif counter.endswith("_ios"):
        what = f"{counter[:-len('_ios')]} requests with status ok"
    elif counter.endswith("_bytes"):
        what = f"Bytes of {counter[:-len('_bytes')]} requests with status ok"
    else:  # a counter added to SEMANTICS.md section 2 that this module does not know yet
        raise ValueError(f"no Prometheus name for counter {counter!r}")
    return (f"{METRIC_PREFIX}{counter}_total",
            f"{what[0].upper()}{what[1:]} (SEMANTICS.md section 2 {counter}).", False)


# (family, type, HELP, key in counters_json, value in seconds?), in exposition order.
_FAMILIES: tuple[tuple[str, str, str, str, bool], ...] = (
    *((name, "counter", help_text, counter, seconds)
      for counter, _slot in COUNTER_NAMES
      for name, help_text, seconds in [_metric_for(counter)]),
    (f"{METRIC_PREFIX}rejected_events_total", "counter",
     "Events of this volume rejected to the dead-letter topic (SEMANTICS.md section 1).",
     "rejected", False),
    (f"{METRIC_PREFIX}last_io_seconds", "gauge",
     "Epoch seconds of the latest complete_ns of any event of any status (SEMANTICS.md "
     "section 2 last_io_ns / 1e9, exact).", "last_io_ns", True),
)
METRIC_FAMILIES: tuple[str, ...] = tuple(f[0] for f in _FAMILIES)


def _int_text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"counter values are integers, got {value!r}")
    return str(value)


def _seconds_text(ns: Any) -> str:
    """Integer nanoseconds as an exact decimal number of seconds ("1.5", "-0.000000001")."""
    _int_text(ns)
    sign = "-" if ns < 0 else ""
    whole, frac = divmod(abs(ns), NS_PER_S)
    return f"{sign}{whole}.{frac:09d}".rstrip("0").rstrip(".") if frac else f"{sign}{whole}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def prometheus_text(volumes: Iterable[tuple[str, Mapping[str, Any]]]) -> str:
    """Prometheus text exposition (format 0.0.4) of cumulative per-volume counters.

    ``volumes``: (volume_id, counters) pairs, the counters as
    :meth:`streams.core.counters.VolumeState.counters_json` returns them. Families, in the
    order of SEMANTICS.md section 2, each with ``# HELP`` and ``# TYPE``, every sample
    labelled ``volume_id`` and ``tenant_id``:

    * ``ioacct_volume_{counter}_total`` (counter) for every section 2 counter except the
      times, e.g. ``ioacct_volume_read_bytes_total``, ``ioacct_volume_read_ios_total``,
      ``ioacct_volume_read_ios_error_total``, ``ioacct_volume_invalid_read_ios_total``;
    * ``ioacct_volume_{op}_time_seconds_total`` (counter) for ``total_{op}_time_ns``, in
      seconds as Prometheus' base unit and node_exporter's
      ``node_disk_read_time_seconds_total`` have it;
    * ``ioacct_volume_rejected_events_total`` (counter): the volume's dead-lettered events;
    * ``ioacct_volume_last_io_seconds`` (gauge): ``last_io_ns`` / 1e9, absent while None.

    Values are exact: counts are printed as Python integers (however large, even past
    2**53, where a float64 would round), seconds as the exact decimal of the integer
    nanoseconds (``1234.000000567``). Prometheus itself stores float64 samples, so it
    rounds values past 2**53; the text does not. ``idle_time_ns`` is not exported: it
    depends on the query time, and ``time() - ioacct_volume_last_io_seconds`` gives it.

    Label values are escaped as the format requires (backslash, double quote, newline).
    Volumes are sorted by volume_id, so the same counters always give the same text.
    Raises ValueError on a repeated volume_id, TypeError on a non-integer counter.
    """
    rows = sorted(volumes, key=lambda item: item[0])
    for (a, _), (b, _) in zip(rows, rows[1:], strict=False):
        if a == b:
            raise ValueError(f"volume {a!r} given twice")
    labels = [f'{{volume_id="{_escape_label(vid)}",'
              f'tenant_id="{_escape_label(str(counters["tenant_id"]))}"}}'
              for vid, counters in rows]
    return "".join(_lines(rows, labels))


def _lines(rows: list[tuple[str, Mapping[str, Any]]], labels: list[str]) -> Iterator[str]:
    for name, kind, help_text, key, seconds in _FAMILIES:
        yield f"# HELP {name} {_escape_help(help_text)}\n"
        yield f"# TYPE {name} {kind}\n"
        for (_vid, counters), label in zip(rows, labels, strict=True):
            value = counters[key]
            if value is None:
                continue
            yield f"{name}{label} {_seconds_text(value) if seconds else _int_text(value)}\n"
