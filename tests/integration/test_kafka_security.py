"""The secured local broker (SASL_SSL, SCRAM-SHA-512, deny by default): each role may do
what it needs and is refused the rest; a client without credentials is refused everything.

A broker of its own (own ports and state directory), beside the session's plaintext one.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.helpers import create_ssl_context

from streams.config import Settings
from streams.kafka import local as kafka_local
from streams.kafka.security import client_kwargs
from streams.kafka.topics import ensure_topics
from tests.conftest import free_port

from .harness import ioacct

pytestmark = pytest.mark.integration
ROLES = ("worker", "hypervisor", "billing-reader", "monitoring-reader")


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    port, controller_port = free_port(), free_port()
    settings = Settings.from_env(
        kafka_port=port, kafka_controller_port=controller_port, bootstrap=f"127.0.0.1:{port}",
        state_dir=Path(tmp_path_factory.mktemp("secure")), partitions=2,
        kafka_security="SASL_SSL", kafka_user="admin",
        topic_prefix=f"s{uuid.uuid4().hex[:8]}")
    broker = kafka_local.LocalBroker.from_settings(settings)
    kafka_local.start(broker)
    try:
        asyncio.run(ensure_topics(settings))
        for role in ROLES:
            made = ioacct(settings, "kafka", "user", "add", role, "--role", role)
            assert made.returncode == 0, made.stderr
        yield settings
    finally:
        kafka_local.stop(broker)


def as_user(admin: Settings, user: str) -> Settings:
    return admin.with_overrides(kafka_user=user)


async def _write(settings: Settings, topic: str) -> None:
    producer = AIOKafkaProducer(request_timeout_ms=10_000, **client_kwargs(settings))
    await producer.start()
    try:
        await asyncio.wait_for(producer.send_and_wait(topic, b"x", key=b"k"), 20)
    finally:
        await producer.stop()


async def _read(settings: Settings, topic: str) -> None:
    consumer = AIOKafkaConsumer(enable_auto_commit=False, request_timeout_ms=10_000,
                                **client_kwargs(settings))
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        await asyncio.wait_for(consumer.getmany(tp, timeout_ms=2000), 20)
        await asyncio.wait_for(consumer.position(tp), 20)
    finally:
        await consumer.stop()


async def _delete(settings: Settings, topic: str) -> Any:
    client = AIOKafkaAdminClient(request_timeout_ms=10_000, **client_kwargs(settings))
    await client.start()
    try:
        return await client.delete_topics([topic])
    finally:
        await client.close()


def allowed(call: Any) -> bool:
    """Whether the broker let the call through (an authorization error: it did not)."""
    try:
        result = asyncio.run(call)
    except (KafkaError, TimeoutError) as exc:
        assert "uthoriz" in type(exc).__name__ + str(exc) or isinstance(exc, TimeoutError), exc
        return False
    errors = getattr(result, "topic_error_codes", None) or []
    return all(code == 0 for _, code, *_ in errors)


TOPIC_CASES = [
    # (role, how, topic attribute, allowed)
    ("hypervisor", "write", "raw_topic", True),
    ("hypervisor", "write", "dlq_topic", True),
    ("hypervisor", "write", "tokens_topic", False),  # forging a token
    ("hypervisor", "write", "billing_topic", False),
    ("hypervisor", "read", "raw_topic", False),
    ("worker", "read", "raw_topic", True),
    ("worker", "write", "billing_topic", True),
    ("worker", "read", "tokens_topic", True),
    ("worker", "write", "tokens_topic", False),  # forging a token
    ("billing-reader", "read", "billing_topic", True),
    ("billing-reader", "write", "billing_topic", False),
    ("billing-reader", "read", "raw_topic", False),
    ("monitoring-reader", "read", "monitoring_topic", True),
    ("monitoring-reader", "write", "monitoring_topic", False),
    ("monitoring-reader", "read", "billing_topic", False),
    ("admin", "write", "tokens_topic", True),
    # The volume registry ties a volume to its tenant: only admin writes it.
    ("hypervisor", "write", "registry_topic", False),  # claiming a volume for a tenant
    ("hypervisor", "read", "registry_topic", False),
    ("worker", "read", "registry_topic", True),
    ("worker", "write", "registry_topic", False),
    ("billing-reader", "read", "registry_topic", False),
    ("monitoring-reader", "read", "registry_topic", False),
    ("admin", "write", "registry_topic", True),
]


@pytest.mark.parametrize("role,how,topic,expected", TOPIC_CASES,
                         ids=[f"{r}-{h}-{t}" for r, h, t, _ in TOPIC_CASES])
def test_each_role_may_do_what_it_needs_and_nothing_else(
        admin: Settings, role: str, how: str, topic: str, expected: bool) -> None:
    settings = as_user(admin, role)
    call = (_write if how == "write" else _read)(settings, getattr(admin, topic))
    assert allowed(call) is expected


@pytest.mark.parametrize("role", ["worker", "hypervisor"])
def test_only_admin_may_register_a_volume(admin: Settings, role: str) -> None:
    """`ioacct volume register` as another principal: a clear error, nothing registered;
    as admin it is registered (and the worker may read the registry)."""
    volume = f"vol-acl-{role}"
    refused = ioacct(as_user(admin, role), "volume", "register", volume, "--tenant", "t-1")
    assert refused.returncode == 1 and "Authorization" in refused.stderr, refused.stderr
    assert volume not in ioacct(admin, "volume", "list").stdout
    done = ioacct(admin, "volume", "register", volume, "--tenant", "t-1")
    assert done.returncode == 0, done.stderr
    listed = ioacct(as_user(admin, "worker"), "volume", "list", "--tenant", "t-1", "--json")
    assert listed.returncode == 0, listed.stderr
    assert volume in listed.stdout


@pytest.mark.parametrize("role", ROLES)
def test_only_admin_may_delete_a_topic(admin: Settings, role: str) -> None:
    assert not allowed(_delete(as_user(admin, role), admin.dlq_topic))


def test_admin_may_delete_a_topic(admin: Settings) -> None:
    scratch = admin.with_overrides(topic_prefix=f"x{uuid.uuid4().hex[:8]}")
    asyncio.run(ensure_topics(scratch))
    assert allowed(_delete(admin, scratch.raw_topic))


def test_a_wrong_password_is_refused(admin: Settings, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    settings = admin.with_overrides(kafka_password_file=str(wrong))
    with pytest.raises(KafkaConnectionError):
        asyncio.run(_write(settings, admin.raw_topic))


def test_a_client_without_credentials_is_refused(admin: Settings) -> None:
    tls_only = {"bootstrap_servers": admin.bootstrap_servers, "security_protocol": "SSL",
                "ssl_context": create_ssl_context(cafile=str(admin.kafka_ca_path()))}
    for kwargs in (tls_only, {"bootstrap_servers": admin.bootstrap_servers}):
        with pytest.raises(KafkaConnectionError):
            asyncio.run(_start_producer(kwargs))


async def _start_producer(kwargs: dict[str, Any]) -> None:
    producer = AIOKafkaProducer(request_timeout_ms=5_000, **kwargs)
    try:
        await asyncio.wait_for(producer.start(), 30)
    finally:
        await producer.stop()
