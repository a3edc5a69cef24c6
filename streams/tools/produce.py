"""`ioacct produce`: feed the pipeline through the SDK from a JSONL file, the simulator,
or a real source (fio's per-I/O latency log, blkparse's text)."""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import orjson
from aiokafka.errors import KafkaError

from streams.config import Settings
from streams.core.events import EventError, IoEvent, event_from_json
from streams.core.times import NS_PER_S
from streams.kafka.registry import RegisterReport, RegistryError
from streams.kafka.topics import TopicsError
from streams.sdk.drain_log import SpoolStats
from streams.sdk.producer import IoProducer
from streams.sources.blkparse import VolumeTarget
from streams.sources.report import SourceReport
from streams.sources.simulator import FleetConfig, FleetSimulator
from streams.tools.register_fleet import Registrar, registrar_for

YIELD_EVERY = 512  # let the SDK's sender run between chunks of record() calls
EXIT_SPOOL_LEFT = 3  # `ioacct produce`: records Kafka did not acknowledge wait in the spool


@dataclass
class ProduceSummary:
    events: int = 0
    by_op: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)
    dead_lettered: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    spool: SpoolStats | None = None  # the SDK's disk spool, when it had one
    producer_id: str = ""  # the SDK's: every record sent carries it, with its seq
    registered: RegisterReport | None = None  # the volumes registered on the way (admin)

    def ended(self, producer: IoProducer, started: float) -> None:
        """The SDK's figures once it is closed, and the time since ``started`` (monotonic)."""
        self.spool = producer.spool_stats
        self.producer_id = producer.producer_id
        self.seconds = time.monotonic() - started

    @property
    def exit_status(self) -> int:
        """`ioacct produce`'s: EXIT_SPOOL_LEFT when records wait in the spool, else 0."""
        return EXIT_SPOOL_LEFT if self.spool is not None and self.spool.spool_records else 0

    def add(self, event: IoEvent) -> None:
        self.events += 1
        self.by_op[event.op] += 1
        self.by_status[event.status] += 1

    def lines(self) -> list[str]:
        rate = self.events / self.seconds if self.seconds > 0 else 0.0
        out = [f"sent {self.events} events in {self.seconds:.1f} s ({rate:,.0f} events/s)",
               "  by op: " + ", ".join(f"{k}={v}" for k, v in sorted(self.by_op.items())),
               "  by status: " + ", ".join(f"{k}={v}" for k, v in sorted(self.by_status.items()))]
        if self.producer_id:
            out.append(f"  producer id: {self.producer_id}")
        if self.registered is not None:
            out += ["  " + line for line in self.registered.lines()]
        if self.dead_lettered:
            out.append(f"  {self.dead_lettered} line(s) sent to the dead-letter topic:")
            out += [f"    {n} x {reason}" for reason, n in self.reasons.most_common(10)]
        if self.spool is not None:
            out += self.spool.lines()
        return out


async def _send_events(
    producer: IoProducer, events: Iterable[IoEvent], summary: ProduceSummary,
    rate_per_s: float = 0.0, registrar: Registrar | None = None,
) -> None:
    """Hand ``events`` to the SDK in chunks, each chunk's new volumes registered first
    (``registrar``), pacing at ``rate_per_s`` (0: as fast as possible)."""
    started = time.monotonic()
    n = 0
    it = iter(events)
    while chunk := list(itertools.islice(it, YIELD_EVERY)):
        if registrar is not None:
            await registrar.ensure_events(chunk)
            summary.registered = registrar.report
        for event in chunk:
            producer.record_event(event)
            summary.add(event)
        n += len(chunk)
        ahead_s = n / rate_per_s - (time.monotonic() - started) if rate_per_s > 0 else 0.0
        await asyncio.sleep(max(0.0, ahead_s))


def _parse_lines(lines: Iterable[bytes], first_line_no: int,
                 bad: list[tuple[int, str, bytes]]) -> Iterator[IoEvent]:
    for line_no, line in enumerate(lines, first_line_no):
        if not line.strip():
            continue
        try:
            yield event_from_json(orjson.loads(line))
        except (orjson.JSONDecodeError, EventError) as exc:
            bad.append((line_no, f"line {line_no}: {exc}", line.rstrip(b"\n")))


READ_CHUNK = 1 << 16


