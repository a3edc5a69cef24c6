"""Shared fixtures: one real Kafka broker per test session, started by the project itself.

No mock broker stands in for it (DESIGN.md decision 1). Every test module gets
its own topic prefix, so tests never see each other's records.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.config import Settings
from streams.kafka import local as kafka_local


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_block(count: int) -> int:
    """A base port with ``count`` consecutive free ports (a local cluster's port layout:
    node i takes base + 2*(i-1) and base + 1 + 2*(i-1))."""
    for _ in range(200):
        base, socks = free_port(), []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except (OSError, OverflowError):
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports")


@pytest.fixture(scope="session")
def kafka_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings pointing at a broker of our own on free ports, beside any running one."""
    port, controller_port = free_port(), free_port()
    state_dir = Path(tmp_path_factory.mktemp("ioacct-state"))
    settings = Settings.from_env(
        kafka_port=port, kafka_controller_port=controller_port,
        bootstrap=f"127.0.0.1:{port}", state_dir=state_dir, partitions=8,
    )
    broker = kafka_local.LocalBroker.from_settings(settings)
    kafka_local.start(broker)
    try:
        yield settings
    finally:
        kafka_local.stop(broker)


@pytest.fixture(scope="module")
def pipeline_settings(kafka_settings: Settings) -> Settings:
    """The session broker with a topic prefix of this module's own."""
    return kafka_settings.with_overrides(topic_prefix=f"t{uuid.uuid4().hex[:10]}")
