"""The producer's disk spool: order, acknowledgement across restarts, torn and corrupt
entries, the byte bound, segments; and a model queue it must always agree with."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from streams.config import Settings
from streams.core.codec import default_schemas
from streams.sdk.drain_log import SpoolStats
from streams.sdk.frames import FRAME, encode_frame, scan
from streams.sdk.producer import IoProducer
from streams.sdk.spool import SUFFIX, Spool, SpoolEntry, SpoolFull, SpoolLocked
from tests.conftest import free_port

BIG = 1 << 30
TOPIC = "ioacct.io.raw"
T0 = 1_700_000_000 * 10**9
SCHEMAS = default_schemas()


def values(entries: list[SpoolEntry]) -> list[bytes]:
    return [e.value for e in entries]


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*" + SUFFIX))


def filled(directory: Path, payloads: list[bytes], **kw: int) -> Spool:
    spool = Spool(directory, kw.pop("max_bytes", BIG), **kw)
    for n, value in enumerate(payloads):
        spool.append(TOPIC, f"vol-{n % 3}".encode(), value)
    return spool


# ------------------------------------------------------------------------ order, acks


def test_entries_come_back_in_append_order_with_topic_and_key(tmp_path: Path) -> None:
    spool = Spool(tmp_path, BIG)
    spool.append("a", b"vol-1", b"one")
    spool.append("b", None, b"")  # no key (a dead letter), empty value
    spool.append("a", b"", b"three")  # an empty key is not "no key"
    got = spool.read(10)
    assert [(e.topic, e.key, e.value) for e in got] == [
        ("a", b"vol-1", b"one"), ("b", None, b""), ("a", b"", b"three")]
    assert spool.read(10) == []  # the cursor moved past them
    assert spool.records == 3


def test_read_respects_max_entries_and_continues_where_it_stopped(tmp_path: Path) -> None:
    spool = filled(tmp_path, [b"%d" % n for n in range(10)])
    assert values(spool.read(4)) == [b"0", b"1", b"2", b"3"]
    assert values(spool.read(4)) == [b"4", b"5", b"6", b"7"]
    spool.append(TOPIC, None, b"10")
    assert values(spool.read(10)) == [b"8", b"9", b"10"]


def test_rewind_reads_again_from_the_first_unacknowledged(tmp_path: Path) -> None:
    spool = filled(tmp_path, [b"a", b"b", b"c"])
    first = spool.read(3)
    spool.ack(first[0])
    spool.rewind()
    assert values(spool.read(3)) == [b"b", b"c"]
    assert spool.records == 2


def test_acks_out_of_order_are_refused(tmp_path: Path) -> None:
    spool = filled(tmp_path, [b"a", b"b"])
    a, b = spool.read(2)
    spool.ack(a)
    spool.ack(b)
    with pytest.raises(ValueError, match="out of order"):
        spool.ack(a)


def test_a_reopened_spool_holds_what_was_not_acknowledged(tmp_path: Path) -> None:
    spool = filled(tmp_path, [b"a", b"b", b"c", b"d"])
    for entry in spool.read(2):
        spool.ack(entry)
    spool.close()  # persists the acknowledged position
    again = Spool(tmp_path, BIG)
    assert (again.recovered, again.records) == (2, 2)
    assert values(again.read(10)) == [b"c", b"d"]


def test_a_crash_resends_what_was_acknowledged_after_the_last_sync(tmp_path: Path) -> None:
    spool = filled(tmp_path, [b"a", b"b", b"c", b"d"])
    a, b, c, _ = spool.read(4)
    spool.ack(a)
    spool.sync()
    spool.ack(b)
    spool.ack(c)
    spool.abandon()  # kill -9: the last two acknowledgements were never persisted
    again = Spool(tmp_path, BIG)
    assert values(again.read(10)) == [b"b", b"c", b"d"]


def test_an_emptied_spool_deletes_its_segments_and_starts_afresh(tmp_path: Path) -> None:
    spool = filled(tmp_path, [b"a", b"b"])
    for entry in spool.read(10):
        spool.ack(entry)
    spool.sync()
    assert segment_files(tmp_path) == [] and spool.disk_bytes == 0
    spool.append(TOPIC, None, b"c")
    spool.close()
    assert values(Spool(tmp_path, BIG).read(10)) == [b"c"]


def test_one_process_at_a_time(tmp_path: Path) -> None:
    spool = Spool(tmp_path, BIG)
    with pytest.raises(SpoolLocked, match="in use by another process"):
        Spool(tmp_path, BIG)
    spool.close()
    Spool(tmp_path, BIG).close()


# ----------------------------------------------------------------- torn and corrupt


def test_a_torn_tail_is_dropped_at_every_byte_offset(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    payloads = [b"first" * 7, b"second" * 5, b"third" * 9]
    filled(tmp_path / "whole", payloads).close()
    whole = segment_files(tmp_path / "whole")[0].read_bytes()
    good_end = len(whole) - len(encode_frame(TOPIC, b"vol-2", payloads[2]))
    for cut in range(good_end, len(whole)):  # kill -9 after `cut` bytes of the third append
        directory = tmp_path / f"cut-{cut}"
        directory.mkdir()
        (directory / segment_files(tmp_path / "whole")[0].name).write_bytes(whole[:cut])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="streams.sdk.spool"):
            spool = Spool(directory, BIG)
        assert spool.records == 2
        assert values(spool.read(10)) == payloads[:2]
        assert ("torn append" in caplog.text) == (cut > good_end), cut
        spool.append(TOPIC, None, b"after")  # appends after the cut are framed correctly
        spool.close()
        assert values(Spool(directory, BIG).read(10)) == [*payloads[:2], b"after"]


def test_zeroed_garbage_after_the_last_entry_is_dropped(tmp_path: Path) -> None:
    filled(tmp_path, [b"a", b"b"]).close()
    segment = segment_files(tmp_path)[0]
    segment.write_bytes(segment.read_bytes() + bytes(4096))  # a host crash's zero-filled block
    spool = Spool(tmp_path, BIG)
    assert values(spool.read(10)) == [b"a", b"b"]
    assert spool.dropped_frames == 1 and spool.disk_bytes == segment.stat().st_size


def test_the_crc_catches_a_flipped_byte_anywhere_in_an_entry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    payloads = [b"alpha" * 4, b"bravo" * 4, b"charlie" * 4]
    filled(tmp_path / "whole", payloads).close()
    name = segment_files(tmp_path / "whole")[0].name
    whole = (tmp_path / "whole" / name).read_bytes()
    start = len(encode_frame(TOPIC, b"vol-0", payloads[0]))
    end = start + len(encode_frame(TOPIC, b"vol-1", payloads[1]))
    for at in range(start, end):  # every byte of the middle entry, header included
        corrupt = bytearray(whole)
        corrupt[at] ^= 0x10
        directory = tmp_path / f"flip-{at}"
        directory.mkdir()
        (directory / name).write_bytes(bytes(corrupt))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="streams.sdk.spool"):
            got = values(Spool(directory, BIG).read(10))
        # Never misread, and only that entry is lost, even when its length is hit.
        assert got == [payloads[0], payloads[2]], at
        assert f"byte(s) at byte {start} of {name} fail their CRC" in caplog.text, at


def test_a_corrupt_region_is_skipped_counted_and_acknowledged_past(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    payloads = [b"%03d" % n * 20 for n in range(30)]
    filled(tmp_path, payloads).close()
    segment = segment_files(tmp_path)[0]
    data = bytearray(segment.read_bytes())
    frame_bytes = len(encode_frame(TOPIC, b"vol-0", payloads[0]))  # all the same size
    data[5 * frame_bytes + 2:8 * frame_bytes + 9] = b"\xa5" * (3 * frame_bytes + 7)
    segment.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR, logger="streams.sdk.spool"):
        spool = Spool(tmp_path, BIG)
    lost = payloads[5:9]  # 5, 6 and 7 corrupted, 8's header too
    assert values(spool.read(100)) == [p for p in payloads if p not in lost]
    skipped = 9 * frame_bytes - 5 * frame_bytes
    assert (spool.dropped_frames, spool.dropped_bytes) == (1, skipped)
    assert (f"{skipped} byte(s) at byte {5 * frame_bytes} of {segment.name} fail their CRC"
            in caplog.text)
    spool.rewind()
    for entry in spool.read(7):  # acknowledged across the region, then reopened
        spool.ack(entry)
    spool.close()
    assert values(Spool(tmp_path, BIG).read(100)) == payloads[11:]


def test_scan_counts_what_it_read() -> None:
    frames = [encode_frame(TOPIC, None, b"x" * n) for n in (0, 5, 300)]
    data = b"".join(frames)
    found = scan(data, 0)
    assert (found.entries, found.entry_bytes, found.valid_end) == (3, len(data), len(data))
    assert scan(data, len(frames[0])).entries == 2
    assert FRAME.size == 8


# --------------------------------------------------------------------- bound, segments


def test_the_byte_bound_refuses_whole_entries_and_writes_nothing(tmp_path: Path) -> None:
    frame_bytes = len(encode_frame(TOPIC, b"vol-0", b"v" * 100))
    spool = Spool(tmp_path, max_bytes=3 * frame_bytes + frame_bytes // 2)
    for _ in range(3):
        spool.append(TOPIC, b"vol-0", b"v" * 100)
    on_disk = sum(p.stat().st_size for p in segment_files(tmp_path))
    with pytest.raises(SpoolFull, match=r"is full: 3 record\(s\).*IOACCT_SPOOL_MAX_BYTES"):
        spool.append(TOPIC, b"vol-0", b"v" * 100)
    assert sum(p.stat().st_size for p in segment_files(tmp_path)) == on_disk
    assert (spool.refused, spool.records, spool.disk_bytes) == (1, 3, on_disk)
    spool.append(TOPIC, b"vol-0", b"small")  # a smaller one still fits
    for entry in spool.read(10):
        spool.ack(entry)
    spool.sync()  # acknowledged and persisted: the room is back
    spool.append(TOPIC, b"vol-0", b"v" * 100)
    assert spool.peak_bytes <= spool.max_bytes


def test_segments_roll_over_and_go_once_acknowledged(tmp_path: Path) -> None:
    payloads = [b"%03d" % n * 10 for n in range(40)]
    spool = filled(tmp_path, payloads, segment_bytes=256)
    assert len(segment_files(tmp_path)) > 5
    assert values(spool.read(100)) == payloads
    spool.rewind()
    for entry in spool.read(20):
        spool.ack(entry)
    spool.sync()
    remaining = segment_files(tmp_path)
    assert int(remaining[0].stem) > 1  # the wholly acknowledged segments are gone
    assert spool.disk_bytes == sum(p.stat().st_size for p in remaining)
    spool.close()
    again = Spool(tmp_path, BIG, segment_bytes=256)
    assert values(again.read(100)) == payloads[20:]


def test_an_entry_larger_than_a_segment_gets_one_of_its_own(tmp_path: Path) -> None:
    spool = filled(tmp_path, [b"a", b"b" * 1000, b"c"], segment_bytes=128)
    assert values(spool.read(10)) == [b"a", b"b" * 1000, b"c"]


# ---------------------------------------------------------------- the model queue


class SpoolMachine(RuleBasedStateMachine):
    """Any sequence of appends, reads, acks, rewinds, syncs, closes and crashes leaves
    the spool equal to a queue: everything not acknowledged-and-synced, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="spool-model-"))
        self.max_bytes = 900
        self.spool = Spool(self.directory, self.max_bytes, segment_bytes=128)
        self.queue: list[bytes] = []  # the model: entries not acknowledged
        self.unsynced: list[bytes] = []  # acknowledged since the last sync
        self.read: list[SpoolEntry] = []  # read but not acknowledged, in order
        self.cursor = 0  # read position, counted from the head of the queue
        self.n = 0

    @rule(size=st.integers(0, 200))
    def append(self, size: int) -> None:
        value = b"%06d" % self.n + b"x" * size
        self.n += 1
        try:
            self.spool.append(TOPIC, b"k", value)
        except SpoolFull:
            assert self.spool.disk_bytes + len(encode_frame(TOPIC, b"k", value)) > self.max_bytes
            return
        self.queue.append(value)

    @rule(count=st.integers(1, 5))
    def read_some(self, count: int) -> None:
        got = self.spool.read(count)
        assert values(got) == self.queue[self.cursor:self.cursor + count]
        self.read += got
        self.cursor += len(got)

    @precondition(lambda self: self.read)
    @rule()
    def ack(self) -> None:
        self.spool.ack(self.read.pop(0))
        self.unsynced.append(self.queue.pop(0))
        self.cursor -= 1

    @rule()
    def rewind(self) -> None:
        self.spool.rewind()
        self.read, self.cursor = [], 0

    @rule()
    def sync(self) -> None:
        self.spool.sync()
        self.unsynced = []

    @rule(crash=st.booleans())
    def reopen(self, crash: bool) -> None:
        if crash:
            self.spool.abandon()  # the acknowledgements since the last sync come back
            self.queue = self.unsynced + self.queue
        else:
            self.spool.close()
        self.spool = Spool(self.directory, self.max_bytes, segment_bytes=128)
        self.unsynced, self.read, self.cursor = [], [], 0
        assert self.spool.recovered == len(self.queue)

    @invariant()
    def agrees_with_the_model(self) -> None:
        assert self.spool.records == len(self.queue)
        files = segment_files(self.directory)
        assert self.spool.disk_bytes == sum(p.stat().st_size for p in files)
        assert self.spool.disk_bytes <= self.max_bytes

    def teardown(self) -> None:
        self.spool.abandon()
        shutil.rmtree(self.directory, ignore_errors=True)


