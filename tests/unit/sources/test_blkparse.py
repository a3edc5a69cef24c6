"""blkparse text -> events: the sample real blkparse printed (tests/blktrace_binary.py,
data/blkparse_sample.txt), checked by hand and against blkparse's own summary; pairing
properties with hypothesis."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.events import IoEvent
from streams.sources.blkparse import (
    ORPHAN_COMPLETION,
    UNPAIRED_ISSUE,
    BlkparseError,
    BlkparseSource,
    SummaryParser,
    VolumeTarget,
    compare_with_summary,
    last_time_ns,
    op_from_rwbs,
    parse_trace_line,
    parse_volume_map,
)
from streams.sources.report import SourceReport
from tests.oracles.counters import counters_oracle

SAMPLE = Path(__file__).parent / "data" / "blkparse_sample.txt"
START_NS = 1_700_000_000_000_000_000
VOLUMES = {"8,0": VolumeTarget("vol-a", "tenant-1"), "8,16": VolumeTarget("vol-b", "tenant-2")}


def run(lines: list[str], volume_map: dict[str, VolumeTarget] = VOLUMES,
        start_ns: int | None = START_NS) -> tuple[list[IoEvent], BlkparseSource]:
    source = BlkparseSource(volume_map, SourceReport("test"), start_ns)
    return list(source.events(lines)), source


@pytest.fixture(scope="module")
def sample() -> tuple[list[IoEvent], BlkparseSource]:
    return run(SAMPLE.read_text().splitlines())


def us(t: int) -> int:
    return START_NS + t * 1000


# (volume, op, status, offset, bytes, D time us, C time us); trace time 0 is the orphan C
EXPECTED_EVENTS = [
    ("vol-a", "read", "ok", 2048 * 512, 4096, 15, 95),
    ("vol-a", "write", "ok", 4088 * 512, 12288, 110, 310),     # two bios merged into it
    ("vol-a", "write", "ok", 8192 * 512, 4096, 322, 622),      # WFS: FUA
    ("vol-a", "write", "ok", 9000 * 512, 8192, 630, 1030),     # FWS: pre-flush
    ("vol-a", "flush", "ok", 0, 0, 1040, 1540),                # FN
    ("vol-a", "discard", "ok", 65536 * 512, 1 << 20, 1550, 2550),
    ("vol-a", "read", "failed", 12000 * 512, 4096, 2560, 2660),  # [65531] = -5
    ("vol-a", "write", "failed", 13000 * 512, 4096, 2670, 2870),
    ("vol-a", "read", "ok", 20000 * 512, 4096, 2940, 2990),    # the D after the requeue
    ("vol-a", "read", "ok", 30000 * 512, 4096, 3000, 3020),    # first issued, first done
    ("vol-a", "read", "ok", 30000 * 512, 4096, 3010, 3040),
    ("vol-b", "read", "ok", 0, 4096, 3090, 3150),
    ("vol-b", "write", "ok", 8 * 512, 4096, 3160, 3230),
    ("vol-b", "flush", "ok", 0, 0, 3240, 3330),
]


def test_the_sample_gives_exactly_the_hand_checked_events(sample) -> None:
    events, _ = sample
    got = [(e.volume_id, e.op, e.status, e.offset, e.bytes, e.submit_ns, e.complete_ns)
           for e in events]
    assert got == [(v, op, st_, off, n, us(d), us(c)) for v, op, st_, off, n, d, c
                   in EXPECTED_EVENTS]
    assert {(e.volume_id, e.tenant_id) for e in events} == {("vol-a", "tenant-1"),
                                                           ("vol-b", "tenant-2")}


def test_every_counter_of_the_sample_equals_the_hand_count(sample) -> None:
    events, _ = sample
    counters = counters_oracle(e.to_json() for e in events)
    a, b = counters["vol-a"], counters["vol-b"]
    # vol-a reads: 80 + 50 + 20 + 30 us ok, 100 us failed
    assert (a["read_ios"], a["read_bytes"], a["read_ios_error"], a["total_read_time_ns"]) \
        == (4, 16384, 1, 280_000)
    # writes: 200 + 300 + 400 us ok (12 + 4 + 8 KiB), 200 us failed
    assert (a["write_ios"], a["write_bytes"], a["write_ios_error"], a["total_write_time_ns"]) \
        == (3, 24576, 1, 1_100_000)
    assert (a["flush_ios"], a["total_flush_time_ns"]) == (1, 500_000)
    assert (a["discard_ios"], a["discard_bytes"], a["total_discard_time_ns"]) \
        == (1, 1 << 20, 1_000_000)
    assert (b["read_ios"], b["read_bytes"], b["write_ios"], b["write_bytes"], b["flush_ios"]) \
        == (1, 4096, 1, 4096, 1)
    assert (b["total_read_time_ns"], b["total_write_time_ns"], b["total_flush_time_ns"]) \
        == (60_000, 70_000, 90_000)
    assert a["invalid_read_ios"] == b["discard_ios"] == 0


def test_the_report_names_every_line_that_is_no_event(sample) -> None:
    _, source = sample
    report = source.report
    assert report.events == len(EXPECTED_EVENTS) and report.failed == 2
    assert report.skipped == Counter({ORPHAN_COMPLETION: 1, UNPAIRED_ISSUE: 1,
                                      "device 8,32 is not in --volume-map": 2})
    assert report.skipped_lines[ORPHAN_COMPLETION] == [1]
    assert report.skipped_lines[UNPAIRED_ISSUE] == [48]
    assert report.ignored == {"Q queued": 5, "G get request": 3, "P plug": 1, "I inserted": 2,
                     "U unplug": 1, "M back merge": 1, "F front merge": 1, "R requeue": 1}
    text = SAMPLE.read_text().splitlines()
    assert report.lines == len(text)
    assert report.other_lines == {"blank line": 8, "blkparse summary": 78}
    assert sum(report.ignored.values()) + sum(report.other_lines.values()) \
        + report.skipped_total + 2 * report.events \
        == len(text) - 1  # every line accounted for; the requeued D is the one left over


def test_completions_add_up_to_blkparses_own_summary(sample) -> None:
    events, source = sample
    summaries = source.summary.devices()
    assert set(summaries) == {"8,0", "8,16", "8,32"} and all(s.exact for s in summaries.values())
    for device, tally in source.completions.items():
        s = summaries[device]
        assert (tally.reads, tally.read_kib, tally.writes, tally.write_kib) == (
            s.counts["reads_completed"], s.kib["reads_completed"],
            s.counts["writes_completed"], s.kib["writes_completed"])
    # blkparse's split is the kernel's write bit: discards are writes, a flush is a "read"
    # with no data; its counts also hold failed completions and the orphan one
    a = Counter((e.op, e.status) for e in events if e.volume_id == "vol-a")
    assert summaries["8,0"].counts["reads_completed"] == 7 == (
        a["read", "ok"] + a["read", "failed"] + a["flush", "ok"] + 1)
    assert summaries["8,0"].counts["writes_completed"] == 5 == (
        a["write", "ok"] + a["write", "failed"] + a["discard", "ok"])
    assert (summaries["8,0"].kib["reads_completed"], summaries["8,0"].kib["writes_completed"]) \
        == (24, 1052)
    assert summaries["8,0"].counts["read_merges"] == 0
    assert summaries["8,0"].counts["write_merges"] == 2
    assert all(line.endswith(": agree") for line in compare_with_summary(source))


@pytest.mark.parametrize("rwbs, op", [
    ("R", "read"), ("RS", "read"), ("RA", "read"), ("RSM", "read"),  # sync, ahead, meta
    ("W", "write"), ("WS", "write"),
    ("WFS", "write"),    # FUA: the F after W
    ("FWS", "write"),    # pre-flush: the F before W
    ("FWFS", "write"),   # both
    ("FN", "flush"),     # a bare flush
    ("D", "discard"), ("DS", "discard"), ("FD", "discard"),
    ("N", None),         # no data and no flush: nothing we count
])
def test_rwbs_to_op(rwbs: str, op: str | None) -> None:
    assert op_from_rwbs(rwbs) == op


@pytest.mark.parametrize("spec, default, expected", [
    ("8,0=vol-a:t1", None, {"8,0": VolumeTarget("vol-a", "t1")}),
    ("8,0=vol-a,8,16=vol-b:t2", "t1",
     {"8,0": VolumeTarget("vol-a", "t1"), "8,16": VolumeTarget("vol-b", "t2")}),
    ("253:3=vol:x:t9", None, {"253,3": VolumeTarget("vol:x", "t9")}),  # last ':' = tenant
])
def test_volume_map(spec: str, default: str | None, expected: dict) -> None:
    assert parse_volume_map([spec], default) == expected


@pytest.mark.parametrize("spec, default, message", [
    ("8,0=vol-a", None, "no tenant"),
    ("sda=vol-a:t", None, "expected MAJOR,MINOR"),
    ("8,0=vol a:t", None, "expected MAJOR,MINOR"),
    ("8,0=" + "v" * 129 + ":t", None, "1..128"),
])
def test_volume_map_errors(spec: str, default: str | None, message: str) -> None:
    with pytest.raises(BlkparseError, match=message):
        parse_volume_map([spec], default)


def test_a_negative_errno_and_the_tracking_column_are_read_too() -> None:
    lines = ["  8,0    0        1     0.000001000  1234  D   W 8 + 8 (     120) [fio]",
             "  8,0    1        1     0.000002500     0  C   W 8 + 8 (    1500) [-5]",
             "  8,0    0        2     0.000003000  1234  D  FN (      10) [fio]",
             "  8,0    1        2     0.000004000     0  C  FN 0 (    1000) [0]",
             "garbage"]
    events, source = run(lines)
    assert [(e.op, e.status, e.latency_ns) for e in events] == [
        ("write", "failed", 1500), ("flush", "ok", 1000)]
    assert source.report.skipped == Counter({"not a blkparse line": 1})


def test_passthrough_commands_are_skipped() -> None:
    lines = ["  8,0    0        1     0.000001000  1234  D   R 36 (12 00 00 00 24 00 ..) "
             "[smartctl]",
             "  8,0    1        1     0.000002000     0  C   R (12 00 00 00 24 00 ..) [0]"]
    events, source = run(lines)
    assert events == []
    assert source.report.skipped == Counter({"passthrough (PC) command, not a block I/O": 2})


def test_without_a_start_the_first_action_is_anchored_to_the_clock() -> None:
    lines = ["  8,0    0        1     5.000000000  1234  D   R 0 + 8 [fio]",
             "  8,0    1        1     5.000100000     0  C   R 0 + 8 [0]"]
    source = BlkparseSource(VOLUMES, SourceReport("t"), None, clock_ns=lambda: START_NS)
    [event] = list(source.events(lines))
    assert (event.submit_ns, event.complete_ns) == (START_NS, START_NS + 100_000)
    assert last_time_ns(lines) == 5_000_100_000
    with pytest.raises(BlkparseError, match="start"):
        list(BlkparseSource(VOLUMES, SourceReport("t")).events(lines))


def test_summary_numbers_with_separators_and_suffixes() -> None:
    parser = SummaryParser()
    for line in ["CPU3 (sda):",
                 " Reads Queued:       1,234,    4,936KiB\t Writes Queued:       2,345K,   "
                 "12,345MiB",
                 " Reads Completed:    1,000,    4,000KiB\t Writes Completed:        0,"
                 "        0KiB"]:
        assert parser.feed(line)
    assert not parser.feed("something else")
    summary = parser.devices()["sda"]
    assert summary.counts["reads_queued"] == 1234 and summary.kib["reads_queued"] == 4936
    assert summary.counts["writes_queued"] == 2_345_000
    assert summary.kib["writes_queued"] == 12_345_000 and not summary.exact
    assert summary.counts["reads_completed"] == 1000


def test_an_action_line_is_parsed_field_by_field() -> None:
    line = parse_trace_line("259,1   11      412    12.000000042  4321  C  WS 80 + 8 [0]")
    assert line is not None
    assert (line.device, line.cpu, line.time_ns, line.action, line.rwbs, line.rest) == (
        "259,1", 11, 12_000_000_042, "C", "WS", "80 + 8 [0]")
    assert parse_trace_line("Total (8,0):") is None


# --- properties: requests rendered as blkparse lines come back whole ----------------------

RWBS_OF = {"read": "R", "write": "WS", "discard": "D", "flush": "FN"}
requests = st.lists(st.tuples(
    st.sampled_from(["8,0", "8,16"]), st.sampled_from(list(RWBS_OF)),
    st.integers(0, 50), st.integers(1, 256),                 # sector (few: collisions), sectors
    st.integers(0, 10_000), st.integers(0, 5_000),           # issue time us, latency us
    st.booleans(), st.booleans(),                            # failed, completed in the trace
), max_size=60)


def render(reqs: list) -> list[str]:
    """The requests as blkparse prints them, in time order (issue before completion)."""
    timed = []
    for i, (dev, op, sector, sectors, t_us, lat_us, failed, done) in enumerate(reqs):
        rwbs = RWBS_OF[op]
        where = "" if op == "flush" else f"{sector} + {sectors} "
        timed.append((t_us * 1000, 0, i, f"D {rwbs:>3} {where}[fio]", dev))
        if done:
            where = "0 " if op == "flush" else f"{sector} + {sectors} "
            timed.append(((t_us + lat_us) * 1000, 1, i,
                          f"C {rwbs:>3} {where}[{-5 if failed else 0}]", dev))
    timed.sort()
    return [f"{dev:>5}  {cpu}  {n:>7} {t // 10**9:5d}.{t % 10**9:09d}  1234  {body}"
            for n, (t, cpu, _, body, dev) in enumerate(timed, 1)]


@settings(max_examples=150, deadline=None)
@given(requests)
def test_counts_and_bytes_survive_any_interleaving(reqs: list) -> None:
    events, source = run(render(reqs))
    expect: Counter[tuple[str, str, str]] = Counter()
    expect_bytes: Counter[tuple[str, str, str]] = Counter()
    for dev, op, _sector, sectors, _t, _lat, failed, done in reqs:
        if done:
            key = (VOLUMES[dev].volume_id, op, "failed" if failed else "ok")
            expect[key] += 1
            expect_bytes[key] += 0 if op == "flush" else sectors * 512
    got = Counter((e.volume_id, e.op, e.status) for e in events)
    got_bytes: Counter[tuple[str, str, str]] = Counter()
    for e in events:
        got_bytes[e.volume_id, e.op, e.status] += e.bytes
    # which C pairs with which D can differ at one key, never how many or how big; a
    # status travels with the completion
    assert got == expect and got_bytes == expect_bytes
    assert source.report.skipped[UNPAIRED_ISSUE] == sum(1 for r in reqs if not r[7])
    assert ORPHAN_COMPLETION not in source.report.skipped


@settings(max_examples=100, deadline=None)
@given(requests)
def test_with_one_request_per_key_every_event_is_exact(reqs: list) -> None:
    seen: set = set()
    unique = []
    for r in reqs:
        key = (r[0], r[1], None if r[1] == "flush" else (r[2], r[3]))
        if key not in seen:
            seen.add(key)
            unique.append(r)
    events, _ = run(render(unique))
    expect = sorted(
        (VOLUMES[dev].volume_id, op, "failed" if failed else "ok",
         0 if op == "flush" else sector * 512, 0 if op == "flush" else sectors * 512,
         START_NS + t_us * 1000, START_NS + (t_us + lat_us) * 1000)
        for dev, op, sector, sectors, t_us, lat_us, failed, done in unique if done)
    assert sorted((e.volume_id, e.op, e.status, e.offset, e.bytes, e.submit_ns, e.complete_ns)
                  for e in events) == expect
