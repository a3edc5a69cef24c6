"""The bench's anchors (h) Kafka Streams and (i) quix-streams do the bench's job right.

Each anchor runs over a small fleet's events as layout-2 records on a PLAINTEXT broker
of this module's own (as the bench runs them), and its output, the latest row per volume
and 1 s window, must equal the brute-force oracle's windows of the same events, field by
field. No speed is checked here: the figures are `make bench`'s."""

from __future__ import annotations

import asyncio
import importlib.util
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.config import Settings
from streams.kafka import local as kafka_local
from streams.kafka.topics import TopicSpec
from streams.tools.bench.anchors import anchor_run, produce_layout2
from streams.tools.bench.procs import create_topics, free_port
from streams.tools.bench.workloads import simulated_events
from tests.oracles.anchor_windows import anchor_windows

pytestmark = pytest.mark.integration

EVENTS = 3_000  # 40 volumes at 1,000 events/s: 3 s of event time, many windows per volume


@pytest.fixture(scope="module")
def plain_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A PLAINTEXT broker of this module's own: the anchors connect as the bench's do."""
    port = free_port()
    settings = Settings.from_env(
        kafka_port=port, kafka_controller_port=free_port(), bootstrap=f"127.0.0.1:{port}",
        kafka_security="PLAINTEXT", partitions=8,
        state_dir=Path(tmp_path_factory.mktemp("anchor-state")))
    broker = kafka_local.LocalBroker.from_settings(settings)
    kafka_local.start(broker)
    try:
        yield settings
    finally:
        kafka_local.stop(broker)


@pytest.mark.parametrize("kind", ["h", "i"])
def test_anchor_output_equals_the_oracle(plain_broker: Settings, kind: str,
                                         tmp_path: Path) -> None:
    if kind == "i" and importlib.util.find_spec("quixstreams") is None:
        pytest.fail("quixstreams is missing: make bench-deps (pip install -e '.[bench]')")
    settings = plain_broker.with_overrides(topic_prefix=f"t{uuid.uuid4().hex[:8]}")
    events = simulated_events(40, EVENTS, 1_000.0, time.time_ns())

    async def run() -> dict[tuple[str, int], dict[str, int]]:
        await create_topics(settings.bootstrap_servers,
                            [TopicSpec(settings.raw_topic, settings.partitions, {})])
        records, sent = await produce_layout2(settings, events)
        assert sent == EVENTS and 0 < records < EVENTS
        result = await anchor_run(settings, kind, tmp_path, records, sent, timeout_s=120)
        return result.windows

    windows = asyncio.run(run())
    expected = anchor_windows(events)
    assert len(expected) > 40  # several windows per volume: the windowing is exercised
    assert windows == expected