SpoolMachine.TestCase.settings = hyp_settings(max_examples=60, stateful_step_count=40,
                                             deadline=None)
TestSpoolModel = SpoolMachine.TestCase


# ------------------------------------------- the SDK's spool, with Kafka unreachable


def unreachable(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings whose broker address nothing listens on (no broker needed: none answers;
    so no login either)."""
    port = free_port()
    return Settings(kafka_port=port, bootstrap=f"127.0.0.1:{port}", state_dir=tmp_path,
                    batch_max_age_ms=600_000, spool_close_wait_s=0.3,
                    kafka_security="PLAINTEXT", **overrides)


async def record_events(producer: IoProducer, count: int) -> None:
    """``count`` events of 5 volumes, flushed every 8: with Kafka away the partition count
    is unknown, so each flush makes one record per volume (5, of 2, 2, 2, 1, 1 events)."""
    for k in range(count):
        producer.record(f"vol-{k % 5}", "tenant-1", "write", "ok", 4096 * k, 4096,
                        T0 + k, T0 + k + 1000)
        if k % 8 == 7:
            await producer.flush(wait_s=0)


def spooled_batches(directory: Path) -> list[tuple[str, int]]:
    """(producer_id, events) of every record in a spool, in spool order."""
    spool = Spool(directory, BIG)
    try:
        records = [SCHEMAS.decode(e.value)[1] for e in spool.read(10**6)]
    finally:
        spool.close()
    return [(r["producer_id"], len(r["op"])) for r in records]


def spooled_events(directory: Path) -> int:
    return sum(events for _, events in spooled_batches(directory))


def test_close_with_kafka_away_leaves_every_record_for_the_next_producer(
    tmp_path: Path,
) -> None:
    settings = unreachable(tmp_path)

    async def first() -> tuple[int, SpoolStats | None, int]:
        producer = IoProducer(settings)
        await producer.start()  # Kafka is not there: starting does not fail
        await record_events(producer, 200)
        left = await producer.close()
        return left, producer.spool_stats, producer.records_sent

    left, stats, sent = asyncio.run(first())
    assert stats is not None and left == sent == stats.spool_records == 125
    assert (stats.records_spooled, stats.outages, stats.drains) == (125, 1, 0)
    spool_dir = settings.spool_path()
    assert spool_dir == tmp_path / "spool" / "ioacct" and spooled_events(spool_dir) == 200

    async def second() -> tuple[SpoolStats | None, str]:
        producer = IoProducer(settings)
        await producer.start()
        await record_events(producer, 8)
        await producer.close()
        return producer.spool_stats, producer.producer_id

    stats, second_id = asyncio.run(second())
    assert stats is not None and (stats.records_recovered, stats.spool_records) == (125, 130)
    owners = [producer_id for producer_id, _ in spooled_batches(spool_dir)]
    assert owners[125:] == [second_id] * 5 and second_id not in owners[:125]  # old first
    assert spooled_events(spool_dir) == 208


def test_a_full_spool_refuses_records_loudly_and_record_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    settings = unreachable(tmp_path, spool_max_bytes=2_000)

    async def run() -> tuple[SpoolStats | None, int]:
        producer = IoProducer(settings, spool_dir=tmp_path / "small")
        await producer.start()
        await record_events(producer, 400)  # 250 records of ~150 bytes: far more than fits
        await producer.close()
        return producer.spool_stats, producer.records_sent

    with caplog.at_level(logging.ERROR, logger="streams.sdk.producer"):
        stats, sent = asyncio.run(run())
    assert stats is not None and stats.records_refused > 0 and sent == 250
    assert stats.spool_records + stats.records_refused == 250
    assert stats.events_refused + spooled_events(tmp_path / "small") == 400
    assert stats.spool_peak_bytes <= 2_000
    assert "is full" in caplog.text and "refused" in caplog.text
    assert any("SPOOL FULL" in line for line in stats.lines())


def test_the_default_spool_of_a_busy_directory_is_the_next_slot(tmp_path: Path) -> None:
    settings = unreachable(tmp_path)

    async def two() -> list[str]:
        producers = [IoProducer(settings), IoProducer(settings)]
        for producer in producers:
            await producer.start()
        dirs = [str(p.spool.directory) for p in producers if p.spool is not None]
        for producer in producers:
            await producer.close()
        return dirs

    base = settings.spool_path()
    assert asyncio.run(two()) == [str(base), str(base.with_name(base.name + ".1"))]

    async def start_on(directory: Path) -> None:
        await IoProducer(settings, spool_dir=directory).start()

    held = Spool(tmp_path / "mine", BIG)
    with pytest.raises(SpoolLocked):  # an explicit directory in use is an error
        asyncio.run(start_on(tmp_path / "mine"))
    held.close()


def test_ioacct_produce_exits_3_only_when_records_wait_in_the_spool() -> None:
    """The status a supervisor (and the chaos run) goes by: start the producer again on
    its spool when it is EXIT_SPOOL_LEFT."""
    from dataclasses import fields

    from streams.tools.produce import EXIT_SPOOL_LEFT, ProduceSummary

    def stats(left: int) -> SpoolStats:
        zeros: dict[str, Any] = {f.name: 0 for f in fields(SpoolStats)}
        return SpoolStats(**{**zeros, "directory": "spool", "spool_records": left})

    assert EXIT_SPOOL_LEFT == 3  # documented in README.md and docs/producer.md
    assert ProduceSummary().exit_status == 0  # no spool (IOACCT_SPOOL=0)
    assert ProduceSummary(spool=stats(0)).exit_status == 0
    assert ProduceSummary(spool=stats(67)).exit_status == EXIT_SPOOL_LEFT
