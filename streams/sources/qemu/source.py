"""`ioacct produce --qemu-trace`: QEMU's virtio-blk trace -> the producer SDK.

Reads the trace from a file (``--follow``: like ``tail -F``, across QEMU restarts,
which truncate the ``-D`` file), a FIFO or stdin, sends one event per completed
request, and with ``--qmp`` compares what it saw with QEMU's query-blockstats at the
start, at the end and on SIGUSR1. SIGINT/SIGTERM stop following: what is in the file
by then is still read and sent. The logic is in qemu_trace.py and qemu_summary.py.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import stat
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.config import Settings
from streams.sdk.producer import IoProducer
from streams.sources.qemu.qmp import QmpError, query_blockstats
from streams.sources.qemu.summary import (
    QemuTraceConverter,
    reconcile,
    reconciliation_lines,
    select_blockstats,
)
from streams.sources.qemu.trace import DEFAULT_MAX_IN_FLIGHT, VolumeMap

CHUNK_BYTES = 1 << 16


@dataclass
class QemuTraceOptions:
    path: str  # '-': stdin
    volumes: VolumeMap
    follow: bool = False
    host_id: str | None = None
    qmp_socket: str | None = None
    qmp_device: str | None = None
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    report_json: str | None = None
    poll_s: float = 0.1


@dataclass
class QemuTraceRun:
    converter: QemuTraceConverter
    seconds: float = 0.0
    reopened: int = 0  # the followed file was truncated or replaced (a QEMU restart)
    qmp_start: dict[str, Any] | None = None
    qmp_end: dict[str, Any] | None = None
    qmp_errors: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = self.converter.summary_lines()
        out.insert(1, f"  read in {self.seconds:.1f} s"
                      + (f"; the file was truncated or replaced {self.reopened} time(s)"
                         if self.reopened else ""))
        out += [f"  QMP: {error}" for error in self.qmp_errors]
        if self.qmp_end is not None:
            pid = self.converter.pairing.process_id
            out.append(f"query-blockstats vs the trace of QEMU thread {pid} "
                       "(drift = trace - QMP at the end):")
            out += reconciliation_lines(self.rows())
        return out

    def rows(self) -> list[Any]:
        assert self.qmp_end is not None
        return reconcile(self.converter.current_process(), self.qmp_end, self.qmp_start)

    def to_json(self) -> dict[str, Any]:
        counts = self.converter.pairing.counts
        return {
            "events": self.converter.report.events,
            "requests": dict(self.converter.report.requests),
            "trace": dict(self.converter.current_process()),
            "qmp_start": self.qmp_start, "qmp_end": self.qmp_end,
            "drift": None if self.qmp_end is None else
            {row.counter: row.drift for row in self.rows()},
            "unmatched": dict(counts.unmatched), "untimed_flushes": counts.untimed_flushes,
            "restarts": counts.restarts, "lost_in_restart": dict(counts.lost_in_restart),
            "evicted": dict(counts.evicted),
            "in_flight_at_end": dict(self.converter.pairing.in_flight_requests()),
            "before_last_reset": {k: dict(v) for k, v in
                                  self.converter.report.before_last_reset.items()},
        }


async def run_qemu_trace(settings: Settings, options: QemuTraceOptions) -> QemuTraceRun:
    """Read, pair and send until the input ends (or, following, until SIGINT/SIGTERM)."""
    run = QemuTraceRun(QemuTraceConverter(options.volumes, options.host_id,
                                          options.max_in_flight))
    started = time.monotonic()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: asyncio.ensure_future(_on_demand(run, options)))
    try:
        run.qmp_start = await _blockstats(run, options)
        async with IoProducer(settings) as producer:
            async for lines in _trace_chunks(options, stop, run):
                for text in lines:
                    event = run.converter.feed(text)
                    if event is not None:
                        producer.record_event(event)
                await asyncio.sleep(0)  # let the SDK's sender run
        run.qmp_end = await _blockstats(run, options)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            loop.remove_signal_handler(sig)
    run.seconds = time.monotonic() - started
    if options.report_json:
        with open(options.report_json, "wb") as out:
            out.write(orjson.dumps(run.to_json(), option=orjson.OPT_INDENT_2))
    return run


async def _blockstats(run: QemuTraceRun, options: QemuTraceOptions) -> dict[str, Any] | None:
    if options.qmp_socket is None:
        return None
    try:
        entries = await query_blockstats(options.qmp_socket)
        return select_blockstats(entries, options.qmp_device)
    except (TimeoutError, OSError, QmpError, ValueError) as exc:
        run.qmp_errors.append(f"query-blockstats on {options.qmp_socket} failed: {exc}")
        return None


async def _on_demand(run: QemuTraceRun, options: QemuTraceOptions) -> None:
    """SIGUSR1: compare with QMP now, on stderr (requests in flight make small drifts)."""
    now = await _blockstats(run, options)
    if now is not None:
        lines = reconciliation_lines(reconcile(run.converter.current_process(), now,
                                               run.qmp_start))
        print("query-blockstats now vs the trace so far:", *lines, sep="\n", file=sys.stderr)


async def _trace_chunks(options: QemuTraceOptions, stop: asyncio.Event,
                        run: QemuTraceRun) -> AsyncIterator[list[str]]:
    """Complete lines as they arrive; a last line without its newline only at the end."""
    pending = b""
    async for data in _read_data(options, stop, run):
        pending += data
        *complete, pending = pending.split(b"\n")
        if complete:
            yield [line.decode("utf-8", "replace") for line in complete]
    if pending.strip():
        yield [pending.decode("utf-8", "replace")]


async def _read_data(options: QemuTraceOptions, stop: asyncio.Event,
                     run: QemuTraceRun) -> AsyncIterator[bytes]:
    if options.path == "-":
        async for data in _read_stream(sys.stdin.buffer.fileno(), stop):
            yield data
        return
    while True:
        fd = os.open(options.path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            regular = stat.S_ISREG(os.fstat(fd).st_mode)
            reader = _read_file(fd, options, stop) if regular else _read_stream(fd, stop)
            async for data in reader:
                yield data
        finally:
            os.close(fd)
        if not options.follow or stop.is_set():
            return
        run.reopened += 1  # truncated, replaced, or the FIFO's writer went away
        await _wait(stop, options.poll_s)


async def _read_file(fd: int, options: QemuTraceOptions, stop: asyncio.Event,
                     ) -> AsyncIterator[bytes]:
    """A regular file; following, until stopped or the file is truncated or replaced."""
    position = 0
    while True:
        data = os.read(fd, CHUNK_BYTES)
        if data:
            position += len(data)
            yield data
            continue
        if not options.follow or stop.is_set():
            return
        try:
            now = os.stat(options.path)
        except FileNotFoundError:
            now = None
        if now is None or now.st_ino != os.fstat(fd).st_ino:  # rotated: finish the old one
            while data := os.read(fd, CHUNK_BYTES):
                yield data
            return
        if now.st_size < position:  # truncated: QEMU started again with the same -D
            return
        await _wait(stop, options.poll_s)


async def _read_stream(fd: int, stop: asyncio.Event) -> AsyncIterator[bytes]:
    """A pipe or FIFO, until its writer closes it; once stopped, only what is there."""
    while True:
        if not select.select([fd], [], [], 0)[0]:
            if stop.is_set():
                return
            await _readable(fd, stop)
            continue
        data = os.read(fd, CHUNK_BYTES)
        if not data:
            return
        yield data


async def _readable(fd: int, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()

    def on_readable() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(fd, on_readable)
    stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    waiting: set[asyncio.Future[Any]] = {readable, stopping}
    try:
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        loop.remove_reader(fd)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
