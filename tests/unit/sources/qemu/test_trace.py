"""QEMU virtio-blk trace -> events: parsing, pairing, restarts, bounded memory, summary.

The lines are what QEMU 7.2 writes with the events of docs/qemu.md enabled and
``-msg timestamp=on`` (``TID@SEC.USEC:NAME ARGS``), copied in shape from a real run.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.sources.qemu.source import QemuTraceOptions, QemuTraceRun, _trace_chunks
from streams.sources.qemu.summary import (
    BLOCKSTATS_NAMES,
    QemuTraceConverter,
    reconcile,
    select_blockstats,
)
from streams.sources.qemu.trace import (
    TraceLineError,
    VirtioBlkPairing,
    VolumeMap,
    VolumeTarget,
    parse_line,
    parse_volume_map,
)

PID = 19179
VDEV = "0x562331069090"
VOL = VolumeTarget("vm-1-disk-0", "tenant-a")
T0 = 1_795_498_351  # seconds


def at(usec: int) -> str:
    return f"{T0 + usec // 1_000_000}.{usec % 1_000_000:06d}"


def pop(usec: int, elem: str, in_num: int, out_num: int, pid: int = PID) -> str:
    return (f"{pid}@{at(usec)}:virtqueue_pop vq 0x7f78dbe8b010 elem {elem} "
            f"in_num {in_num} out_num {out_num}")


def handle(usec: int, op: str, req: str, sector: int, nsectors: int, pid: int = PID,
           vdev: str = VDEV) -> str:
    return (f"{pid}@{at(usec)}:virtio_blk_handle_{op} vdev {vdev} req {req} "
            f"sector {sector} nsectors {nsectors}")


def rw_done(usec: int, req: str, ret: int = 0, pid: int = PID, vdev: str = VDEV) -> str:
    return f"{pid}@{at(usec)}:virtio_blk_rw_complete vdev {vdev} req {req} ret {ret}"


def done(usec: int, req: str, status: int = 0, pid: int = PID, vdev: str = VDEV) -> str:
    return f"{pid}@{at(usec)}:virtio_blk_req_complete vdev {vdev} req {req} status {status}"


def convert(lines: list[str], max_in_flight: int = 1024,
            volumes: VolumeMap | None = None) -> tuple[list, QemuTraceConverter]:
    converter = QemuTraceConverter(volumes or VolumeMap({}, VOL), "host-1", max_in_flight)
    events = [e for e in (converter.feed(line) for line in lines) if e is not None]
    return events, converter


# --- parsing ---------------------------------------------------------------------------

def test_parse_line_reads_the_prefix_as_thread_and_wall_clock_ns() -> None:
    line = parse_line("19179@1795498351.259045:virtio_blk_handle_read vdev 0x562331069090 "
                      "req 0x562331247cc0 sector 0 nsectors 8\n")
    assert line is not None
    assert (line.thread_id, line.time_ns) == (19179, 1_795_498_351_259_045_000)
    assert line.args == {"vdev": "0x562331069090", "req": "0x562331247cc0", "sector": "0",
                         "nsectors": "8"}


@pytest.mark.parametrize("text", [
    "",                                                          # empty line
    "qemu-system-x86_64: terminating on signal 15",              # QEMU's own message
    "19179@1795498351.259045:virtio_notify vdev 0x1 vq 0x2",     # an event we do not use
    "19179@1795498351.259045:virtio_blk_submit_multireq vdev 0x1 mrb 0x2 start 0",
])
def test_lines_of_other_events_are_none(text: str) -> None:
    assert parse_line(text) is None


@pytest.mark.parametrize(("text", "reason"), [
    # QEMU without -msg timestamp=on: no thread, no time
    ("virtio_blk_req_complete vdev 0x1 req 0x2 status 0", "-msg timestamp=on"),
    # a truncated line
    ("19179@1795498351.259045:virtio_blk_handle_read vdev 0x1 req 0x2 sector 0", "nsectors"),
])
def test_unreadable_lines_of_our_events_raise_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(TraceLineError, match=reason):
        parse_line(text)


# --- pairing: one table of cases --------------------------------------------------------

R = "0x562331247cc0"


@pytest.mark.parametrize(("lines", "expected"), [
    # read ok: 8 sectors at sector 16 -> offset 8192, 4096 bytes
    ([pop(0, R, 2, 1), handle(10, "read", R, 16, 8), rw_done(100, R), done(105, R)],
     ("read", "ok", 8192, 4096, 10, 105)),
    # write the back end failed (blkdebug, rerror=report): rw_complete ret -5, status 1
    ([handle(0, "write", R, 65536, 8), rw_done(30, R, -5), done(33, R, 1)],
     ("write", "failed", 65536 * 512, 4096, 0, 33)),
    # read out of range: QEMU completes it with status 1 without a back-end call
    ([handle(0, "read", R, 1 << 40, 8), done(2, R, 1)],
     ("read", "invalid", (1 << 40) * 512, 4096, 0, 2)),
    # back-end error with rerror=ignore: the guest sees ok, and QEMU counts it ok
    ([handle(0, "read", R, 0, 8), rw_done(30, R, -5), done(33, R, 0)],
     ("read", "ok", 0, 4096, 0, 33)),
    # flush: a popped request of shape in 1 / out 1 with no handle line
    ([pop(0, R, 1, 1), done(9_000, R)], ("flush", "ok", 0, 0, 0, 9_000)),
    # failed flush
    ([pop(0, R, 1, 1), done(50, R, 1)], ("flush", "failed", 0, 0, 0, 50)),
])
def test_a_request_is_paired_into_one_event(lines: list[str], expected: tuple) -> None:
    events, converter = convert(lines)
    assert len(events) == 1
    e = events[0]
    t0_ns = T0 * 1_000_000_000
    assert (e.op, e.status, e.offset, e.bytes, (e.submit_ns - t0_ns) // 1000,
            (e.complete_ns - t0_ns) // 1000) == expected
    assert (e.volume_id, e.tenant_id, e.host_id) == ("vm-1-disk-0", "tenant-a", "host-1")
    assert converter.pairing.in_flight == 0


@pytest.mark.parametrize(("lines", "reason"), [
    # the start was before the trace began (pops are traced, this one was not seen)
    ([pop(0, "0x1", 2, 1), done(6, R)], "completion without a start (started before"),
    # the back-end completion says it was a read or write whose start we never saw
    ([rw_done(5, R), done(6, R)], "read/write completion without a start"),
    # unsupported request type: status 2; QEMU's blockstats count it nowhere either
    ([pop(0, R, 1, 1), done(6, R, 2)], "unsupported request type"),
    # discard / write-zeroes / get-id: popped, never handled as read or write
    ([pop(0, R, 1, 2), done(6, R, 0)], "other request type"),
])
def test_completions_without_a_known_start_are_counted_not_invented(
        lines: list[str], reason: str) -> None:
    events, converter = convert(lines)
    assert events == []
    unmatched = converter.pairing.counts.unmatched
    assert sum(n for r, n in unmatched.items() if reason in r) == 1, unmatched


def test_without_virtqueue_pop_a_bare_completion_is_an_untimed_flush() -> None:
    # Trace without virtqueue_pop: the only completion without start or rw_complete
    # the Linux driver makes on a plain disk is a flush; its start time is unknown.
    events, converter = convert([handle(0, "write", R, 0, 8), rw_done(5, R), done(6, R),
                                 done(50, "0x2")])
    assert [(e.op, e.status, e.latency_ns) for e in events] == [("write", "ok", 6000),
                                                                  ("flush", "ok", 0)]
    assert converter.pairing.counts.untimed_flushes == 1
    assert any("latency unknown" in line for line in converter.summary_lines())


def test_a_restarted_request_is_timed_from_its_last_start_as_qemu_does() -> None:
    # werror=stop: the failed request waits; on resume QEMU handles it again.
    events, converter = convert([handle(0, "write", R, 0, 8), rw_done(5, R, -28),
                                 handle(900, "write", R, 0, 8), rw_done(950, R), done(951, R)])
    assert [(e.status, e.latency_ns) for e in events] == [("ok", 51_000)]
    assert converter.pairing.counts.resubmitted == 1


# --- restarts -------------------------------------------------------------------------

def test_a_new_thread_id_is_a_qemu_restart_whose_in_flight_requests_are_lost() -> None:
    new = 20671
    lines = [
        handle(0, "read", "0xa", 0, 8), handle(1, "write", "0xb", 8, 8),  # in flight
        handle(2, "read", "0xc", 16, 8), rw_done(3, "0xc"), done(4, "0xc"),
        # QEMU restarted: new pid, new pointers (same 0xa reused by chance)
        pop(1_000, "0xa", 1, 1, pid=new), done(1_010, "0xa", pid=new, vdev="0x77"),
        done(1_020, "0xb"),  # a late line of the old process
        handle(1_030, "read", "0xd", 0, 8, pid=new, vdev="0x77"),
        rw_done(1_040, "0xd", pid=new, vdev="0x77"), done(1_050, "0xd", pid=new, vdev="0x77"),
    ]
    events, converter = convert(lines)
    counts = converter.pairing.counts
    assert [(e.op, e.offset) for e in events] == [("read", 16 * 512), ("flush", 0), ("read", 0)]
    assert counts.restarts == 1
    assert counts.lost_in_restart == Counter({"read": 1, "write": 1})
    assert counts.stale_lines == 1
    # the default volume follows the disk into the new process (new vdev pointer)
    assert {e.volume_id for e in events} == {"vm-1-disk-0"}
    assert converter.current_process()["read_ios"] == 1  # what QMP now answers for


# --- bounded memory -------------------------------------------------------------------

def test_the_in_flight_map_is_bounded_and_evictions_are_reported() -> None:
    lines = [handle(i, "read", f"0x{i:x}", i, 8) for i in range(1, 6)]
    lines += [rw_done(10, "0x1"), done(11, "0x1"), rw_done(12, "0x5"), done(13, "0x5")]
    events, converter = convert(lines, max_in_flight=3)
    counts = converter.pairing.counts
    assert counts.evicted == Counter({"read": 2})  # 0x1 and 0x2, the oldest
    assert [e.offset // 512 for e in events] == [5]
    assert counts.unmatched == Counter({"read/write completion without a start (started "
                                        "before the trace, or evicted)": 1})  # 0x1
    assert converter.pairing.in_flight == 2  # 0x3, 0x4
    assert "in flight at the end (not sent): read=2" in "\n".join(converter.summary_lines())


# --- volumes --------------------------------------------------------------------------

def test_the_default_volume_takes_one_disk_and_other_disks_stay_unmapped() -> None:
    lines = [handle(0, "read", "0x1", 0, 8), rw_done(1, "0x1"), done(2, "0x1"),
             handle(3, "read", "0x2", 0, 8, vdev="0x99"), rw_done(4, "0x2", vdev="0x99"),
             done(5, "0x2", vdev="0x99")]
    events, converter = convert(lines)
    assert len(events) == 1
    assert converter.report.unmapped == Counter({"0x99": 1})
    mapped = VolumeMap(parse_volume_map(f"{VDEV}=vol-a,0x99=vol-b:tenant-b", "tenant-a"))
    events, _ = convert(lines, volumes=mapped)
    assert [(e.volume_id, e.tenant_id) for e in events] == [("vol-a", "tenant-a"),
                                                             ("vol-b", "tenant-b")]


@pytest.mark.parametrize("text", ["0x1", "=vol", "0x1=bad volume", "0x1=vol:"])
def test_bad_volume_maps_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_volume_map(text, None)


# --- summary and QMP reconciliation ---------------------------------------------------

def test_requests_before_the_drivers_reset_are_reported_as_the_firmwares() -> None:
    status = f"{PID + 3}@{at(0)}:virtio_set_status vdev {VDEV} val 0"  # from a vCPU thread
    lines = [handle(0, "read", R, 0, 1), rw_done(1, R), done(2, R), status,
             handle(10, "read", R, 0, 8), rw_done(11, R), done(12, R)]
    events, converter = convert(lines)
    assert len(events) == 2
    assert converter.report.before_last_reset[VDEV]["read_ios"] == 1
    assert converter.report.before_last_reset[VDEV]["read_bytes"] == 512
    assert converter.pairing.counts.restarts == 0  # set_status threads are not processes


def test_reconcile_reports_the_difference_per_blockstats_counter() -> None:
    trace = Counter({"read_ios": 2002, "read_bytes": 8196608, "flush_ios": 1,
                     "total_read_time_ns": 98})
    end = {"rd_operations": 2002, "rd_bytes": 8196608, "flush_operations": 2,
           "rd_total_time_ns": 100}
    rows = {row.counter: row for row in reconcile(trace, end, {"rd_operations": 1})}
    assert rows["read_ios"].drift == 0 and rows["read_ios"].qmp_start == 1
    assert rows["flush_ios"].drift == -1
    assert rows["total_read_time_ns"].drift == -2
    assert BLOCKSTATS_NAMES["read_ios_error"] == "failed_rd_operations"
    assert "flush_bytes" not in BLOCKSTATS_NAMES


def test_select_blockstats_takes_the_guest_disk_or_the_named_one() -> None:
    entries = [{"device": "vol0", "qdev": "/machine/peripheral/disk0/virtio-backend",
                "stats": {"rd_operations": 1}},
               {"device": "", "node-name": "scratch", "stats": {"rd_operations": 2}}]
    assert select_blockstats(entries, None) == {"rd_operations": 1}
    assert select_blockstats(entries, "scratch") == {"rd_operations": 2}
    with pytest.raises(ValueError, match="--qmp-device"):
        select_blockstats(entries, "nope")


# --- properties -----------------------------------------------------------------------

@st.composite
def interleaved_requests(draw: st.DrawFn) -> tuple[list[tuple], list[str]]:
    """Requests (op, status, sector, nsectors) and their trace lines, interleaved at
    random but each request's lines in order; pointers unique among those in flight."""
    n = draw(st.integers(1, 40))
    requests = [(draw(st.sampled_from(["read", "write", "flush"])),
                 draw(st.sampled_from(["ok", "failed", "invalid"])),
                 draw(st.integers(0, 1 << 30)), draw(st.integers(1, 256))) for _ in range(n)]
    requests = [(op, "failed" if op == "flush" and s == "invalid" else s, sec, ns)
                for op, s, sec, ns in requests]
    sequences = [_request_lines(i, *req) for i, req in enumerate(requests)]
    order = draw(st.permutations([i for i, seq in enumerate(sequences) for _ in seq]))
    positions = [0] * n
    lines = []
    for usec, i in enumerate(order):
        lines.append(sequences[i][positions[i]].format(at=at(usec)))
        positions[i] += 1
    return requests, lines


