"""The agent: accounting (raw records -> counters, 1 s windows and their 1 m and 1 h
rollups, billing, dead letters).

Thin: it reads a record through the guard (once, in offset order), hands it to
``core``'s logic or a stage, writes the tables and publishes what came back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streams.core.codec import HEADER_LEN
from streams.core.counters import VolumeState
from streams.core.ingest import Placement, RecordOutcome, account_record
from streams.core.registry import RegistryBehind
from streams.core.step import StepRecord, account_step
from streams.core.windows.book import Emission, Parts, ProducedColumns
from streams.pipeline.batches import Records, batch_agent_over
from streams.pipeline.guard.order import committed_offset, record_wall_ns
from streams.pipeline.publish import (
    publish_rejections,
    publish_windows,
)
from streams.state.journal import Write

if TYPE_CHECKING:
    from streams.pipeline.app import Pipeline, WorkerStats

log = logging.getLogger(__name__)


def register_accounting(p: Pipeline) -> None:
    """The accounting agent: raw records many at a time (batches.py), partition by
    partition; one state write per volume per step, one windows unit per step."""
    tick_header = p.schemas.headers["Tick"]

    async def handle(partition: int, records: Records) -> None:
        await _account_step(p, partition, records, tick_header)

    batch_agent_over(p, p.raw_topic, "accounting", handle)


@dataclass
class _Step:
    """What one step of the accounting agent has made so far, for one partition."""

    states: dict[str, VolumeState | None] = field(default_factory=dict)  # read or made
    changed: set[str] = field(default_factory=set)
    parts: list[ProducedColumns] = field(default_factory=list)  # events for the windows
    bulk: Parts | None = None  # or those of records judged at once (never both)
    events: int = 0
    wall_ns: int = 0  # the latest Kafka timestamp of the records in ``parts``
    offset: int = -1  # the last of those records

    def load(self, p: Pipeline) -> Callable[[str], VolumeState | None]:
        states = self.states

        def load_state(volume_id: str) -> VolumeState | None:
            if volume_id not in states:
                states[volume_id] = p.load_state(volume_id)
            return states[volume_id]
        return load_state


async def _account_step(p: Pipeline, partition: int, records: Records,
                        tick_header: bytes) -> None:
    """Records of one partition, in offset order: Ticks, or batches to count, window, bill
    and dead-letter. The records between two Ticks are judged per volume at once
    (core/step.py), or record by record when a volume of them is rejected; the windows
    take the step's events in units (flushed before a Tick and every
    ``step_max_events``); the counters table gets each changed volume's state once, at
    the end."""
    now_ns = time.time_ns()
    await _replay_raw_outputs(p, records[0][1])
    step = _Step()
    data: Records = []
    for value, message in records:
        value = value or b""  # a null record (a tombstone): dead-lettered, not a crash
        if value[:HEADER_LEN] != tick_header:
            data.append((value, message))
            continue
        await _account_records(p, partition, data, step, now_ns)
        data = []
        await _flush_windows(p, partition, step)
        emissions = p.windows_for(partition).on_tick(
            record_wall_ns(message, now_ns), message.offset,
            committed_offset(p.app.consumer, message))
        await p.send_changelogs()
        await _state_landed(p, partition, emissions)
        await publish_windows(p, emissions, partition, message.offset)
    await _account_records(p, partition, data, step, now_ns)
    await _flush_windows(p, partition, step)
    writes: list[Write] = []  # one table write per volume changed
    for volume_id in step.changed:
        state = step.states[volume_id]
        assert state is not None
        writes.append((volume_id.encode(), state.snapshot()))
    p.partition_table(p.counters, partition).write_many(writes)
    await p.send_changelogs()
    p.stats.steps += 1


async def _account_records(p: Pipeline, partition: int, records: Records, step: _Step,
                           now_ns: int) -> None:
    """Raw records (no Ticks) of the step: judged at once when none of their volumes is
    rejected, else one by one (the same outcome, slower)."""
    if not records:
        return
    feed = p.registry_feed
    outcome = account_step(
        [(value, Placement(m.key, m.partition, p.settings.partitions)) for value, m in records],
        step.load(p), p.schemas, now_ns, p.limits,
        None if feed is None else feed.registry.tenant_of)
    if outcome is None:
        p.stats.steps_record_by_record += 1
        for value, message in records:
            await _account_one(p, partition, value, message, step, now_ns)
        return
    for volume_id, state in outcome.states.items():
        step.states[volume_id] = state
        step.changed.add(volume_id)
    lo = 0  # the first record whose parts the windows have not had
    for i, (record, (_, message)) in enumerate(zip(outcome.records, records, strict=True)):
        # The windows' wall clock is the records' Kafka timestamps (see _account_one).
        step.wall_ns = max(step.wall_ns, record_wall_ns(message, now_ns))
        step.offset = message.offset
        step.events += record.valid
        await publish_rejections(p, record, message, now_ns)
        _count(p.stats, record)
        if step.events >= p.settings.step_max_events:  # where record by record would
            step.bulk, lo = outcome.parts(lo, i + 1), i + 1
            await _flush_windows(p, partition, step)
    step.bulk = outcome.parts(lo, len(records))


async def _account_one(p: Pipeline, partition: int, value: bytes, message: Any,
                       step: _Step, now_ns: int) -> None:
    """One raw record, judged alone (account_record)."""
    # The windows' wall clock is the records' Kafka timestamps (the broker's append
    # time: topics.py), not this process's clock, so re-reading them after a crash
    # sees the same clock (where a step ends may differ: see _state_landed).
    wall_ns = record_wall_ns(message, now_ns)
    outcome = await _judge_record(p, value, message, now_ns, wall_ns, step.load(p))
    for volume in outcome.volumes:
        if volume.state is not None:
            step.states[volume.volume_id] = volume.state
            step.changed.add(volume.volume_id)
        # counted now or a replay: the windows judge by their own marks
        step.parts.append((volume.events, volume.producer))
        step.events += len(volume.events)
    step.wall_ns, step.offset = max(step.wall_ns, wall_ns), message.offset
    await publish_rejections(p, outcome, message, now_ns)
    _count(p.stats, outcome)
    if step.events >= p.settings.step_max_events:
        await _flush_windows(p, partition, step)


async def _flush_windows(p: Pipeline, partition: int, step: _Step) -> None:
    """The step's events so far into the windows, in one journaled unit; then publish."""
    windows = p.windows_for(partition)
    if step.bulk is not None:
        emissions = windows.on_parts(step.bulk, step.wall_ns, step.offset)
    elif step.parts:
        emissions = windows.on_records(step.parts, step.wall_ns, step.offset)
    else:
        return
    await p.send_changelogs()
    step.parts, step.bulk, step.events = [], None, 0
    await _state_landed(p, partition, emissions)
    await publish_windows(p, emissions, partition, step.offset)


