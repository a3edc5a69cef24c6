"""IoProducer without a broker (nothing listens: no login either): its batching bounds
come from the settings, record() refuses what no layout can hold at once, and what it
cannot pack goes to the dead-letter topic through the spool, beside the good records."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streams.config import Settings
from streams.core.codec import default_schemas
from streams.sdk.producer import IoProducer
from streams.sdk.spool import Spool
from tests.conftest import free_port

T0 = 1_700_000_000 * 10**9
SCHEMAS = default_schemas()


def away(tmp_path: Path, **overrides: object) -> Settings:
    port = free_port()
    return Settings(kafka_port=port, bootstrap=f"127.0.0.1:{port}", state_dir=tmp_path,
                    spool_close_wait_s=0.2, kafka_security="PLAINTEXT", **overrides)  # type: ignore[arg-type]


@pytest.mark.parametrize(("batch_max_events", "max_events_per_record", "want"), [
    (16_384, 100_000, 16_384),  # the defaults
    (500_000, 100_000, 100_000),  # never more than the worker takes in one record
])
def test_the_batching_bounds_follow_the_settings(
    tmp_path: Path, batch_max_events: int, max_events_per_record: int, want: int,
) -> None:
    assert Settings().batch_max_events == 16_384 and Settings().batch_max_age_ms == 100
    settings = away(tmp_path, batch_max_events=batch_max_events,
                    max_events_per_record=max_events_per_record, max_record_bytes=400_000)

    async def bounds() -> tuple[int, int, int]:
        producer = IoProducer(settings, spool_dir=False)
        await producer._kafka.stop()  # noqa: SLF001 (never started)
        b = producer.batcher
        return b.max_events, b.max_age_ns, b.max_record_bytes

    assert asyncio.run(bounds()) == (want, 100 * 10**6, 300_000)


def test_an_unknown_op_raises_and_buffers_nothing(tmp_path: Path) -> None:
    async def run() -> int:
        producer = IoProducer(away(tmp_path), spool_dir=False)
        with pytest.raises(ValueError, match="unknown op or status 'trim'"):
            producer.record("vol-1", "t-1", "trim", "ok", 0, 1, T0, T0 + 1)
        await producer._kafka.stop()  # noqa: SLF001 (never started)
        return producer.batcher.buffered_events

    assert asyncio.run(run()) == 0


def test_an_event_no_record_can_carry_is_dead_lettered_beside_the_good_records(
    tmp_path: Path,
) -> None:
    settings = away(tmp_path)

    async def run() -> None:
        producer = IoProducer(settings, spool_dir=tmp_path / "spool")
        await producer.start()  # Kafka away: the partition count stays unknown
        for k in range(30):
            producer.record(f"vol-{k % 3}", "t-1", "write", "ok", 4096 * k, 4096, T0 + k,
                            T0 + k + 10)
        producer.record("vol-9", "t-1", "read", "ok", 0, 1 << 64, T0, T0 + 1)
        assert await producer.close() == 4

    asyncio.run(run())
    spool = Spool(tmp_path / "spool", 1 << 30)
    try:
        entries = spool.read(100)
    finally:
        spool.close()
    raw = [(e.key, SCHEMAS.decode(e.value)) for e in entries if e.topic == settings.raw_topic]
    assert [(key, name, len(r["op"])) for key, (name, r) in raw] == [
        (b"vol-0", "IoBatch2", 10), (b"vol-1", "IoBatch2", 10), (b"vol-2", "IoBatch2", 10)]
    [dead] = [SCHEMAS.decode(e.value) for e in entries if e.topic == settings.dlq_topic]
    assert dead[0] == "DeadLetter"
    assert dead[1]["reason"] == "bytes must be an integer that fits in 64 bits (signed)"
    assert dead[1]["source_topic"] == "sdk.record" and b"'vol-9'" in dead[1]["payload"]
