"""The spool's frame format: ``length u32 | CRC32 u32 | payload``, with
payload = topic length u16 | topic | key length i32 (-1: no key) | key | value.

The CRC covers the length and the payload, so a torn append (kill -9 mid-write, a host
crash) is found when a segment is scanned, never misread.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

FRAME = struct.Struct("<II")  # payload length, CRC32 of (length, payload)
LENGTH = struct.Struct("<I")
TOPIC_LEN = struct.Struct("<H")
KEY_LEN = struct.Struct("<i")
MAX_ENTRY_BYTES = 64 << 20  # a longer length field is corruption, not an entry


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


@dataclass(frozen=True)
class ScanResult:
    entries: int
    entry_bytes: int
    bad_offsets: frozenset[int]  # frames that fail their CRC but are framed: skipped
    valid_end: int  # where the readable part ends: the rest is a torn tail


def scan(data: bytes | memoryview, start: int) -> ScanResult:
    """Check every frame of a segment from ``start``. A frame that fails its CRC is
    skipped when the next one is valid (or it ends the file); else the segment ends."""
    entries = entry_bytes = 0
    bad: set[int] = set()
    pos = start
    while pos < len(data):
        size = frame_at(data, pos)
        if size > 0:
            entries, entry_bytes, pos = entries + 1, entry_bytes + size, pos + size
        elif size < 0 and (pos - size == len(data) or frame_at(data, pos - size) > 0):
            bad.add(pos)
            pos -= size
        else:
            break
    return ScanResult(entries, entry_bytes, frozenset(bad), pos)
