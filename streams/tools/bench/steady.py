"""(j) steady state: a worker carrying a live fleet long enough to fill a scaled-down
revision horizon and 1 s retention; its RSS over time, and the bytes of a stored 1 s
window on disk (the RocksDB files of the windows table) and in the changelog.

Run alone: ``python -m streams.tools.bench.steady`` (a broker of its own, as the bench);
``--store memory`` for faust's in-memory store, to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import re
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cramjam
from aiokafka import AIOKafkaConsumer

from streams.config import Settings
from streams.core.counters import table_json
from streams.core.times import NS_PER_S
from streams.core.windows.acc import NO_BUSY, WindowAcc
from streams.core.windows.book import WindowEntry
from streams.core.windows.packed import pack_entry, unpack_entry
from streams.core.windows.stages import is_window_1s_key
from streams.core.windows.stores import EntryStore
from streams.kafka.security import client_kwargs
from streams.kafka.topics import TABLES
from streams.pipeline.app import tables_dir
from streams.tools.bench.alone import run_alone
from streams.tools.bench.latency import (
    _send_real_time,
    _wait_assigned,
    _wait_caught_up,
    register_fleet,
)
from streams.tools.bench.procs import (
    BenchError,
    all_ends,
    pipeline_topics,
    spawn_worker,
)

EVICT_EVERY_S = 60  # core/windows/stages.py EVICT_EVERY_NS: how often windows are dropped
SAMPLE_S = 2.0
TARGET_BYTES_PER_WINDOW = 256.0
VALUE_PARTS = ("busy", "exp_histogram", "histogram", "rest")  # a packed window's, in bytes
TAIL_S = 300.0  # the end of the run whose RSS slope says whether it stays flat


@dataclass
class SteadyPlan:
    volumes: int = 20
    rate: float = 2_000.0  # events/s: `make run`'s fleet; the worker is far from CPU bound
    horizon_s: int = 60  # the revision horizon and the 1 s retention, scaled down from 1 h
    # Long enough for RocksDB's cache and memtables to fill too (450-900 s in session
    # 13's runs), then TAIL_S of what stays: 240 s runs ended while they still grew.
    duration_s: float = 1200.0


@dataclass
class Steady:
    rss: list[tuple[float, int]] = field(default_factory=list)  # (s since start, bytes)
    figures: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def steady_settings(base: Settings, plan: SteadyPlan) -> Settings:
    return base.with_overrides(revision_horizon_s=plan.horizon_s, retention_1s_s=plan.horizon_s,
                               retention_1m_s=plan.horizon_s)


def full_after_s(s: Settings) -> float:
    """When the stored windows stop growing: the oldest is dropped from then on (windows
    live retention + grace + idle timeout, dropped at most EVICT_EVERY_S late)."""
    return s.retention_1s_s + s.grace_s + s.idle_timeout_s + EVICT_EVERY_S


async def steady_run(s: Settings, log_dir: Path, plan: SteadyPlan) -> Steady:
    """The worker over ``plan.duration_s`` of a live fleet; figures and RSS samples."""
    await pipeline_topics(s)
    await register_fleet(s, plan.volumes)  # untimed: before the worker
    proc = spawn_worker(s, log_dir, "steady")
    out = Steady()
    try:
        await _wait_assigned(proc)
        await asyncio.sleep(1.0)
        start = time.monotonic()
        start_ns = time.time_ns()
        sampler = asyncio.create_task(_sample_rss(proc, start, out.rss))
        sent = await _send_real_time(s, plan.rate, plan.volumes, start_ns,
                                     start_ns + int(plan.duration_s * NS_PER_S))
        out.info["events_sent"] = sent
        out.info["caught_up"] = True
        try:
            await _wait_caught_up(s, proc, 10.0)
        except BenchError:  # lagging: the figures still say something, and say it lagged
            out.info["caught_up"] = False
        sampler.cancel()
    finally:
        proc.stop(timeout_s=60)  # a clean stop: the tables are marked for the next worker
    worker = s.with_overrides(web_port=proc.web_port)
    await _changelog_figures(s, out)
    _disk_figures(worker, out)
    _rss_figures(out, full_after_s(s), plan.duration_s)
    out.info.update(volumes=plan.volumes, rate=plan.rate, horizon_s=plan.horizon_s,
                    duration_s=plan.duration_s, store=s.table_store)
    return out


async def _sample_rss(proc: Any, start: float, samples: list[tuple[float, int]]) -> None:
    while proc.alive():
        samples.append((time.monotonic() - start, proc.rss_bytes()))
        await asyncio.sleep(SAMPLE_S)


async def _changelog_figures(s: Settings, out: Steady) -> None:
    """The windows table's changelog as the broker holds it: its bytes on disk, every
    message (window writes of every length, their journals, deletes), and the stored 1 s
    windows it ends with (replayed into a dict, as a recovering worker does)."""
    topic = f"{s.app_id}-{TABLES[1]}-changelog"
    consumer = AIOKafkaConsumer(**client_kwargs(s), enable_auto_commit=False)
    await consumer.start()
    state: dict[bytes, bytes] = {}
    writes = messages = message_bytes = 0
    by_kind: dict[str, int] = {}  # key and value bytes by what the key holds
    try:
        ends = await all_ends(consumer, topic)
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        remaining = {tp for tp, end in ends.items() if end > 0}
        while remaining:
            for tp, batch in (await consumer.getmany(timeout_ms=2000)).items():
                for m in batch:
                    messages += 1
                    size = len(m.key or b"") + len(m.value or b"")
                    message_bytes += size
                    kind = _key_kind(m.key or b"")
                    by_kind[kind] = by_kind.get(kind, 0) + size
                    if m.value is None:
                        state.pop(m.key, None)
                        continue
                    state[m.key] = m.value
                    writes += is_window_1s_key(m.key)
                if batch and batch[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    stored = {k: v for k, v in state.items() if is_window_1s_key(k)}
    out.info["j_value_parts"] = value_parts(list(stored.values()))
    entries = EntryStore({}, b"")
    as_json = [len(_json_entry(entries.decode(v))) for v in stored.values()]
    log_bytes = sum(f.stat().st_size for f in (s.kafka_home() / "data").glob(f"{topic}-*/*.log"))
    out.figures.update(
        j_stored_windows=len(stored), j_window_writes=writes,
        j_value_bytes_per_window=sum(map(len, stored.values())) / max(1, len(stored)),
        j_key_bytes_per_window=sum(map(len, stored)) / max(1, len(stored)),
        j_json_bytes_per_window=sum(as_json) / max(1, len(as_json)),
        j_changelog_bytes=log_bytes, j_changelog_messages=messages,
        j_changelog_bytes_per_write=log_bytes / max(1, writes),
        j_changelog_payload_per_write=message_bytes / max(1, writes))
    out.info["j_changelog_payload_by_kind"] = {
        kind: round(size / max(1, writes)) for kind, size in sorted(by_kind.items())}


_KEY_KIND = re.compile(rb"\d+\|(r\d+\|)?([A-Za-z]+\d*)")


def _key_kind(key: bytes) -> str:
    """What a windows-table key holds, for the changelog's breakdown: "W1" (1 s windows),
    "r60|W" (1 m windows), "r3600|W" (1 h windows), "journal", "B" (billing hours), "q"
    (replay checks), ..."""
    found = _KEY_KIND.match(key)
    if found is None:
        return "other"
    return ((found.group(1) or b"") + found.group(2)).decode()


def _packed_size(tenant_id: str, acc: WindowAcc, revision: int, emitted: bool,
                 offset: int) -> int:
    return len(pack_entry(tenant_id, acc, revision, emitted, offset))


def value_parts(values: list[bytes]) -> dict[str, float]:
    """What a stored 1 s window's packed value is made of, per window: its busy intervals
    (kept while the window can be revised: an exact union needs them), its exponential
    histogram, its 20-bin histogram and the rest; the busy intervals per window; and all
    the values compressed together with zstd (level 3, as the changelog's batches are:
    the least a window could cost there without a journal copy)."""
    if not values:
        return {}
    sizes = dict.fromkeys((*VALUE_PARTS, "intervals"), 0)
    for data in values:
        tenant_id, acc, revision, emitted, offset = unpack_entry(data)
        packed = functools.partial(_packed_size, tenant_id, revision=revision,
                                   emitted=emitted, offset=offset)
        no_busy = replace(acc, busy=NO_BUSY)
        no_exp = replace(no_busy, ops=[replace(op, exp=None) for op in acc.ops])
        bare = replace(no_exp, ops=[replace(op, histogram=[0] * len(op.histogram))
                                    for op in no_exp.ops])
        without_busy, without_exp, bare_size = packed(no_busy), packed(no_exp), packed(bare)
        sizes["busy"] += len(data) - without_busy
        sizes["exp_histogram"] += without_busy - without_exp
        sizes["histogram"] += without_exp - bare_size
        sizes["rest"] += bare_size
        sizes["intervals"] += len(acc.busy)
    n = len(values)
    out = {part: size / n for part, size in sizes.items()}
    out["zstd"] = len(bytes(cramjam.zstd.compress(b"".join(values), level=3))) / n
    return out


def _json_entry(entry: WindowEntry) -> bytes:
    """The value the previous versions stored for a window: compact JSON."""
    return table_json([entry.tenant_id, entry.acc.to_list(), entry.revision, entry.emitted,
                       entry.emitted_offset])


def _disk_figures(worker: Settings, out: Steady) -> None:
    """The windows table's RocksDB files (tables, write-ahead logs) per stored 1 s window."""
    if worker.table_store != "rocksdb":
        return
    data = [f for db in tables_dir(worker).glob(f"{TABLES[1]}-*.db") for f in db.iterdir()
            if f.suffix in (".sst", ".log")]
    disk = sum(f.stat().st_size for f in data)
    out.figures["j_disk_bytes"] = disk
    out.figures["j_disk_bytes_per_window"] = disk / max(1, out.figures["j_stored_windows"])


