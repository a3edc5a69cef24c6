"""Kill-to-caught-up: how long a killed worker's partitions stay behind (issue 19 part 2).

The definition (docs/chaos.md, "Failover"), used by the chaos run and the bench's (k):

- the partitions are the raw topic's partitions the killed worker owned just before the
  kill (its /status), all of them if it could not say;
- from just before the kill on, a watcher samples every ``SAMPLE_S`` the raw topic's end
  offset E_p(t) and the group's committed offset C_p(t) of each of them (one consumer and
  one admin client for all samples: a new client per sample costs seconds under TLS);
- the partitions are caught up at the first sample t at which, for every one of them,
  C_p(t) >= E_p(max(kill, t - S)): every record there at the kill is committed, and so
  is every record that arrived since, but for the last S seconds, and not before they
  resumed. S is the larger of SLACK_S (a healthy group's committed offset is up to its
  commit interval and a step behind the head) and ``behind_before_s``, the most the
  group was behind in the samples before the kill: caught up means back where it was;
- ``resumed_s``: the first sample at which every one of them committed past its
  committed offset at the kill, as the first sample read after the kill saw it (the
  session timeout, the rebalance and the table recovery are before it; the backlog after).

Committed, not merely processed: a record counts once the group would not read it again.
"""

from __future__ import annotations

import asyncio
import bisect
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.config import Settings
from streams.kafka.security import client_kwargs

SAMPLE_S = 0.25
SLACK_S = 4.0  # a commit interval (faust's 2.8 s, before session 31) + a step and a sample
BEFORE_S = 6.0  # how long the watcher samples before the kill (behind_before_s)


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic() before its offsets were read
    ends: dict[int, int]  # partition -> end offset
    committed: dict[int, int]  # partition -> the group's committed offset (0: none)


@dataclass
class KillFigures:
    """One kill's figures, seconds from the kill (None: not reached while watched)."""

    partitions: list[int]
    caught_up_s: float | None = None
    resumed_s: float | None = None
    all_at_kill_s: float | None = None  # every record there at the kill committed
    behind_before_s: float | None = None  # the most the group was behind before the kill
    arrived: int = 0  # records written to the partitions from the kill to caught up (0: idle)

    def as_dict(self) -> dict[str, Any]:
        return {"partitions": self.partitions, "caught_up_s": self.caught_up_s,
                "resumed_s": self.resumed_s, "all_at_kill_s": self.all_at_kill_s,
                "behind_before_s": self.behind_before_s, "arrived": self.arrived}


def _end_at(samples: Sequence[Sample], times: Sequence[float], at: float) -> Sample:
    """The last sample taken at or before ``at`` (the first one if none was)."""
    return samples[max(0, bisect.bisect_right(times, at) - 1)]


def _behind_s(samples: Sequence[Sample], i: int, partitions: Sequence[int]) -> float:
    """How long ago the head was where sample i's commit is: the most over ``partitions``."""
    now = samples[i]
    worst = 0.0
    for p in partitions:
        if now.committed[p] >= now.ends[p]:
            continue
        older = [s.at for s in samples[:i] if s.ends[p] <= now.committed[p]]
        worst = max(worst, now.at - (older[-1] if older else samples[0].at))
    return worst


def figures(samples: Sequence[Sample], kill_at: float, partitions: Sequence[int],
            slack_s: float = SLACK_S) -> KillFigures:
    """The kill's figures from the watcher's samples (module doc)."""
    out = KillFigures(sorted(partitions))
    first = bisect.bisect_right([s.at for s in samples], kill_at)
    if first == 0 or first == len(samples):
        return out
    # The first sample read after the kill: nothing the dead worker commits is after it.
    at_kill = samples[first]
    out.behind_before_s = max(_behind_s(samples, i, partitions) for i in range(first))
    slack_s = max(slack_s, out.behind_before_s)  # back to where it was before the kill
    times = [s.at for s in samples]
    for sample in samples[first + 1:]:
        since = sample.at - kill_at
        if out.resumed_s is None and all(
                sample.committed[p] > at_kill.committed[p]
                or at_kill.committed[p] >= at_kill.ends[p] == sample.ends[p]
                for p in partitions):
            out.resumed_s = since
        if out.all_at_kill_s is None and all(sample.committed[p] >= at_kill.ends[p]
                                             for p in partitions):
            out.all_at_kill_s = since
        head = _end_at(samples, times, max(kill_at, sample.at - slack_s))
        if out.resumed_s is not None and all(sample.committed[p] >= head.ends[p]
                                             for p in partitions):
            out.caught_up_s = since
            out.arrived = sum(sample.ends[p] - at_kill.ends[p] for p in partitions)
            break
    return out


