"""An append-only on-disk spool of encoded Kafka records: what the producer SDK holds
until Kafka has acknowledged it (DESIGN.md decision 5, docs/producer.md).

Pure: no faust, no aiokafka. Entries come back in exact append order; an entry leaves
only after it was acknowledged and the acknowledged position was persisted (fsync).

A spool directory holds::

    LOCK                    flock'd by the one process using the spool; holds its pid
    ACKED                   first unacknowledged position: segment id, offset, CRC32
    0000000000000001.seg    segments of entries: length u32 | CRC32 u32 | payload

payload = topic length u16 | topic | key length i32 (-1: no key) | key | value. The CRC
covers the length and the payload, so a torn append (kill -9 mid-write, a host crash)
is found when the spool is opened, dropped and logged, never misread; a corrupt region
is skipped to the next valid entry (frames.py), logged and counted.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from streams.sdk.frames import FRAME, decode_payload, encode_frame, frame_at, scan

log = logging.getLogger(__name__)

ACK = struct.Struct("<QQI")  # segment id, offset, CRC32 of the 16 bytes before it
SEGMENT_BYTES = 16 << 20
SUFFIX = ".seg"


class SpoolError(Exception):
    """The spool cannot do what was asked; the message says why."""


class SpoolFull(SpoolError):  # noqa: N818 (the name says what happened)
    """An append would take the spool past its byte bound; nothing was written."""


class SpoolLocked(SpoolError):  # noqa: N818
    """Another process holds the spool directory."""


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One record read back, with where its frame sits (to acknowledge it)."""

    topic: str
    key: bytes | None
    value: bytes
    segment_id: int
    offset: int
    frame_bytes: int


@dataclass
class _Segment:
    segment_id: int
    path: Path
    size: int
    skipped: dict[int, int] = field(default_factory=dict)  # corrupt: offset -> bytes