async def _line_chunks(fd: int) -> AsyncIterator[list[bytes]]:
    """Whole lines as they arrive. os.read in a thread returns what a pipe holds without
    waiting for more, so events written to a live pipe are sent while it stays open, and
    the event loop (the SDK's sender) never blocks on the read."""
    rest = b""
    while True:
        data = await asyncio.to_thread(os.read, fd, READ_CHUNK)
        if not data:
            break
        *lines, rest = (rest + data).split(b"\n")
        if lines:
            yield [line + b"\n" for line in lines]
    if rest:
        yield [rest]


async def produce_jsonl(settings: Settings, path: str, registrar: Registrar | None = None
                        ) -> ProduceSummary:
    """Send every event of a JSONL file ('-': stdin, also a live pipe); lines that are not
    events go to the dead-letter topic with their line number, as they are read."""
    summary = ProduceSummary()
    started = time.monotonic()
    stream = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    line_no = 1
    async with IoProducer(settings) as producer:
        try:
            async for lines in _line_chunks(stream.fileno()):
                bad: list[tuple[int, str, bytes]] = []
                await _send_events(producer, _parse_lines(lines, line_no, bad), summary,
                                   registrar=registrar)
                line_no += len(lines)
                for bad_line_no, reason, line in bad:
                    await producer.dead_letter(reason, f"jsonl:{path}", bad_line_no, line)
                    summary.dead_lettered += 1
                    summary.reasons[reason.split(": ", 1)[1]] += 1
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()
    summary.ended(producer, started)
    return summary


async def produce_sim(
    settings: Settings, config: FleetConfig, count: int | None, rate_per_s: float,
    jsonl_out: BinaryIO | None = None, registrar: Registrar | None = None,
) -> ProduceSummary:
    """Run the simulated fleet: ``count`` events (None: until interrupted) at ``rate_per_s``;
    the whole fleet registered first (``registrar``)."""
    summary = ProduceSummary()
    started = time.monotonic()
    fleet = FleetSimulator(config)
    if registrar is not None:
        await registrar.ensure((v.volume_id, v.tenant_id) for v in fleet.volumes)
        summary.registered = registrar.report
    events = fleet.events(count if count is not None else 2**62)
    if jsonl_out is not None:
        events = _tee_jsonl(events, jsonl_out)
    async with IoProducer(settings) as producer:
        try:
            await _send_events(producer, events, summary, rate_per_s, registrar)
        except asyncio.CancelledError:
            pass  # Ctrl-C: the context manager still flushes what was recorded
    summary.ended(producer, started)
    return summary


def _tee_jsonl(events: Iterable[IoEvent], out: BinaryIO) -> Iterator[IoEvent]:
    for event in events:
        out.write(orjson.dumps(event.to_json()) + b"\n")
        yield event


# --- real sources: fio's per-I/O latency log, blkparse's text (docs/sources.md) -------------

PROGRESS_MIN_BYTES = 64 << 20  # a progress bar for inputs this large even without a TTY


@contextmanager
def _source_lines(path: str, desc: str) -> Iterator[Iterator[str]]:
    """The lines of ``path`` ('-': stdin), with a tqdm bar on a TTY or for a large file."""
    from tqdm import tqdm

    stream = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    total = None if path == "-" else os.fstat(stream.fileno()).st_size
    show = sys.stderr.isatty() or (total or 0) >= PROGRESS_MIN_BYTES
    bar = tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=not show,
               file=sys.stderr)

    def lines() -> Iterator[str]:
        for raw in stream:
            bar.update(len(raw))
            yield raw.decode("utf-8", "replace")

    try:
        yield lines()
    finally:
        bar.close()
        if stream is not sys.stdin.buffer:
            stream.close()


def _in_accepted_range(events: Iterable[IoEvent], settings: Settings,
                       report: SourceReport) -> Iterator[IoEvent]:
    """Pass events on; note those the worker will dead-letter for their time (section 4)."""
    outside = 0
    for event in events:
        now_ns = time.time_ns()
        outside += not (now_ns - settings.retention_s * NS_PER_S <= event.complete_ns
                        <= now_ns + settings.future_tolerance_s * NS_PER_S)
        yield event
    if outside:
        report.notes.append(
            f"WARNING: {outside} event(s) are older than {settings.retention_s} s or more than "
            f"{settings.future_tolerance_s} s ahead: the worker dead-letters them (check the "
            "start time: --start-ns, --fio-json)")