def slope_kb_per_s(samples: list[tuple[float, int]], lo_s: float, hi_s: float) -> float:
    """The least-squares slope of RSS over [lo_s, hi_s], in KB/s (nan: too few samples)."""
    points = [(t, rss) for t, rss in samples if lo_s <= t <= hi_s]
    if len(points) < 3:
        return float("nan")
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_r = sum(r for _, r in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (r - mean_r) for t, r in points) / var / 1000


def _rss_figures(out: Steady, full_s: float, duration_s: float) -> None:
    warm_s = 15.0  # startup: faust, the first windows of every volume
    out.figures["j_rss_slope_filling_kb_s"] = slope_kb_per_s(out.rss, warm_s, full_s)
    out.figures["j_rss_slope_full_kb_s"] = slope_kb_per_s(out.rss, full_s, duration_s)
    out.figures["j_rss_slope_tail_kb_s"] = slope_kb_per_s(
        out.rss, max(full_s, duration_s - TAIL_S), duration_s)
    out.figures["j_rss_end_bytes"] = out.rss[-1][1] if out.rss else 0
    out.info["j_full_after_s"] = full_s
    out.info["j_rss_samples"] = out.rss


def steady_rows(fig: dict[str, float], info: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The (j) rows of the bench's table: (figure, value, note)."""
    def verdict(value: float) -> str:
        return f"target <= {TARGET_BYTES_PER_WINDOW:.0f}: " + (
            "met" if value <= TARGET_BYTES_PER_WINDOW else
            f"NOT met, {value / TARGET_BYTES_PER_WINDOW:.1f}x over")
    j = info["j"]
    tail = fig.get("j_rss_slope_tail_kb_s", float("nan"))
    rows = [("(j) steady state: RSS slope once full", f"{fig['j_rss_slope_full_kb_s']:.1f} KB/s",
             f"{fig['j_rss_slope_filling_kb_s']:.1f} KB/s while filling; {j['volumes']} volumes "
             f"at {j['rate']:,.0f} events/s, horizon and 1 s retention {j['horizon_s']} s, full "
             f"after {j['j_full_after_s']:.0f} of {j['duration_s']:.0f} s, {j['store']} store, "
             f"RSS at the end {fig['j_rss_end_bytes'] / 2**20:.0f} MiB"
             + ("" if j.get("caught_up", True) else "; THE WORKER LAGGED BEHIND")),
            # each volume closes a 1 s window a second: per window, what RSS still gains
            ("    RSS slope, the last 5 minutes", f"{tail:.1f} KB/s",
             f"{tail * 1000 / j['volumes']:,.0f} B per 1 s window stored (2,400 B at the "
             "issue's start: every window kept in memory)"),
            ("    stored 1 s window: value, packed", f"{fig['j_value_bytes_per_window']:.0f} B",
             f"the same windows as compact JSON (before): {fig['j_json_bytes_per_window']:.0f} B;"
             f" + {fig['j_key_bytes_per_window']:.0f} B of key; "
             f"{fig['j_stored_windows']:,.0f} windows stored at the end")]
    if "j_disk_bytes_per_window" in fig:
        rows.append(("    on disk (RocksDB) per stored window",
                     f"{fig['j_disk_bytes_per_window']:.0f} B",
                     verdict(fig["j_disk_bytes_per_window"]) + " (the windows table's .sst and"
                     " WAL files, 1 m and 1 h windows, journals included)"))
    per_write = fig["j_changelog_bytes_per_write"]
    rows.append(("    changelog per 1 s window write", f"{per_write:.0f} B",
                 verdict(per_write) + f" (the topic's log files / {fig['j_window_writes']:,.0f}"
                 f" writes; {fig['j_changelog_payload_per_write']:.0f} B of keys and values per"
                 " write, journals and parts included)"))
    parts = j.get("j_value_parts")
    if parts:
        rows.append(("    a stored window's value, by part",
                     f"{sum(parts[p] for p in VALUE_PARTS):,.0f} B",
                     f"busy intervals {parts['busy']:,.0f} B ({parts['intervals']:.0f} a window),"
                     f" exponential histogram {parts['exp_histogram']:,.0f} B, 20-bin histogram "
                     f"{parts['histogram']:,.0f} B, the rest {parts['rest']:,.0f} B; all the "
                     f"values zstd-compressed together: {parts['zstd']:,.0f} B a window"))
    by_kind = j.get("j_changelog_payload_by_kind")
    if by_kind:
        rows.append(("    of which, by key (B per 1 s window write)",
                     f"{sum(by_kind.values()):,} B",
                     ", ".join(f"{kind} {size:,}" for kind, size in
                               sorted(by_kind.items(), key=lambda item: -item[1]))))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default=None, help="rocksdb or memory (IOACCT_TABLE_STORE)")
    parser.add_argument("--duration", type=float, default=SteadyPlan.duration_s)
    parser.add_argument("--horizon", type=int, default=SteadyPlan.horizon_s)
    parser.add_argument("--volumes", type=int, default=SteadyPlan.volumes)
    parser.add_argument("--rate", type=float, default=SteadyPlan.rate, help="events/s")
    parser.add_argument("--json", metavar="FILE", help="write the figures and samples here")
    parser.add_argument("--logs", metavar="DIR", help="keep the worker's log here")
    args = parser.parse_args(argv)
    plan = SteadyPlan(args.volumes, args.rate, args.horizon, args.duration)
    return run_alone("j", lambda base, log_dir: steady_run(steady_settings(base, plan),
                                                           log_dir, plan),
                     steady_rows, args.json, args.logs,
                     **({"table_store": args.store} if args.store else {}))


if __name__ == "__main__":
    sys.exit(main())
