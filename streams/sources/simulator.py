"""A seeded, reproducible fleet of hypervisors emitting I/O completions (SEMANTICS.md section 1).

Pure Python (no faust, no aiokafka, no numpy) so that unit tests, benchmarks and the load
generator share one source of traffic. The same :class:`FleetConfig` always gives the same
stream, event for event.

The model, per volume:

* a Zipf weight (``rank ** -zipf_s`` over a seeded shuffle of ranks) sets its long-run rate,
  so a few volumes are hot and most are cold;
* an on/off process: bursts of exponential length, each starting with a request, separated
  by idle gaps sized so that the long-run rate matches the weight;
* the guest submits small batches of requests at once, so several are in flight together;
* latencies are lognormal with rare multiplicative outliers (ms .. seconds);
* the host reports a completion after a small random delay (``max_report_delay_ns``), and
  events come out in report order: ``complete_ns`` is therefore only nearly sorted, with a
  disorder bounded by that delay, as with a real host's batching.
"""

from __future__ import annotations

import heapq
import io
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import orjson

from streams.core.events import IoEvent
from streams.core.times import NS_PER_S

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
SECTOR = 512

# 60/30/5/5 read/write/flush/discard as a 20-slot table: one randrange picks an op.
_OP_TABLE = ("read",) * 12 + ("write",) * 6 + ("flush", "discard")
# Guest I/O is dominated by 4 KiB pages and 64..128 KiB readahead/writeback chunks.
_SIZE_WEIGHTS = (
    (4 * KIB, 40), (8 * KIB, 10), (16 * KIB, 10), (32 * KIB, 8), (64 * KIB, 12),
    (128 * KIB, 10), (256 * KIB, 3), (512 * KIB, 2), (MIB, 2),
)
_SIZE_TABLE = tuple(size for size, weight in _SIZE_WEIGHTS for _ in range(weight))
_ODD_SIZE_SLOTS = 3  # out of len(_SIZE_TABLE) + 3: any multiple of 512 up to 1 MiB
_DISCARD_SIZES = (64 * KIB, 128 * KIB, 256 * KIB, 512 * KIB, MIB)  # fstrim sends big ranges
_LOG_MEDIAN_NS = {
    "read": math.log(200_000), "write": math.log(300_000),
    "flush": math.log(1_000_000), "discard": math.log(500_000),
}
_NS_PER_BYTE = 0.5  # transfer time on top of the base latency: ~2 GB/s back end
_VOLUME_SIZES_GIB = (8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass
class FleetConfig:
    """Every knob of the fleet; two simulators with equal configs emit identical streams."""

    seed: int = 1
    volumes: int = 200
    tenants: int = 20
    hosts: int = 8
    start_ns: int = 0
    zipf_s: float = 1.1
    failed_rate: float = 0.002
    invalid_rate: float = 0.001
    events_per_s: float = 5000.0  # whole fleet, long-run mean, in virtual time
    burst_duty: float = 0.3  # share of a hot volume's time spent in bursts
    burst_mean_s: float = 0.5  # mean burst length; idle gaps follow from rate and duty
    batch_mean: float = 2.0  # mean number of requests a guest submits together
    sequential_rate: float = 0.5  # chance a request continues where the previous one ended
    latency_sigma: float = 0.5  # lognormal spread of ordinary latencies
    outlier_rate: float = 0.001  # share of requests hit by a stall (ms .. seconds)
    max_latency_ns: int = 5 * NS_PER_S
    max_report_delay_ns: int = 2_000_000  # bound on how far complete_ns can go backwards
    volume_prefix: str = "vol-"  # ids are <prefix><6 digits>: fleets of several hosts

    def __post_init__(self) -> None:
        if min(self.volumes, self.tenants, self.hosts) < 1:
            raise ValueError("volumes, tenants and hosts must be >= 1")
        if self.events_per_s <= 0 or self.burst_mean_s <= 0 or self.batch_mean < 1:
            raise ValueError("events_per_s, burst_mean_s must be > 0 and batch_mean >= 1")
        if not 0 < self.burst_duty <= 1:
            raise ValueError("burst_duty must be in (0, 1]")
        if self.failed_rate + self.invalid_rate > 1 or min(self.failed_rate,
                                                           self.invalid_rate) < 0:
            raise ValueError("failed_rate and invalid_rate must be >= 0 with a sum <= 1")


@dataclass(frozen=True, slots=True)
class Volume:
    """One simulated volume; owner and host never change."""

    volume_id: str
    tenant_id: str
    host_id: str
    size_bytes: int
    rate_per_s: float  # long-run mean events per virtual second


class FleetSimulator:
    """Stateful event source: successive calls continue one stream."""

    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self.volumes: tuple[Volume, ...] = self._make_volumes()
        n = len(self.volumes)
        self._cursor = [0] * n  # where a sequential request of each volume goes next
        self._burst_end = [0.0] * n
        self._burst_rate: list[float] = []  # batches per ns inside a burst
        self._idle_mean: list[float] = []  # ns
        self._arrivals: list[tuple[float, int]] = []  # heap of (next batch time, volume)
        self._inflight: list[tuple[int, int, IoEvent]] = []  # heap of (report ns, seq, event)
        self._seq = 0
        self._clock = config.start_ns
        self._peeked: tuple[int, IoEvent] | None = None
        self._init_volume_state()
        self._stream = self._generate()

    @property
    def now_ns(self) -> int:
        """Virtual clock: every event yielded so far was reported at or before it."""
        return self._clock

    def events(self, count: int) -> Iterator[IoEvent]:
        """The next ``count`` events, in report order (complete_ns nearly sorted)."""
        for _ in range(count):
            report_ns, event = self._take()
            self._clock = max(self._clock, report_ns)
            yield event

    def events_until(self, end_ns: int) -> Iterator[IoEvent]:
        """Every event reported up to ``end_ns``; afterwards ``now_ns == end_ns``."""
        while True:
            if self._peeked is None:
                self._peeked = next(self._stream)
            report_ns, event = self._peeked
            if report_ns > end_ns:
                break
            self._peeked = None
            self._clock = max(self._clock, report_ns)
            yield event
        self._clock = max(self._clock, end_ns)

    def _take(self) -> tuple[int, IoEvent]:
        if self._peeked is not None:
            item, self._peeked = self._peeked, None
            return item
        return next(self._stream)

    def _make_volumes(self) -> tuple[Volume, ...]:
        cfg, rng = self.config, self._rng
        ranks = list(range(1, cfg.volumes + 1))
        rng.shuffle(ranks)  # hot volumes are spread over ids, tenants and hosts
        weights = [rank ** -cfg.zipf_s for rank in ranks]
        total = sum(weights)
        owners = [k % cfg.tenants for k in range(cfg.volumes)]  # every tenant owns one if it can
        rng.shuffle(owners)
        return tuple(
            Volume(f"{cfg.volume_prefix}{i:06d}", f"tenant-{owners[i]:03d}",
                   f"host-{rng.randrange(cfg.hosts):02d}",
                   GIB * rng.choice(_VOLUME_SIZES_GIB), cfg.events_per_s * weight / total)
            for i, weight in enumerate(weights)
        )

    def _init_volume_state(self) -> None:
        cfg, rng = self.config, self._rng
        burst_ns = cfg.burst_mean_s * NS_PER_S
        for i, vol in enumerate(self.volumes):
            batch_rate = vol.rate_per_s / cfg.batch_mean / NS_PER_S
            self._burst_rate.append(batch_rate / cfg.burst_duty)
            # A cycle holds 1 + rate*B batches on average, so it must last that / batch_rate.
            cycle_ns = (1 + self._burst_rate[i] * burst_ns) / batch_rate
            self._idle_mean.append(max(cycle_ns - burst_ns, 1.0))
            # Start in a random phase, so the fleet is not quiet for the first seconds.
            in_burst = rng.random() < cfg.burst_duty
            self._burst_end[i] = cfg.start_ns + (rng.expovariate(1 / burst_ns) if in_burst else 0)
            self._arrivals.append((self._next_arrival(i, cfg.start_ns), i))
        heapq.heapify(self._arrivals)

    def _next_arrival(self, i: int, t: float) -> float:
        """When volume ``i`` submits its next batch after time ``t``."""
        rng = self._rng
        t_next = t + rng.expovariate(self._burst_rate[i])
        if t_next < self._burst_end[i]:
            return t_next
        # Burst over: an idle gap, then a new burst that opens with a batch.
        start = self._burst_end[i] + rng.expovariate(1 / self._idle_mean[i])
        self._burst_end[i] = start + rng.expovariate(1 / (self.config.burst_mean_s * NS_PER_S))
        return start

    def _generate(self) -> Iterator[tuple[int, IoEvent]]:
        # Every future request is submitted at or after the earliest pending arrival, and
        # is reported no earlier; so anything reported before it is final and can go out.
        arrivals, inflight = self._arrivals, self._inflight
        while True:
            t, i = arrivals[0]
            while inflight and inflight[0][0] <= t:
                report_ns, _, event = heapq.heappop(inflight)
                yield report_ns, event
            self._submit_batch(i, int(t))
            heapq.heapreplace(arrivals, (self._next_arrival(i, t), i))

    def _submit_batch(self, i: int, t: int) -> None:
        rng, cfg = self._rng, self.config
        submit_ns = t
        while True:
            event = self._request(i, submit_ns)
            report_ns = event.complete_ns + rng.randrange(cfg.max_report_delay_ns + 1)
            heapq.heappush(self._inflight, (report_ns, self._seq, event))
            self._seq += 1
            if rng.random() * cfg.batch_mean < 1:  # geometric batch size, mean batch_mean
                return
            submit_ns += rng.randrange(1_000, 20_000)  # guest queues them microseconds apart

    def _request(self, i: int, submit_ns: int) -> IoEvent:
        rng, cfg, vol = self._rng, self.config, self.volumes[i]
        op = _OP_TABLE[rng.randrange(len(_OP_TABLE))]
        draw = rng.random()
        status = ("invalid" if draw < cfg.invalid_rate
                  else "failed" if draw < cfg.invalid_rate + cfg.failed_rate else "ok")
        offset = nbytes = 0  # flush carries neither
        if op != "flush":
            nbytes = self._size(op)
            offset = self._offset(i, nbytes)
        if status == "invalid":
            # Rejected before any I/O: a quick answer, and usually a bad offset.
            latency = rng.randint(1_000, 10_000)
            if op != "flush":
                offset = self._invalid_offset(vol, offset, nbytes)
        else:
            latency = self._latency(op, nbytes, status == "failed")
        return IoEvent(vol.volume_id, vol.tenant_id, op, status, offset, nbytes,
                       submit_ns, submit_ns + latency, vol.host_id)

    def _size(self, op: str) -> int:
        rng = self._rng
        if op == "discard":
            return rng.choice(_DISCARD_SIZES)
        slot = rng.randrange(len(_SIZE_TABLE) + _ODD_SIZE_SLOTS)
        if slot < len(_SIZE_TABLE):
            return _SIZE_TABLE[slot]
        return SECTOR * rng.randint(1, MIB // SECTOR)

    def _offset(self, i: int, nbytes: int) -> int:
        rng, size = self._rng, self.volumes[i].size_bytes
        offset = self._cursor[i]
        if rng.random() >= self.config.sequential_rate or offset + nbytes > size:
            offset = SECTOR * rng.randrange((size - nbytes) // SECTOR + 1)
        self._cursor[i] = offset + nbytes
        return offset

    def _invalid_offset(self, vol: Volume, offset: int, nbytes: int) -> int:
        rng = self._rng
        if rng.random() < 0.5:  # out of range: runs past the end of the volume
            return vol.size_bytes - nbytes + SECTOR * rng.randint(1, 2048)
        return offset + rng.randint(1, SECTOR - 1)  # misaligned

    def _latency(self, op: str, nbytes: int, failed: bool) -> int:
        rng, cfg = self._rng, self.config
        latency = rng.lognormvariate(_LOG_MEDIAN_NS[op], cfg.latency_sigma) + nbytes * _NS_PER_BYTE
        if failed:  # errors tend to come after back-end retries and timeouts
            latency *= rng.lognormvariate(math.log(20), 1.0)
        if rng.random() < cfg.outlier_rate:  # stalls: GC, path failover, noisy neighbour
            latency *= rng.lognormvariate(math.log(50), 1.5)
        return max(1_000, min(int(latency), cfg.max_latency_ns))


def write_jsonl(events: Iterable[IoEvent], fp: IO[Any]) -> int:
    """Write events as canonical JSON lines to a binary or text file; return the count."""
    text = isinstance(fp, io.TextIOBase)
    count = 0
    for event in events:
        line = orjson.dumps(event.to_json(), option=orjson.OPT_APPEND_NEWLINE)
        fp.write(line.decode() if text else line)
        count += 1
    return count