async def _send_source(settings: Settings, events: Iterable[IoEvent], report: SourceReport,
                       registrar: Registrar | None = None) -> ProduceSummary:
    summary = ProduceSummary()
    started = time.monotonic()
    async with IoProducer(settings) as producer:
        await _send_events(producer, _in_accepted_range(events, settings, report), summary,
                           registrar=registrar)
    summary.ended(producer, started)
    return summary


async def produce_fio(
    settings: Settings, log_path: str, volume_id: str, tenant_id: str,
    start_ns: int | None = None, fio_json: str | None = None, host_id: str | None = None,
    registrar: Registrar | None = None,
) -> tuple[ProduceSummary, SourceReport]:
    """One event per line of fio's per-I/O latency log (fio_source.py says which log and why).

    The job's start is ``start_ns``, or read from fio's JSON report, or not needed
    when the log has Unix times (``log_unix_epoch=1``)."""
    from streams.sources import fio as fio_source

    kind = fio_source.log_kind(log_path)
    if kind == "slat":
        raise fio_source.FioLogError(f"{log_path} is a submission-latency log: give the _lat "
                                     "log (total latency)")
    if fio_json is not None:
        with open(fio_json, "rb") as f:
            start_ns = fio_source.job_start_ns(orjson.loads(f.read()),
                                               fio_source.log_job_number(log_path))
    if start_ns is not None:
        fio_source.check_start_ns(start_ns)
    report = SourceReport(f"fio log {log_path}")
    report.notes.append("latency = fio's " + (
        "completion latency (clat: without submission); compare with clat_ns"
        if kind == "clat" else "total latency (lat: submission to completion); compare "
        "with lat_ns"))
    with _source_lines(log_path, "fio log") as lines:
        events = fio_source.fio_events(lines, volume_id, tenant_id, start_ns, report, host_id)
        summary = await _send_source(settings, events, report, registrar)
    return summary, report


async def produce_blkparse(
    settings: Settings, path: str, volume_map: dict[str, VolumeTarget],
    start_ns: int | None = None, host_id: str | None = None,
    registrar: Registrar | None = None,
) -> tuple[ProduceSummary, SourceReport]:
    """One event per D -> C pair of blkparse's text (blkparse_source.py), '-' for stdin.

    Time 0 of the trace is ``start_ns``; else, on stdin (live), the wall clock when the
    first action arrives; for a finished file, its mtime minus its last action's time."""
    from streams.sources.blkparse import BlkparseSource, compare_with_summary, last_time_ns

    report = SourceReport(f"blkparse {'stdin' if path == '-' else path}")
    if start_ns is None and path != "-":
        with open(path, encoding="utf-8", errors="replace") as f:
            start_ns = os.stat(path).st_mtime_ns - (last_time_ns(f) or 0)
        report.notes.append("trace time 0 = the file's mtime minus its last action's time "
                            "(--start-ns sets it)")
    source = BlkparseSource(volume_map, report, start_ns, clock_ns=time.time_ns,
                            host_id=host_id)
    with _source_lines(path, "blkparse") as lines:
        summary = await _send_source(settings, source.events(lines), report, registrar)
    report.notes += compare_with_summary(source)
    return summary, report


