"""fio's per-I/O latency log -> events: columns, directions, the job's start, properties."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.sources.fio import (
    FioLogError,
    FioLogLine,
    check_start_ns,
    fio_events,
    job_start_ns,
    log_job_number,
    log_kind,
    parse_log_line,
    to_event,
)
from streams.sources.report import SourceReport
from tests.oracles.counters import counters_oracle

START_NS = 1_700_000_000_000_000_000
MS = 1_000_000

# as fio 3.33 writes it with write_lat_log, log_avg_msec=0, log_offset=1 (6th: priority)
SAMPLE_LOG = """\
0, 203552, 0, 4096, 249856, 0
0, 71064, 1, 4096, 3104768, 0
1, 54643, 0, 8192, 3534848, 0
3, 1000000, 2, 65536, 0, 0
3, 20000, 3, 0, 0, 0
0, x, 0, 4096, 0, 0
5, 12345, 1, 4096
7, 30000, 9, 4096, 0, 0

12, 99999, 1, 4096, 8192, 0
"""


def test_the_sample_log_gives_hand_checked_events_and_counters() -> None:
    report = SourceReport("test")
    events = list(fio_events(SAMPLE_LOG.splitlines(), "vol-f", "ten-f", START_NS, report))
    assert [(e.op, e.offset, e.bytes, e.submit_ns, e.complete_ns) for e in events] == [
        ("read", 249856, 4096, START_NS - 203552, START_NS),
        ("write", 3104768, 4096, START_NS - 71064, START_NS),
        ("read", 3534848, 8192, START_NS + MS - 54643, START_NS + MS),
        ("discard", 0, 65536, START_NS + 3 * MS - 1_000_000, START_NS + 3 * MS),  # trim
        ("flush", 0, 0, START_NS + 3 * MS - 20000, START_NS + 3 * MS),            # fsync
        ("write", 8192, 4096, START_NS + 12 * MS - 99999, START_NS + 12 * MS),
    ]
    assert all(e.status == "ok" and e.volume_id == "vol-f" and e.tenant_id == "ten-f"
               for e in events)
    c = counters_oracle(e.to_json() for e in events)["vol-f"]
    assert (c["read_ios"], c["read_bytes"], c["total_read_time_ns"]) == (2, 12288, 258195)
    assert (c["write_ios"], c["write_bytes"], c["total_write_time_ns"]) == (2, 8192, 171063)
    assert (c["discard_ios"], c["discard_bytes"], c["total_discard_time_ns"]) \
        == (1, 65536, 1_000_000)
    assert (c["flush_ios"], c["total_flush_time_ns"]) == (1, 20000)
    assert report.lines == 10 and report.events == 6 and report.other_lines["blank line"] == 1
    assert report.skipped_lines == {"a column is not an integer": [6],
                                    "4 columns, expected 5 or 6 (time, latency, direction, "
                                    "block size, offset[, priority]): was the log written "
                                    "with log_offset=1?": [7],
                                    "direction 9 is not read/write/trim/sync": [8]}


@pytest.mark.parametrize("text, expected", [
    ("0, 203552, 0, 4096, 249856, 0", FioLogLine(0, 203552, 0, 4096, 249856)),  # fio >= 3.2x
    ("17, 5, 1, 512, 0", FioLogLine(17, 5, 1, 512, 0)),                   # older: no priority
    ("1700000000123, 5, 2, 512, 7, 1", FioLogLine(1700000000123, 5, 2, 512, 7)),  # unix epoch
])
def test_log_lines(text: str, expected: FioLogLine) -> None:
    assert parse_log_line(text) == expected


@pytest.mark.parametrize("text, message", [
    ("0, 1, 0, 4096", "log_offset=1"),
    ("0, 1, 0, 4096, 0, 0, 0", "7 columns"),
    ("0, 1.5, 0, 4096, 0", "not an integer"),
    ("0, -1, 0, 4096, 0", "negative"),
])
def test_log_line_errors(text: str, message: str) -> None:
    with pytest.raises(FioLogError, match=message):
        parse_log_line(text)


def test_unix_epoch_times_need_no_start_and_relative_ones_do() -> None:
    epoch_line = FioLogLine(1_700_000_000_123, 500, 1, 4096, 0)
    event = to_event(epoch_line, "v", "t", None)
    assert (event.submit_ns, event.complete_ns) == (1_700_000_000_123 * MS - 500,
                                                    1_700_000_000_123 * MS)
    assert to_event(epoch_line, "v", "t", START_NS) == event  # the start does not move it
    with pytest.raises(FioLogError, match="--start-ns or --fio-json"):
        to_event(FioLogLine(5, 500, 1, 4096, 0), "v", "t", None)


@pytest.mark.parametrize("path, kind, job", [
    ("mix_lat.1.log", "lat", 1),
    ("/tmp/run/mix_clat.2.log", "clat", 2),
    ("a_b_slat.13.log", "slat", 13),
    ("events.log", None, None),
])
def test_log_names(path: str, kind: str | None, job: int | None) -> None:
    assert (log_kind(path), log_job_number(path)) == (kind, job)


def test_job_start_from_the_json_report() -> None:
    # fio 3.33 (Debian 12): no job_start; the report's time minus the job's runtime
    old = {"timestamp_ms": 1_795_498_180_364, "jobs": [{"job_runtime": 22}]}
    assert job_start_ns(old, 1) == job_start_ns(old, None) == 1_795_498_180_342 * MS
    new = {"timestamp_ms": 1_795_498_180_364,
           "jobs": [{"job_runtime": 22, "job_start": 1_795_498_180_300},
                    {"job_runtime": 10, "job_start": 1_795_498_180_350}]}
    assert job_start_ns(new, 2) == 1_795_498_180_350 * MS
    with pytest.raises(FioLogError, match="does not say which"):
        job_start_ns(new, None)
    with pytest.raises(FioLogError, match="job 3"):
        job_start_ns(new, 3)
    with pytest.raises(FioLogError, match="no jobs"):
        job_start_ns({"jobs": []}, 1)


def test_a_start_in_seconds_is_refused() -> None:
    check_start_ns(START_NS)
    with pytest.raises(FioLogError, match="epoch nanoseconds"):
        check_start_ns(1_700_000_000)


log_lines = st.lists(st.tuples(
    st.integers(0, 10**6), st.integers(0, 10**10), st.sampled_from([0, 1, 2, 3, 4]),
    st.integers(0, 1 << 24), st.integers(0, 1 << 40), st.booleans(),
), max_size=80)


@settings(max_examples=150, deadline=None)
@given(log_lines)
def test_lines_to_events_keep_every_count_byte_and_nanosecond(lines: list) -> None:
    text = [f"{t}, {lat}, {d}, {bs}, {off}" + (", 0" if prio else "")
            for t, lat, d, bs, off, prio in lines]
    report = SourceReport("p")
    events = list(fio_events(text, "v", "t", START_NS, report))
    op_of = {0: "read", 1: "write", 2: "discard", 3: "flush", 4: "flush"}
    ios, nbytes, latency = Counter(), Counter(), Counter()
    for _t, lat, d, bs, _off, _prio in lines:
        ios[op_of[d]] += 1
        nbytes[op_of[d]] += 0 if op_of[d] == "flush" else bs
        latency[op_of[d]] += lat
    assert Counter(e.op for e in events) == ios
    assert sum(e.bytes for e in events) == sum(nbytes.values())
    for op in ios:
        assert sum(e.bytes for e in events if e.op == op) == nbytes[op]
        assert sum(e.latency_ns for e in events if e.op == op) == latency[op]
    assert all(e.complete_ns == START_NS + t * MS for e, (t, *_rest) in zip(events, lines,
                                                                           strict=True))
    assert report.events == len(lines) and not report.skipped
