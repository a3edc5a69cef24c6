"""The worker's registry view answers without Kafka when it can: a known volume at once,
an unknown one only once the view was read past the record's timestamp."""

from __future__ import annotations

import pytest

from streams.config import Settings
from streams.core.registry import Registration, RegistryBehind
from streams.kafka.users import role_grants
from streams.pipeline.registry_feed import TIMESTAMP_RESOLUTION_NS, RegistryFeed

T = 1_700_000_000 * 10**9


def test_an_unknown_volume_is_judged_only_by_a_view_fresher_than_the_record() -> None:
    feed = RegistryFeed(Settings())
    feed.registry.apply(Registration("vol-a", "t-1", 0))
    lookup = feed.lookup_for(T)
    assert lookup("vol-a") == "t-1"  # known: no round trip, whatever the freshness
    with pytest.raises(RegistryBehind):
        lookup("vol-b")
    feed.fresh_ns = T + TIMESTAMP_RESOLUTION_NS  # fetched in the record's millisecond
    with pytest.raises(RegistryBehind):
        feed.lookup_for(T)("vol-b")
    feed.fresh_ns = T + TIMESTAMP_RESOLUTION_NS + 1  # fetched after it was appended
    assert feed.lookup_for(T)("vol-b") is None
    assert feed.lookup_for(T - 5)("vol-b") is None  # older records: the same read covers


def test_only_admin_writes_the_registry() -> None:
    settings = Settings()
    worker = role_grants("worker", settings)
    assert any(g.deny and g.name == settings.registry_topic and g.operations == ("Write",)
               for g in worker)
    for role in ("hypervisor", "billing-reader", "monitoring-reader"):
        assert all(g.name != settings.registry_topic and not (
            g.prefixed and settings.registry_topic.startswith(g.name))
            for g in role_grants(role, settings))