def cli_real_source(args: Any, settings: Settings, registrar: Registrar | None = None) -> int:
    """`ioacct produce --fio-lat-log ...` / `--blkparse ...`: send, then print the report."""
    from streams.sources.blkparse import BlkparseError, parse_volume_map
    from streams.sources.fio import FioLogError

    try:
        if args.fio_lat_log:
            if not (args.volume_id and args.tenant_id):
                raise FioLogError("--fio-lat-log needs --volume-id and --tenant-id")
            if args.start_ns is not None and args.fio_json:
                raise FioLogError("give --start-ns or --fio-json, not both")
            run = produce_fio(settings, args.fio_lat_log, args.volume_id, args.tenant_id,
                              args.start_ns, args.fio_json, args.host_id, registrar)
        else:
            volume_map = parse_volume_map(args.volume_map, args.tenant_id)
            if not volume_map:
                raise BlkparseError("--blkparse needs --volume-map MAJ,MIN=VOLUME[:TENANT]")
            run = produce_blkparse(settings, args.blkparse, volume_map, args.start_ns,
                                   args.host_id, registrar)
        summary, report = asyncio.run(run)
    except (ValueError, OSError) as exc:  # FioLogError, BlkparseError, bad JSON, no file
        print(f"ioacct produce: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print("\n".join(summary.lines() + report.lines_out()))
    return summary.exit_status


async def produce_qemu_trace(settings: Settings, options: Any) -> Any:
    """QEMU's virtio-blk trace -> events (streams/qemu_source.py; docs/qemu.md)."""
    from streams.sources.qemu.source import run_qemu_trace

    return await run_qemu_trace(settings, options)


def cli_qemu_trace(args: Any, settings: Settings, registrar: Registrar | None = None) -> int:
    """`ioacct produce --qemu-trace FILE [--follow] [--qmp SOCKET]`: send, print the summary."""
    import socket

    from streams.sources.qemu.source import QemuTraceOptions
    from streams.sources.qemu.trace import VolumeMap, parse_volume_map

    try:
        by_vdev = parse_volume_map(",".join(args.volume_map), args.tenant_id)
        default = None
        if args.volume_id:
            if not args.tenant_id:
                raise ValueError("--volume-id needs --tenant-id")
            default = parse_volume_map(f"*={args.volume_id}:{args.tenant_id}", None)["*"]
        if not by_vdev and default is None:
            raise ValueError("--qemu-trace needs --volume-id and --tenant-id (one disk) or "
                             "--volume-map VDEV=VOLUME[:TENANT],...")
        options = QemuTraceOptions(
            args.qemu_trace, VolumeMap(by_vdev, default), follow=args.follow,
            host_id=args.host_id or socket.gethostname(), qmp_socket=args.qmp,
            qmp_device=args.qmp_device, max_in_flight=args.max_in_flight,
            report_json=args.report_json)
        targets = list(by_vdev.values()) + ([default] if default is not None else [])
        if registrar is not None:  # every volume of the map, before the trace is read
            asyncio.run(registrar.ensure((t.volume_id, t.tenant_id) for t in targets))
            print("\n".join(registrar.report.lines()))
        run = asyncio.run(produce_qemu_trace(settings, options))
    except (ValueError, OSError) as exc:
        print(f"ioacct produce: {exc}", file=sys.stderr)
        return 2
    print("\n".join(run.lines()))
    return 0


def cli_produce(args: Any, settings: Settings) -> int:
    """`ioacct produce`: one of the sources, its volumes registered first when asked
    (register_fleet.py); a registration refused by Kafka is a clear error."""
    if args.spool_dir:
        settings = settings.with_overrides(spool_dir=args.spool_dir)
    registrar, hint = registrar_for(args, settings)
    if hint:
        print(hint, file=sys.stderr)
    try:
        return _produce(args, settings, registrar)
    except (RegistryError, KafkaError, TopicsError) as exc:
        print(f"ioacct produce: registering the volumes failed (as {settings.kafka_user}): "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _produce(args: Any, settings: Settings, registrar: Registrar | None) -> int:
    if args.fio_lat_log or args.blkparse:
        return cli_real_source(args, settings, registrar)
    if args.qemu_trace:
        return cli_qemu_trace(args, settings, registrar)
    if args.jsonl:
        summary = asyncio.run(produce_jsonl(settings, args.jsonl, registrar))
    else:
        rate = args.rate
        start_ns = time.time_ns() if args.start_ns is None else args.start_ns
        if args.events is not None and rate <= 0 and args.start_ns is None:
            # Unpaced: lay the events out in the recent past so none is in the future.
            start_ns -= int(args.events / args.sim_rate * 1e9)
        config = FleetConfig(seed=args.seed, volumes=args.volumes, tenants=args.tenants,
                             start_ns=start_ns, events_per_s=rate if rate > 0 else args.sim_rate,
                             volume_prefix=args.volume_prefix)
        out = open(args.write_jsonl, "wb") if args.write_jsonl else None  # noqa: SIM115
        try:
            summary = asyncio.run(produce_sim(settings, config, args.events, rate, out,
                                              registrar))
        except KeyboardInterrupt:
            return 130
        finally:
            if out is not None:
                out.close()
    print("\n".join(summary.lines()))
    return summary.exit_status