def distribution(values: Sequence[float]) -> dict[str, float]:
    """count, min, median, p90 (nearest rank) and max of ``values`` (empty: count 0)."""
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    n = len(ordered)
    median = (ordered[(n - 1) // 2] + ordered[n // 2]) / 2
    p90 = ordered[max(0, -(-9 * n // 10) - 1)]
    return {"count": n, "min": ordered[0], "median": median, "p90": p90, "max": ordered[-1]}


def describe(values: Sequence[float]) -> str:
    d = distribution(values)
    if not d["count"]:
        return "none"
    return (f"{d['count']:.0f} kills: min {d['min']:.1f} s, median {d['median']:.1f} s, "
            f"p90 {d['p90']:.1f} s, max {d['max']:.1f} s")


@dataclass
class CatchUpWatch:
    """Samples a group's committed and end offsets of the raw topic in a thread of its own,
    from ``start()`` until ``stop()`` or until the partitions are caught up after the kill
    (``killed()``); ``result()`` then gives the figures."""

    settings: Settings
    partitions: list[int]
    samples: list[Sample] = field(default_factory=list)
    kill_at: float | None = None
    error: str | None = None
    _done: threading.Event = field(default_factory=threading.Event)
    _started: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self, before_s: float = BEFORE_S) -> None:
        """Start sampling; returns after ``before_s`` of samples (the state before the kill)."""
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        self._started.wait(60)
        time.sleep(before_s)

    def killed(self) -> None:
        self.kill_at = time.monotonic()

    def done(self) -> bool:
        return self._done.is_set()

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(30)

    def result(self) -> KillFigures:
        if self.kill_at is None or not self.samples:
            return KillFigures(sorted(self.partitions))
        return figures(self.samples, self.kill_at, self.partitions)

    async def _run(self) -> None:
        s = self.settings
        consumer = AIOKafkaConsumer(**client_kwargs(s), enable_auto_commit=False)
        admin = AIOKafkaAdminClient(**client_kwargs(s))
        tps = [TopicPartition(s.raw_topic, p) for p in self.partitions]
        try:
            await consumer.start()
            await admin.start()
            while not self._done.is_set():
                await self._sample(consumer, admin, tps)
                self._started.set()
                if self.kill_at is not None and self.result().caught_up_s is not None:
                    self._done.set()
                await asyncio.sleep(SAMPLE_S)
        except Exception as exc:  # noqa: BLE001 (a broker away: the figures say None)
            self.error = repr(exc)
        finally:
            self._started.set()
            self._done.set()
            await consumer.stop()
            await admin.close()

    async def _sample(self, consumer: AIOKafkaConsumer, admin: AIOKafkaAdminClient,
                      tps: list[TopicPartition]) -> None:
        for _ in range(20):  # a transient error (a leader moving) is retried, not fatal
            started = time.monotonic()  # the offsets read are this old at least
            try:
                ends = await consumer.end_offsets(tps)
                committed = await admin.list_consumer_group_offsets(self.settings.app_id)
                break
            except Exception:  # noqa: BLE001
                await asyncio.sleep(0.5)
        else:
            raise RuntimeError("the offsets could not be read for 10 s")
        self.samples.append(Sample(
            started, {tp.partition: ends[tp] for tp in tps},
            {tp.partition: max(0, committed[tp].offset) if tp in committed else 0
             for tp in tps}))