async def _state_landed(p: Pipeline, partition: int, emissions: list[Emission]) -> None:
    """Wait until the table writes that made ``emissions`` (and the billing records taken
    with them) are acknowledged by Kafka, before publishing them. Where a step ends
    depends on what faust had ready, so a step re-made after a crash can close a window
    with other events in it: a window or billing record may only be out once the state
    that says it was made (its revision, its sequence) can no longer be lost."""
    if emissions or p.windows_for(partition).billing_out:
        await p.app.producer.flush()


async def _judge_record(p: Pipeline, value: bytes, message: Any, now_ns: int, wall_ns: int,
                        load_state: Callable[[str], VolumeState | None]) -> RecordOutcome:
    """account_record against the volume registry's view; a volume the view does not know
    waits for the view to read the registry past the record's Kafka timestamp
    (registry_feed.py), then the record is judged again (nothing was changed)."""
    placement = Placement(message.key, message.partition, p.settings.partitions)
    feed = p.registry_feed
    registered = None if feed is None else feed.lookup_for(wall_ns)
    try:
        return account_record(value, placement, load_state, p.schemas, now_ns, p.limits,
                              registered)
    except RegistryBehind:
        assert feed is not None
        await feed.catch_up(wall_ns)
        p.stats.registry_catch_ups = feed.catch_ups
        return account_record(value, placement, load_state, p.schemas, now_ns, p.limits,
                              feed.lookup_for(wall_ns))


async def _replay_raw_outputs(p: Pipeline, message: Any) -> None:
    """First record of a newly assigned raw partition: its window records made at or past
    the committed offset, sent again (they may not have landed before the last owner died)."""
    replay_from = p.input_guard(p.settings.raw_topic).replay_from
    if message.partition not in replay_from:
        return
    committed = replay_from.pop(message.partition)
    again = p.windows_for(message.partition).replay_outputs(committed)
    await p.send_changelogs()
    log.info("%s[%d]: sending again %d window record(s) made at or past the committed "
             "offset %d", message.topic, message.partition, len(again), committed)
    await publish_windows(p, again, message.partition, message.offset)


def _count(stats: WorkerStats, outcome: RecordOutcome | StepRecord) -> None:
    stats.records += 1
    stats.events_counted += outcome.counted
    stats.replays_skipped += outcome.replays
    if outcome.rejection is not None:
        stats.events_rejected += outcome.rejection.events
        stats.records_rejected += outcome.rejection.whole
