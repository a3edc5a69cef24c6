"""The volume registry's map and ownership rule (SEMANTICS.md 1), and account_record
judging volumes against it: a rejected volume changes no state at all."""

from __future__ import annotations

import itertools
import random

import pytest

from streams.core.ingest import account_record
from streams.core.registry import (
    Registration,
    RegistryBehind,
    TenantIndex,
    VolumeRegistry,
    mode_error,
    owner_error,
    register_error,
)
from tests.unit.core.ingest_records import NOW, SCHEMAS, Table, batch, encode, ev, placed


def reg(volume: str, tenant: str, at: int = 0) -> Registration:
    return Registration(volume, tenant, at, "admin")


def test_latest_record_of_a_volume_wins_like_compaction() -> None:
    """Against an independent fold: a dict written in order, key by key."""
    rng = random.Random(7)
    records = [reg(f"v{rng.randrange(20)}", f"t{rng.randrange(5)}", i) for i in range(500)]
    registry = VolumeRegistry(records)
    expected: dict[str, Registration] = {}
    for record in records:
        expected[record.volume_id] = record
    assert len(registry) == len(expected)
    for volume, record in expected.items():
        assert registry.get(volume) == record and registry.tenant_of(volume) == record.tenant_id
    assert registry.tenant_of("nope") is None
    assert [r.volume_id for r in registry] == sorted(expected)


def test_a_workers_tenant_index_agrees_with_the_registry() -> None:
    """The worker's index (TenantIndex) answers tenant_of as the whole registry does."""
    rng = random.Random(8)
    records = [reg(f"v{rng.randrange(30)}", f"t{rng.randrange(4)}", i) for i in range(600)]
    registry, index = VolumeRegistry(records), TenantIndex(records)
    assert len(index) == len(registry)
    for volume in [f"v{i}" for i in range(32)]:
        assert index.tenant_of(volume) == registry.tenant_of(volume)


def test_a_tenant_index_keeps_one_string_per_tenant() -> None:
    """Every worker holds the whole fleet's index: its volumes share their tenant's string
    (docs/performance.md, what a volume costs)."""
    index = TenantIndex(reg(f"v{i}", "".join(["tenant-", str(i % 3)]), i) for i in range(300))
    tenants = {id(index.tenant_of(f"v{i}")) for i in range(300)}
    assert len(tenants) == 3


def test_avro_round_trip_through_the_schema_file() -> None:
    record = reg("vol-9", "t-3", NOW)
    payload = SCHEMAS.encode("VolumeRegistration", record.to_avro())
    assert Registration.from_avro(SCHEMAS.decode(payload, "VolumeRegistration")[1]) == record


@pytest.mark.parametrize(("registered", "known", "claimed", "reason"), [
    (None, None, "A", "volume v is not registered"),
    (None, "A", "A", "volume v is not registered"),
    ("A", None, "B", "volume v is registered to tenant A, not B"),
    ("A", "A", "B", "volume v is registered to tenant A, not B"),
    ("A", "K", "A", "volume v belongs to tenant K, not A"),  # counted for K before the registry
    ("A", None, "A", None),
    ("A", "A", "A", None),
])
def test_owner_rule_with_a_registry(registered: str | None, known: str | None, claimed: str,
                                    reason: str | None) -> None:
    assert owner_error("v", claimed, registered, True, known) == reason


def test_owner_rule_without_a_registry_is_first_tenant_seen() -> None:
    for registered, known, claimed in itertools.product([None, "A", "B"], repeat=3):
        if known is None or known == claimed:
            assert owner_error("v", claimed, registered, False, known) is None
        else:
            assert owner_error("v", claimed, registered, False, known) == (
                f"volume v belongs to tenant {known}, not {claimed}")


def test_a_volume_never_moves_and_registering_again_is_no_change() -> None:
    assert register_error(None, "v", "A") is None
    assert register_error(reg("v", "A"), "v", "A") is None
    reason = register_error(reg("v", "A"), "v", "B")
    assert reason is not None and "registered to tenant A" in reason and "never moves" in reason


def test_modes() -> None:
    assert mode_error("required") is None and mode_error("off") is None
    assert mode_error("maybe") == "IOACCT_VOLUME_REGISTRY='maybe': use one of required, off"


def _apply(table: Table, payload: bytes, registry: VolumeRegistry):  # type: ignore[no-untyped-def]
    outcome = account_record(payload, placed(payload), table.load, SCHEMAS, NOW,
                             registered=registry.tenant_of)
    for volume in outcome.volumes:
        if volume.state is not None:
            table.snapshots[volume.volume_id] = volume.state.snapshot()
    return outcome


def test_unregistered_and_other_tenant_records_change_nothing() -> None:
    registry = VolumeRegistry([reg("vol-1", "t-1")])
    table = Table()
    assert _apply(table, encode(batch([ev()] * 2, "p-1", 5)), registry).counted == 2
    before = dict(table.snapshots)
    forged = [encode(batch([ev(tenant_id="t-2")] * 3, "p-1", 2**63 - 1)),
              encode(batch([ev(volume_id="vol-2")] * 4, "p-1", 2**63 - 1))]
    reasons = []
    for payload in forged:
        outcome = _apply(table, payload, registry)
        [rejection] = outcome.rejections
        assert rejection.whole and rejection.payload == payload and outcome.counted == 0
        assert outcome.volumes == []  # no state, no events, no producer for anything
        reasons.append(rejection.reason)
    assert reasons == ["volume vol-1 is registered to tenant t-1, not t-2",
                       "volume vol-2 is not registered"]
    assert table.snapshots == before  # no volume vol-2, no replay mark moved
    after = _apply(table, encode(batch([ev()], "p-1", 6)), registry)
    assert after.counted == 1 and not after.replays
    state = table.load("vol-1")
    assert state is not None and state.producer_seqs == {"p-1": 6} and state.rejected == 0


def test_a_lookup_that_is_behind_raises_before_any_state_changes() -> None:
    table = Table()

    def behind(volume_id: str) -> str | None:
        raise RegistryBehind(volume_id)

    payload = encode(batch([ev()], "p-1", 0))
    with pytest.raises(RegistryBehind) as raised:
        account_record(payload, placed(payload), table.load, SCHEMAS, NOW, registered=behind)
    assert raised.value.volume_id == "vol-1" and table.snapshots == {}
    # Registered meanwhile: judged again, counted once.
    assert _apply(table, payload, VolumeRegistry([reg("vol-1", "t-1")])).counted == 1


def test_without_a_registry_account_record_keeps_first_tenant_seen() -> None:
    table = Table()
    assert table.apply(encode(batch([ev(volume_id="never-registered")]))).counted == 1