def _request_lines(i: int, op: str, status: str, sector: int, nsectors: int) -> list[str]:
    req, p = f"0x{0x5000 + i:x}", f"{PID}@{{at}}:"
    if op == "flush":
        shape = f"{p}virtqueue_pop vq 0x7f elem {req} in_num 1 out_num 1"
        return [shape, f"{p}virtio_blk_req_complete vdev {VDEV} req {req} "
                       f"status {0 if status == 'ok' else 1}"]
    lines = [f"{p}virtqueue_pop vq 0x7f elem {req} in_num 2 out_num 1",
             f"{p}virtio_blk_handle_{op} vdev {VDEV} req {req} sector {sector} "
             f"nsectors {nsectors}"]
    if status != "invalid":
        lines.append(f"{p}virtio_blk_rw_complete vdev {VDEV} req {req} "
                     f"ret {0 if status == 'ok' else -5}")
    return [*lines, f"{p}virtio_blk_req_complete vdev {VDEV} req {req} "
                    f"status {0 if status == 'ok' else 1}"]


@settings(max_examples=200, deadline=None)
@given(interleaved_requests())
def test_every_request_becomes_exactly_one_event_whatever_the_interleaving(
        case: tuple[list[tuple], list[str]]) -> None:
    requests, lines = case
    events, converter = convert(lines)
    expected = Counter((op, status, 0 if op == "flush" else sec * 512,
                        0 if op == "flush" else ns * 512) for op, status, sec, ns in requests)
    assert Counter((e.op, e.status, e.offset, e.bytes) for e in events) == expected
    assert all(e.complete_ns >= e.submit_ns for e in events)
    assert converter.pairing.in_flight == 0
    assert not converter.pairing.counts.unmatched