class Spool:
    """Segments of framed entries under ``directory``, holding at most ``max_bytes``.

    ``append`` writes one entry (no fsync unless ``sync_appends``); ``read`` returns
    the next entries from a cursor; ``ack`` marks entries acknowledged, in order;
    ``sync`` persists the acknowledged position (fsync) and deletes what it covers;
    ``rewind`` moves the cursor back to the first unacknowledged entry.
    """

    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int | None = None,
                 sync_appends: bool = False) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or min(SEGMENT_BYTES, max(4096, max_bytes // 8))
        self.sync_appends = sync_appends
        self.records = 0  # entries not acknowledged yet
        self.pending_bytes = 0
        self.disk_bytes = 0  # what counts against max_bytes: every segment's size
        self.peak_bytes = 0
        self.appended = 0
        self.refused = 0
        self.dropped_frames = 0  # torn tails and corrupt regions found on opening
        self.dropped_bytes = 0  # their bytes
        self._segments: list[_Segment] = []
        self._write_fd: int | None = None
        self._read_fd: tuple[int, int] | None = None  # (segment id, fd)
        self._dirty = False
        self._unsynced: list[_Segment] = []  # rolled over since the last sync_data()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock(self.directory / "LOCK")
        try:
            self._ack = self._synced_ack = self._load_ack()
            self._open_segments()
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._cursor = self._ack
        self.recovered = self.records  # entries left by an earlier run

    # -- opening ------------------------------------------------------------------------

    def _load_ack(self) -> tuple[int, int]:
        try:
            raw = (self.directory / "ACKED").read_bytes()
            segment_id, offset, crc = ACK.unpack(raw)
        except (OSError, struct.error):
            return (0, 0)
        if zlib.crc32(raw[:16]) != crc:
            log.error("spool %s: ACKED fails its CRC: resending from the oldest entry "
                      "(the worker's replay check absorbs what had landed)", self.directory)
            return (0, 0)
        return (segment_id, offset)

    def _open_segments(self) -> None:
        paths = sorted(self.directory.glob("*" + SUFFIX))
        ack_id, ack_offset = self._ack
        for path in paths:
            segment_id = int(path.stem)
            if segment_id < ack_id:  # wholly acknowledged; its deletion was interrupted
                path.unlink()
                continue
            start = ack_offset if segment_id == ack_id else 0
            self._segments.append(self._check(segment_id, path, start, path is paths[-1]))
        self._next_id = max([ack_id, *(s.segment_id for s in self._segments)]) + 1
        if self._segments and self._ack < (self._segments[0].segment_id, 0):
            self._ack = (self._segments[0].segment_id, 0)
        if self._segments:
            last = self._segments[-1]
            self._ack = min(self._ack, (last.segment_id, last.size))
            self._write_fd = os.open(last.path, os.O_WRONLY | os.O_APPEND)
        self.peak_bytes = self.disk_bytes

    def _check(self, segment_id: int, path: Path, start: int, last: bool) -> _Segment:
        data = path.read_bytes()
        start = min(start, len(data))
        found = scan(data, start)
        for region in found.skipped:
            log.error("spool %s: %d byte(s) at byte %d of %s fail their CRC (corrupt): "
                      "dropped, reading goes on at byte %d", self.directory, region.nbytes,
                      region.offset, path.name, region.offset + region.nbytes)
            self.dropped_frames += 1
            self.dropped_bytes += region.nbytes
        if found.valid_end < len(data):
            cut = len(data) - found.valid_end
            level = logging.WARNING if last else logging.ERROR
            log.log(level, "spool %s: %d byte(s) from byte %d to the end of %s hold no whole "
                    "entry (a torn append): dropped", self.directory, cut, found.valid_end,
                    path.name)
            self.dropped_frames += 1
            self.dropped_bytes += cut
            os.truncate(path, found.valid_end)
        self.records += found.entries
        self.pending_bytes += found.entry_bytes
        self.disk_bytes += found.valid_end
        return _Segment(segment_id, path, found.valid_end,
                        {region.offset: region.nbytes for region in found.skipped})

    # -- appending ----------------------------------------------------------------------

    def append(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Write one entry, or raise SpoolFull and write nothing."""
        frame = encode_frame(topic, key, value)
        if self.disk_bytes + len(frame) > self.max_bytes:
            self.refused += 1
            raise SpoolFull(
                f"spool {self.directory} is full: {self.records} record(s) Kafka has not "
                f"acknowledged fill {self.disk_bytes} of {self.max_bytes} bytes; a record of "
                f"{len(frame)} bytes was refused (IOACCT_SPOOL_MAX_BYTES sets the bound)")
        segment = self._writable(len(frame))
        assert self._write_fd is not None
        try:
            _write_all(self._write_fd, frame)
            if self.sync_appends:
                os.fdatasync(self._write_fd)
        except OSError as exc:  # ENOSPC and the like: take the partial entry back
            os.ftruncate(self._write_fd, segment.size)
            self.refused += 1
            raise SpoolFull(f"spool {self.directory}: writing a record failed ({exc}); "
                            "it was refused") from exc
        segment.size += len(frame)
        self.disk_bytes += len(frame)
        self.peak_bytes = max(self.peak_bytes, self.disk_bytes)
        self.records += 1
        self.pending_bytes += len(frame)
        self.appended += 1
        self._dirty = True

    def _writable(self, frame_bytes: int) -> _Segment:
        if self._segments and (self._segments[-1].size == 0 or
                               self._segments[-1].size + frame_bytes <= self.segment_bytes):
            return self._segments[-1]
        if self._write_fd is not None:  # roll over; sync_data() fsyncs it if still needed
            os.close(self._write_fd)
            if self._dirty:
                self._unsynced.append(self._segments[-1])
        segment = _Segment(self._next_id, self.directory / f"{self._next_id:016d}{SUFFIX}", 0)
        self._next_id += 1
        self._write_fd = os.open(segment.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        _fsync_dir(self.directory)
        self._segments.append(segment)
        if not self.records:
            self._ack = self._cursor = (segment.segment_id, 0)
        return segment

    # -- reading and acknowledging ------------------------------------------------------

    def read(self, max_entries: int, max_bytes: int = 8 << 20) -> list[SpoolEntry]:
        """The next entries after the cursor, in append order; moves the cursor past them."""
        out: list[SpoolEntry] = []
        taken = 0
        while len(out) < max_entries and taken < max_bytes:
            segment = self._segment(self._cursor[0])
            if segment is None:
                break
            offset = self._cursor[1] if segment.segment_id == self._cursor[0] else 0
            if offset >= segment.size:
                following = self._following(segment)
                if following is None:
                    self._cursor = (segment.segment_id, offset)
                    break
                self._cursor = (following.segment_id, 0)
                continue
            entry, frame_bytes = self._entry(segment, offset)
            self._cursor = (segment.segment_id, offset + frame_bytes)
            if entry is not None:
                out.append(entry)
                taken += frame_bytes
        return out

    def _entry(self, segment: _Segment, offset: int) -> tuple[SpoolEntry | None, int]:
        if offset in segment.skipped:  # logged when the spool was opened
            return None, segment.skipped[offset]
        fd = self._reader(segment)
        length, _ = FRAME.unpack(os.pread(fd, FRAME.size, offset))
        frame = os.pread(fd, FRAME.size + length, offset)
        if frame_at(frame, 0) <= 0:  # it passed on opening, or we wrote it: the disk changed
            raise SpoolError(f"spool {self.directory}: entry at byte {offset} of "
                             f"{segment.path.name} no longer passes its CRC")
        topic, key, value = decode_payload(frame[FRAME.size:])
        return SpoolEntry(topic, key, value, segment.segment_id, offset, len(frame)), len(frame)

    def rewind(self) -> None:
        """Read again from the first unacknowledged entry (after a failed send)."""
        self._cursor = self._ack

    def ack(self, entry: SpoolEntry) -> None:
        """Kafka acknowledged ``entry``; entries must be acknowledged in read order."""
        if (entry.segment_id, entry.offset) < self._ack:
            raise ValueError("entry acknowledged twice, or out of order")
        self._ack = (entry.segment_id, entry.offset + entry.frame_bytes)
        self.records -= 1
        self.pending_bytes -= entry.frame_bytes

    def sync(self) -> None:
        """Persist the acknowledged position (fsync), then delete what it covers."""
        if self._ack != self._synced_ack:
            raw = ACK.pack(*self._ack, 0)[:16]
            _replace_file(self.directory / "ACKED", raw + struct.pack("<I", zlib.crc32(raw)))
            self._synced_ack = self._ack
        while self._segments and self._wholly_acked(self._segments[0]):
            self._delete(self._segments.pop(0))

    def _wholly_acked(self, segment: _Segment) -> bool:
        if segment.segment_id < self._synced_ack[0]:
            return True
        last = segment is self._segments[-1]
        if not last and self._synced_ack >= (segment.segment_id, segment.size):
            return True
        return (last and self.records == 0 and self._synced_ack == self._ack == self._cursor
                == (segment.segment_id, segment.size))

    def _delete(self, segment: _Segment) -> None:
        if self._read_fd is not None and self._read_fd[0] == segment.segment_id:
            os.close(self._read_fd[1])
            self._read_fd = None
        if not self._segments and self._write_fd is not None:
            os.close(self._write_fd)
            self._write_fd = None
        segment.path.unlink()
        self.disk_bytes -= segment.size

    def sync_data(self) -> None:
        """fsync what was appended since the last call and is still here (the producer
        calls it while Kafka is unreachable: then records really wait on disk)."""
        for segment in self._unsynced:
            if any(s is segment for s in self._segments):
                fd = os.open(segment.path, os.O_RDONLY)
                try:
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
        self._unsynced = []
        if self._dirty and self._write_fd is not None:
            os.fdatasync(self._write_fd)
        self._dirty = False

    def close(self) -> None:
        """Persist the acknowledged position and the data, release the directory."""
        if self._lock_fd < 0:
            return
        self.sync()
        self.sync_data()
        self.abandon()

    def abandon(self) -> None:
        """Release the directory persisting nothing more: what a crash leaves (tests)."""
        for fd in (self._write_fd, self._read_fd[1] if self._read_fd else None):
            if fd is not None:
                os.close(fd)
        self._write_fd = self._read_fd = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # -- helpers ------------------------------------------------------------------------

    def _segment(self, segment_id: int) -> _Segment | None:
        for segment in self._segments:
            if segment.segment_id >= segment_id:
                return segment
        return None

    def _following(self, segment: _Segment) -> _Segment | None:
        index = self._segments.index(segment)
        return self._segments[index + 1] if index + 1 < len(self._segments) else None

    def _reader(self, segment: _Segment) -> int:
        if self._read_fd is None or self._read_fd[0] != segment.segment_id:
            if self._read_fd is not None:
                os.close(self._read_fd[1])
            self._read_fd = (segment.segment_id, os.open(segment.path, os.O_RDONLY))
        return self._read_fd[1]


def open_free_slot(base: Path, max_bytes: int, slots: int) -> Spool:
    """The first spool of ``base``, ``base.1``, ... that no other process holds (the
    default spool: one per running producer)."""
    for slot in range(slots):
        try:
            return Spool(base if slot == 0 else base.with_name(f"{base.name}.{slot}"),
                         max_bytes)
        except SpoolLocked:
            continue
    raise SpoolLocked(f"spools {base} to {base}.{slots - 1} are all in use")


def _lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise SpoolLocked(f"spool {path.parent} is in use by another process (pid {holder}); "
                          "give each producer a spool directory of its own") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _replace_file(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
