"""Prometheus text exposition format 0.0.4 of cumulative per-volume counters
(SEMANTICS.md section 2, as :meth:`streams.core.counters.VolumeState.counters_json` makes
them) and cumulative per-volume latency histograms, for a worker's ``/metrics`` view. See
docs/monitoring.md.

Pure: no faust, no aiohttp. Values are exact: integers as printed integers, times as the
exact decimal of integer nanoseconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from streams.core.counters import COUNTER_NAMES, HISTOGRAM_BOUNDS_NS, LATENCY_BINS
from streams.core.times import NS_PER_S

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METRIC_PREFIX = "ioacct_volume_"


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


LATENCY_FAMILY = f"{METRIC_PREFIX}latency_seconds"
# The `le` label of each bin, as Go's client libraries print a float ("1e-05", "0.5", "10"):
# short decimals, so exactly the section 3 bounds in seconds.
LATENCY_LE: tuple[str, ...] = (*(f"{b / NS_PER_S:g}" for b in HISTOGRAM_BOUNDS_NS), "+Inf")
_LATENCY_HELP = ("Seconds from submit to completion of ok and failed requests, by op: "
                 "cumulative since the volume's first event, exact (SEMANTICS.md section 3's "
                 "latency rule and 19 bounds; le inclusive).")
# A volume's histograms as VolumeState.latency_histograms gives them: op -> (bins, sum ns).
OpHistograms = Mapping[str, tuple[Sequence[int], int]]


def latency_text(volumes: Iterable[tuple[str, str, OpHistograms]]) -> str:
    """Prometheus text (0.0.4) of the per-volume, per-op cumulative latency histograms: one
    classic histogram family ``ioacct_volume_latency_seconds``, samples ``_bucket`` (labels
    ``volume_id``, ``tenant_id``, ``op``, ``le``: the counts at or below each bound, then
    ``+Inf``), ``_sum`` (exact decimal seconds of the integer ns) and ``_count``.

    ``volumes``: (volume_id, tenant_id, histograms) triples. An op without any latency is
    left out (its series appear with its first request, as client libraries do); volumes
    are sorted by volume_id; a repeated volume_id is a ValueError.
    """
    rows = sorted(volumes, key=lambda item: item[0])
    for (a, _, _), (b, _, _) in zip(rows, rows[1:], strict=False):
        if a == b:
            raise ValueError(f"volume {a!r} given twice")
    lines = [f"# HELP {LATENCY_FAMILY} {_escape_help(_LATENCY_HELP)}\n",
             f"# TYPE {LATENCY_FAMILY} histogram\n"]
    for volume_id, tenant_id, histograms in rows:
        for op, (bins, sum_ns) in histograms.items():
            lines += _histogram_lines(
                f'volume_id="{_escape_label(volume_id)}",tenant_id="{_escape_label(tenant_id)}"'
                f',op="{_escape_label(op)}"', bins, sum_ns)
    return "".join(lines)


def _histogram_lines(labels: str, bins: Sequence[int], sum_ns: int) -> list[str]:
    if len(bins) != LATENCY_BINS:
        raise ValueError(f"{len(bins)} latency bins, not {LATENCY_BINS}")
    cumulative, lines = 0, []
    for le, count in zip(LATENCY_LE, bins, strict=True):
        cumulative += int(_int_text(count))
        lines.append(f'{LATENCY_FAMILY}_bucket{{{labels},le="{le}"}} {cumulative}\n')
    if not cumulative:
        return []
    lines.append(f"{LATENCY_FAMILY}_sum{{{labels}}} {_seconds_text(sum_ns)}\n")
    lines.append(f"{LATENCY_FAMILY}_count{{{labels}}} {cumulative}\n")
    return lines