@settings(max_examples=200, deadline=None)
@given(interleaved_requests(), st.integers(1, 8))
def test_memory_stays_under_the_cap_and_every_request_is_accounted_for(
        case: tuple[list[tuple], list[str]], cap: int) -> None:
    requests, lines = case
    pairing_peak = 0
    converter = QemuTraceConverter(VolumeMap({}, VOL), None, cap)
    sent = 0
    for line in lines:
        sent += converter.feed(line) is not None
        pairing_peak = max(pairing_peak, converter.pairing.in_flight)
    counts = converter.pairing.counts
    assert pairing_peak <= cap
    # each request is sent, or its guest-visible completion is an unmatched one
    assert sent + sum(counts.unmatched.values()) == len(requests)
    assert isinstance(converter.pairing, VirtioBlkPairing)


# --- reading a followed file ----------------------------------------------------------

def test_following_a_file_joins_partial_lines_and_survives_truncation(tmp_path: Path) -> None:
    path = tmp_path / "trace.log"
    path.write_text("line 1\nline")

    async def scenario() -> tuple[list[str], int]:
        options = QemuTraceOptions(str(path), VolumeMap({}, VOL), follow=True, poll_s=0.01)
        run = QemuTraceRun(QemuTraceConverter(options.volumes))
        stop = asyncio.Event()
        got: list[str] = []

        async def writer() -> None:
            await asyncio.sleep(0.05)
            with open(path, "a") as f:
                f.write(" 2\n")
            await asyncio.sleep(0.05)
            path.write_text("again\n")  # QEMU's -D truncates the file when it starts
            await asyncio.sleep(0.1)
            stop.set()

        task = asyncio.ensure_future(writer())
        async for lines in _trace_chunks(options, stop, run):
            got += lines
        await task
        return got, run.reopened

    got, reopened = asyncio.run(scenario())
    assert got == ["line 1", "line 2", "again"]
    assert reopened == 1
