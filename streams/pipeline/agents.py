"""The agents: accounting (raw records -> counters, 1 s windows, billing, dead letters)
and one rollup per longer window (the stats topic below -> 1 m, 1 h windows).

Thin: each reads a record through the guard (once, in offset order), hands it to
``core``'s logic or a stage, writes the table and publishes what came back.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streams.core.codec import HEADER_LEN, CodecError
from streams.core.counters import VolumeState
from streams.core.ingest import Placement, RecordOutcome, account_record
from streams.core.registry import RegistryBehind
from streams.core.step import StepRecord, account_step
from streams.core.windows.acc import WINDOW_LENGTHS_NS, WINDOW_NAMES, acc_from_stats
from streams.core.windows.book import Emission, Parts, ProducedColumns
from streams.core.windows.stages import RollupWindows
from streams.pipeline.batches import Records, batch_agent_over
from streams.pipeline.guard.order import Handler, committed_offset, in_order, record_wall_ns
from streams.pipeline.publish import (
    dead_letter_control,
    publish_rejections,
    publish_stage,
    publish_windows,
)

if TYPE_CHECKING:
    from streams.pipeline.app import Pipeline, WorkerStats

log = logging.getLogger(__name__)
EXIT_AGENT_FAILED = 70  # EX_SOFTWARE


def agent_over(p: Pipeline, topic: Any, name: str, handle: Handler) -> None:
    """An agent that hands ``handle`` every record of ``topic``, each once and in offset
    order (:func:`in_order`), and exits the worker if it fails."""
    guard = p.input_guard(topic.get_topic_name())

    @p.app.agent(topic, name=name)
    async def agent(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            try:
                if await in_order(p, guard, message, handle):
                    await handle(event.value, message)
                    guard.offsets.done(message.partition, message.offset)
            except Exception:
                # Faust would restart the agent and ack the record it failed on: a lost
                # record. Exit instead, without committing; the restarted worker reprocesses
                # from the last commit and the replay checks absorb the repeats.
                log.exception("%s failed at %s[%d]@%d; exiting without commit", name,
                              message.topic, message.partition, message.offset)
                os._exit(EXIT_AGENT_FAILED)


def register_accounting(p: Pipeline) -> None:
    """The accounting agent: raw records many at a time (batches.py), partition by
    partition; one state write per volume per step, one windows unit per step."""
    tick_header = p.schemas.headers["Tick"]

    async def handle(partition: int, records: Records) -> None:
        await _account_step(p, partition, records, tick_header)

    batch_agent_over(p, p.raw_topic, "accounting", handle, p.settings.step_max_records,
                     p.settings.step_wait_ms / 1000)


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
        await _state_landed(p, partition, emissions)
        await publish_windows(p, emissions, partition, message.offset)
    await _account_records(p, partition, data, step, now_ns)
    await _flush_windows(p, partition, step)
    for volume_id in step.changed:  # one table write per volume changed
        state = step.states[volume_id]
        assert state is not None
        p.counters[volume_id.encode()] = state.snapshot()
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


def register_rollup(p: Pipeline, inner_ns: int, length_ns: int) -> None:
    """The agent that builds the windows of ``length_ns`` from the records of the stats
    topic of ``inner_ns`` (windows and watermark markers), partition by partition."""
    guard = p.input_guard(p.settings.stats_topic(inner_ns))

    async def handle(value: Any, message: Any) -> None:
        partition = message.partition
        stage = p.rollups_for(length_ns, partition)
        if partition in guard.replay_from:
            again = stage.replay_outputs(guard.replay_from.pop(partition))
            await publish_stage(p, length_ns, again, partition, stage.take_marker(),
                                message.offset)
        made = await _roll_up(p, stage, inner_ns, value, message)
        if made is not None:
            await publish_stage(p, length_ns, made, partition, stage.take_marker(),
                                message.offset)

    agent_over(p, p.stats_topics[inner_ns], f"rollup-{WINDOW_NAMES[length_ns]}", handle)


async def _roll_up(p: Pipeline, stage: RollupWindows, inner_ns: int, value: bytes | None,
                   message: Any) -> list[Emission] | None:
    """One record of the stats topic of ``inner_ns`` into ``stage``: what it made, or None
    when the record was dead-lettered (undecodable, or not a window or marker of here)."""
    partition = message.partition
    try:
        name, record = p.schemas.decode(value or b"")
    except CodecError as exc:
        await dead_letter_control(p, message, value, f"undecodable stats record: {exc}")
        return None
    if name == "WindowStats" and record["window_length_ns"] == inner_ns:
        part = Emission(record["volume_id"], record["tenant_id"], acc_from_stats(record),
                        record["revision"])
        made = stage.on_window(part, message.offset)
        p.stats.windows_rolled_up += 1
        return made
    if name == "Watermark" and record["partition"] == partition:
        return stage.on_watermark(record["watermark_ns"], message.offset,
                                  committed_offset(p.app.consumer, message))
    await dead_letter_control(
        p, message, value, f"a {name} record ({record.get('window_length_ns')} ns, "
        f"partition {record.get('partition')}) does not belong in {message.topic}"
        f"[{partition}]")
    return None


def register_rollups(p: Pipeline) -> None:
    """One rollup agent per window length past the first, each reading the one below."""
    for inner_ns, length_ns in zip(WINDOW_LENGTHS_NS, WINDOW_LENGTHS_NS[1:], strict=False):
        register_rollup(p, inner_ns, length_ns)
