"""The Kafka keys and headers of the pipeline's records, and their parsers.

A key says what a record is about, so that compaction keeps the latest of each and a
consumer that sees a record twice can drop the copy (SEMANTICS.md sections 3 and 5).
"""

from __future__ import annotations

TICK_KEY = b"__tick__"  # a Tick in the raw topic: the wall clock, for idle partitions
MARKER_KEY_PREFIX = b"~"  # watermark markers in the stats topics: no volume id starts with it
SOURCE_OFFSET_HEADER = "ioacct-source-offset"  # the input offset whose processing made it


def window_key(volume_id: str, window_start_ns: int) -> bytes:
    """``volume_id/window_start_ns``: a window record (all revisions), or a monitoring one."""
    return b"%s/%d" % (volume_id.encode(), window_start_ns)


def parse_window_key(key: bytes | None) -> tuple[str, int] | None:
    """(volume_id, window_start_ns) of a window key, or None if it is not one."""
    if key is None:
        return None
    volume, _, start = key.decode(errors="replace").rpartition("/")
    if not volume or not start.lstrip("-").isdigit():
        return None
    return volume, int(start)


def watermark_key(partition: int) -> bytes:
    """The key of a partition's watermark markers (one per partition, compacted)."""
    return MARKER_KEY_PREFIX + b"watermark/%d" % partition


def billing_record_id(tenant_id: str, volume_id: str, hour_start_ns: int, sequence: int
                      ) -> str:
    """Deterministic id of a billing record: a consumer that sees it twice drops the copy."""
    return f"{tenant_id}/{volume_id}/{hour_start_ns}/{sequence}"


def parse_billing_record_id(text: str | None) -> tuple[str | None, int | None]:
    """(volume_id, hour_start_ns) of "tenant/volume/hour/sequence", or Nones."""
    parts = (text or "").split("/")
    if len(parts) != 4 or not parts[2].lstrip("-").isdigit():
        return None, None
    return parts[1], int(parts[2])


def source_offset_header(offset: int) -> list[tuple[str, bytes]]:
    """The header naming the input record whose processing made a window record."""
    return [(SOURCE_OFFSET_HEADER, b"%d" % offset)]
