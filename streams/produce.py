"""`ioacct produce`: feed the pipeline from a JSONL file or the simulator, through the SDK."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import orjson

from .config import Settings
from .events import EventError, IoEvent, event_from_json
from .producer import IoProducer
from .simulator import FleetConfig, FleetSimulator

YIELD_EVERY = 512  # let the SDK's sender run between chunks of record() calls


@dataclass
class ProduceSummary:
    events: int = 0
    by_op: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)
    dead_lettered: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def add(self, event: IoEvent) -> None:
        self.events += 1
        self.by_op[event.op] += 1
        self.by_status[event.status] += 1

    def lines(self) -> list[str]:
        rate = self.events / self.seconds if self.seconds > 0 else 0.0
        out = [f"sent {self.events} events in {self.seconds:.1f} s ({rate:,.0f} events/s)",
               "  by op: " + ", ".join(f"{k}={v}" for k, v in sorted(self.by_op.items())),
               "  by status: " + ", ".join(f"{k}={v}" for k, v in sorted(self.by_status.items()))]
        if self.dead_lettered:
            out.append(f"  {self.dead_lettered} line(s) sent to the dead-letter topic:")
            out += [f"    {n} x {reason}" for reason, n in self.reasons.most_common(10)]
        return out


async def _send_events(
    producer: IoProducer, events: Iterable[IoEvent], summary: ProduceSummary,
    rate_per_s: float = 0.0,
) -> None:
    started = time.monotonic()
    for n, event in enumerate(events, 1):
        producer.record_event(event)
        summary.add(event)
        if n % YIELD_EVERY == 0:
            ahead_s = n / rate_per_s - (time.monotonic() - started) if rate_per_s > 0 else 0.0
            await asyncio.sleep(max(0.0, ahead_s))


def _parse_lines(stream: BinaryIO, bad: list[tuple[int, str, bytes]]) -> Iterator[IoEvent]:
    for line_no, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            yield event_from_json(orjson.loads(line))
        except (orjson.JSONDecodeError, EventError) as exc:
            bad.append((line_no, f"line {line_no}: {exc}", line.rstrip(b"\n")))


async def produce_jsonl(settings: Settings, path: str) -> ProduceSummary:
    """Send every event of a JSONL file ('-' for stdin); unparsable lines go to the DLQ."""
    summary = ProduceSummary()
    bad: list[tuple[int, str, bytes]] = []
    started = time.monotonic()
    stream = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    async with IoProducer(settings) as producer:
        try:
            await _send_events(producer, _parse_lines(stream, bad), summary)
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()
        for line_no, reason, line in bad:
            await producer.dead_letter(reason, f"jsonl:{path}", line_no, line)
            summary.dead_lettered += 1
            summary.reasons[reason.split(": ", 1)[1]] += 1
    summary.seconds = time.monotonic() - started
    return summary


async def produce_sim(
    settings: Settings, config: FleetConfig, count: int | None, rate_per_s: float,
    jsonl_out: BinaryIO | None = None,
) -> ProduceSummary:
    """Run the simulated fleet: ``count`` events (None: until interrupted) at ``rate_per_s``."""
    summary = ProduceSummary()
    started = time.monotonic()
    events = FleetSimulator(config).events(count if count is not None else 2**62)
    if jsonl_out is not None:
        events = _tee_jsonl(events, jsonl_out)
    async with IoProducer(settings) as producer:
        try:
            await _send_events(producer, events, summary, rate_per_s)
        except asyncio.CancelledError:
            pass  # Ctrl-C: the context manager still flushes what was recorded
    summary.seconds = time.monotonic() - started
    return summary


def _tee_jsonl(events: Iterable[IoEvent], out: BinaryIO) -> Iterator[IoEvent]:
    for event in events:
        out.write(orjson.dumps(event.to_json()) + b"\n")
        yield event
