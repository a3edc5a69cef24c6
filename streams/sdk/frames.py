"""The spool's frame format: ``length u32 | CRC32 u32 | payload``, with
payload = topic length u16 | topic | key length i32 (-1: no key) | key | value.

The CRC covers the length and the payload, so a torn append (kill -9 mid-write, a host
crash) or a corrupt region is found when a segment is scanned, never misread. A corrupt
region is skipped to the next valid frame; only a tail with no valid frame after it
ends a segment.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

FRAME = struct.Struct("<II")  # payload length, CRC32 of (length, payload)
LENGTH = struct.Struct("<I")
TOPIC_LEN = struct.Struct("<H")
KEY_LEN = struct.Struct("<i")
MIN_PAYLOAD = TOPIC_LEN.size + KEY_LEN.size
MAX_ENTRY_BYTES = 64 << 20  # a longer length field is corruption, not an entry
RESYNC_MAX_BYTES = 16 << 20  # how far past a corrupt frame the next valid one is sought


def encode_frame(topic: str, key: bytes | None, value: bytes) -> bytes:
    """The bytes one append writes: frame header and payload."""
    topic_b = topic.encode()
    payload = b"".join((TOPIC_LEN.pack(len(topic_b)), topic_b,
                        KEY_LEN.pack(-1 if key is None else len(key)), key or b"", value))
    crc = zlib.crc32(payload, zlib.crc32(LENGTH.pack(len(payload))))
    return FRAME.pack(len(payload), crc) + payload


def decode_payload(payload: bytes) -> tuple[str, bytes | None, bytes]:
    (topic_len,) = TOPIC_LEN.unpack_from(payload, 0)
    pos = TOPIC_LEN.size + topic_len
    (key_len,) = KEY_LEN.unpack_from(payload, pos)
    pos += KEY_LEN.size
    key = None if key_len < 0 else payload[pos:pos + key_len]
    pos += max(0, key_len)
    return payload[TOPIC_LEN.size:TOPIC_LEN.size + topic_len].decode(), key, payload[pos:]


def frame_at(data: bytes | memoryview, pos: int) -> int:
    """Size of the valid frame at ``pos``; minus it when the frame fits but fails its
    CRC; 0 when no frame fits there (a torn tail, or garbage)."""
    if len(data) - pos < FRAME.size:
        return 0
    length, crc = FRAME.unpack_from(data, pos)
    end = pos + FRAME.size + length
    if length > MAX_ENTRY_BYTES or end > len(data):
        return 0
    payload = data[pos + FRAME.size:end]
    good = zlib.crc32(payload, zlib.crc32(LENGTH.pack(length))) == crc
    return (end - pos) if good else -(end - pos)


def _well_formed(data: bytes | memoryview, pos: int) -> bool:
    """The payload's fields fit its length: cheap, so checked before the CRC."""
    if len(data) - pos < FRAME.size + MIN_PAYLOAD:
        return False
    (length,) = LENGTH.unpack_from(data, pos)
    if length < MIN_PAYLOAD or length > min(MAX_ENTRY_BYTES, len(data) - pos - FRAME.size):
        return False
    (topic_len,) = TOPIC_LEN.unpack_from(data, pos + FRAME.size)
    if topic_len > length - MIN_PAYLOAD:
        return False
    (key_len,) = KEY_LEN.unpack_from(data, pos + FRAME.size + TOPIC_LEN.size + topic_len)
    return -1 <= key_len <= length - MIN_PAYLOAD - topic_len


def _resyncs_at(data: bytes | memoryview, pos: int) -> bool:
    """A frame that passes its CRC, decodes, and is followed by another valid frame or
    the end: where reading can go on after a corrupt region."""
    if not _well_formed(data, pos) or (size := frame_at(data, pos)) <= 0:
        return False
    try:
        decode_payload(bytes(data[pos + FRAME.size:pos + size]))
    except (struct.error, UnicodeDecodeError):
        return False
    return pos + size == len(data) or frame_at(data, pos + size) > 0


def next_valid(data: bytes | memoryview, pos: int, max_bytes: int = RESYNC_MAX_BYTES) -> int:
    """The first position after ``pos`` (at most ``max_bytes`` on) where reading can go
    on, or -1: none, so what follows ``pos`` is a torn tail."""
    last = min(len(data) - FRAME.size - MIN_PAYLOAD, pos + max_bytes)
    for candidate in range(pos + 1, last + 1):
        if _resyncs_at(data, candidate):
            return candidate
    return -1


@dataclass(frozen=True)
class Skipped:
    """A corrupt region: ``nbytes`` from ``offset`` fail their CRC and were skipped."""

    offset: int
    nbytes: int


def walk(data: bytes | memoryview, start: int) -> Iterator[tuple[int, int] | Skipped]:
    """Every valid frame of a segment from ``start`` as (offset, size), and every
    corrupt region between them as Skipped; it stops where a torn tail begins."""
    pos = start
    while pos < len(data):
        size = frame_at(data, pos)
        if size > 0:
            yield (pos, size)
            pos += size
            continue
        # The length may be intact: then the next frame starts right after this one,
        # unless reading can go on inside the span it claims (the length itself was
        # corrupt, and happens to end where a frame or the segment ends).
        if size < 0 and (pos - size == len(data) or frame_at(data, pos - size) > 0):
            inside = next_valid(data, pos, -size - 1)
            following = pos - size if inside < 0 else inside
        elif (following := next_valid(data, pos)) < 0:
            return
        yield Skipped(pos, following - pos)
        pos = following


@dataclass(frozen=True)
class ScanResult:
    entries: int
    entry_bytes: int
    skipped: tuple[Skipped, ...]  # corrupt regions, each followed by a valid frame
    valid_end: int  # where the readable part ends: the rest is a torn tail


def scan(data: bytes | memoryview, start: int) -> ScanResult:
    """Check every frame of a segment from ``start`` (see ``walk``)."""
    entries = entry_bytes = 0
    skipped: list[Skipped] = []
    end = start
    for item in walk(data, start):
        if isinstance(item, Skipped):
            skipped.append(item)
            end = item.offset + item.nbytes
        else:
            entries, entry_bytes, end = entries + 1, entry_bytes + item[1], sum(item)
    return ScanResult(entries, entry_bytes, tuple(skipped), end)
