"""blkparse's default text output -> SEMANTICS.md events, and its per-device summary.

Pure logic: no faust, no aiokafka, no files; the clock is passed in. One line
per trace action (blkparse_fmt.c, ``process_default``):

    8,0    1        1     0.000000000  1234  D   R 2048 + 8 [fio]
    dev   cpu  sequence   time (s.ns)   pid act RWBS sector + sectors [process]

What a request is: the block layer traces a bio's way into a request (Q
queued, G get request, M/F merged into one, I inserted, P/U plug/unplug, X
split, A remapped), then the request's issue to the device (D) and its
completion (C). One D -> C pair is one I/O, and one event: submit_ns = D,
complete_ns = C, so latency is blkparse/btt's D2C (device service time).
Merged bios are inside the request's size, so the other actions are steps,
counted as *ignored*, never as I/Os. A requeue (R) takes an issued request
back; its next D issues it again.

Pairing: per device, an issue waits for the completion of the same op, start
sector and size (first issued, first completed); no-data requests (flushes)
pair by device alone. Completions that pair with nothing (the trace started
after the issue) and issues still waiting at the end of the input (the trace
stopped first) are reported, never turned into events.

RWBS (blkparse's fill_rwbs): an optional leading ``F`` (pre-flush), then
``D`` discard / ``W`` write / ``R`` read / ``N`` no data, then ``F`` (FUA),
``A`` (read-ahead), ``S`` (sync), ``M`` (metadata). A write with a pre-flush or
FUA is a write; ``FN`` is a bare flush. A completion whose error in brackets
is not 0 is ``failed`` (the kernel stores -errno in 16 bits: -5 prints as 65531).
"""

from __future__ import annotations

import re
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from streams.core.events import IoEvent, id_error
from streams.core.times import NS_PER_S
from streams.sources.report import SourceReport

SECTOR_BYTES = 512

_HEADER_RE = re.compile(
    r"\s*(\d+),(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\.(\d{9})\s+(\d+)\s+(\S+)\s+(\S+)\s?(.*)")
_COMPLETE_RE = re.compile(r"(\d+)(?: \+ (\d+))?(?: \(\s*\d+\))? \[(-?\d+)\]")
_ISSUE_DATA_RE = re.compile(r"(\d+) \+ (\d+)(?: \(\s*\d+\))? \[.*\]")
_ISSUE_NODATA_RE = re.compile(r"(?:\(\s*\d+\) )?\[.*\]")
_MAP_ITEM_RE = re.compile(r"(\d+)[,:](\d+)=([A-Za-z0-9._:-]+)")
_MAP_RE = re.compile(rf"{_MAP_ITEM_RE.pattern}(?:,{_MAP_ITEM_RE.pattern})*")

IGNORED_ACTIONS: dict[str, str] = {
    "Q": "Q queued", "G": "G get request", "S": "S sleep", "I": "I inserted",
    "M": "M back merge", "F": "F front merge", "P": "P plug", "U": "U unplug",
    "UT": "UT timer unplug", "T": "T timer unplug", "X": "X split", "A": "A remap",
    "B": "B bounce", "m": "m message",
}
ORPHAN_COMPLETION = "completion (C) with no issue (D) before it"
UNPAIRED_ISSUE = "issue (D) with no completion (C) by the end of the input"


RequestKey = tuple[str, str | None, int | None, int]  # device, op, start sector, sectors


class BlkparseError(ValueError):
    """A --volume-map or an input that cannot be read; the message is the reason."""


@dataclass(frozen=True, slots=True)
class VolumeTarget:
    volume_id: str
    tenant_id: str


@dataclass(frozen=True, slots=True)
class TraceLine:
    """One action line: the header's fields, and what follows the RWBS column."""

    device: str
    cpu: int
    time_ns: int
    action: str
    rwbs: str
    rest: str


def parse_volume_map(specs: Iterable[str], default_tenant: str | None
                     ) -> dict[str, VolumeTarget]:
    """``8,0=vol-a:tenant-1,8,16=vol-b`` (``8:0`` works too) -> {"8,0": target, ...}.

    The last ``:`` of a value separates the tenant; without one, ``default_tenant``.
    """
    targets: dict[str, VolumeTarget] = {}
    for spec in specs:
        if not _MAP_RE.fullmatch(spec):
            raise BlkparseError(f"--volume-map {spec!r}: expected MAJOR,MINOR=VOLUME[:TENANT],...")
        for major, minor, value in _MAP_ITEM_RE.findall(spec):
            volume_id, _, tenant_id = value.rpartition(":") if ":" in value else (value, "", "")
            tenant_id = tenant_id or default_tenant or ""
            if not tenant_id:
                raise BlkparseError(f"--volume-map {major},{minor}: no tenant (add :TENANT "
                                    "or --tenant-id)")
            for name, ident in (("volume_id", volume_id), ("tenant_id", tenant_id)):
                reason = id_error(name, ident)
                if reason:
                    raise BlkparseError(f"--volume-map {major},{minor}: {reason}")
            targets[f"{major},{minor}"] = VolumeTarget(volume_id, tenant_id)
    return targets


def parse_trace_line(text: str) -> TraceLine | None:
    """The action line's fields, or None when ``text`` is not one."""
    match = _HEADER_RE.fullmatch(text.rstrip("\n"))
    if match is None:
        return None
    major, minor, cpu, _seq, sec, nsec, _pid, action, rwbs, rest = match.groups()
    return TraceLine(f"{major},{minor}", int(cpu), int(sec) * NS_PER_S + int(nsec),
                     action, rwbs, rest.strip())


def op_from_rwbs(rwbs: str) -> str | None:
    """read/write/discard/flush, or None for a no-data request that is not a flush."""
    preflush = rwbs.startswith("F") and len(rwbs) > 1
    kind = rwbs[1:2] if preflush else rwbs[:1]
    if kind == "N":
        return "flush" if preflush else None
    return {"D": "discard", "W": "write", "R": "read"}.get(kind)


def blkparse_direction_is_write(rwbs: str) -> bool:
    """How blkparse's summary splits Reads/Writes: the kernel's write bit, which discards
    carry too; a flush (FN) has none, so blkparse counts it among the reads."""
    return op_from_rwbs(rwbs) in ("write", "discard")


@dataclass
class Issue:
    line_no: int
    time_ns: int
    op: str
    sector: int
    sectors: int


@dataclass
class CompletionTally:
    """C lines of one device, added up the way blkparse's summary does (io_stats)."""

    reads: int = 0
    writes: int = 0
    read_kb: int = 0
    write_kb: int = 0
    read_b: int = 0
    write_b: int = 0

    def add(self, is_write: bool, nbytes: int) -> None:
        if is_write:
            self.writes, self.write_kb, self.write_b = (
                self.writes + 1, self.write_kb + (nbytes >> 10), self.write_b + (nbytes & 1023))
        else:
            self.reads, self.read_kb, self.read_b = (
                self.reads + 1, self.read_kb + (nbytes >> 10), self.read_b + (nbytes & 1023))

    @property
    def read_kib(self) -> int:
        return self.read_kb + (self.read_b >> 10)

    @property
    def write_kib(self) -> int:
        return self.write_kb + (self.write_b >> 10)


@dataclass
class BlkparseSource:
    """Feeds blkparse lines in order, pairs D with C, yields events; keeps the summary.

    ``start_ns`` is the epoch ns of blkparse's time 0; when None, the first action
    line anchors it to ``clock_ns()`` (live: ``blktrace | blkparse | ioacct``).
    """

    volume_map: dict[str, VolumeTarget]
    report: SourceReport
    start_ns: int | None = None
    clock_ns: Callable[[], int] | None = None
    host_id: str | None = None
    completions: dict[str, CompletionTally] = field(default_factory=dict)
    summary: SummaryParser = field(default_factory=lambda: SummaryParser())
    _waiting: dict[RequestKey, deque[Issue]] = field(default_factory=dict)

    def events(self, lines: Iterable[str]) -> Iterator[IoEvent]:
        """Every event of ``lines``; then the issues left waiting are reported."""
        for line_no, text in enumerate(lines, 1):
            event = self.on_line(line_no, text)
            if event is not None:
                yield event
        self.finish()

    def on_line(self, line_no: int, text: str) -> IoEvent | None:
        self.report.lines += 1
        trace = parse_trace_line(text)
        if trace is None:
            if not text.strip():
                self.report.other_line("blank line")
            elif self.summary.feed(text):
                self.report.other_line("blkparse summary")
            else:
                self.report.skip("not a blkparse line", line_no)
            return None
        if self.start_ns is None:
            if self.clock_ns is None:
                raise BlkparseError("no start time: give --start-ns")
            self.start_ns = self.clock_ns() - trace.time_ns
        if trace.action in ("D", "C", "R"):
            return self._on_request_line(line_no, trace)
        self.report.ignore(IGNORED_ACTIONS.get(trace.action, f"{trace.action} (unknown)"))
        return None

    def finish(self) -> None:
        for queue in self._waiting.values():
            for issue in queue:
                self.report.skip(UNPAIRED_ISSUE, issue.line_no)
        self._waiting.clear()

    def _on_request_line(self, line_no: int, trace: TraceLine) -> IoEvent | None:
        if trace.action == "C":
            return self._on_complete(line_no, trace)
        shape = _issue_shape(trace.rest, requeue=trace.action == "R")
        if shape is None:
            self.report.skip("passthrough (PC) command, not a block I/O", line_no)
            return None
        if trace.action == "R":  # requeued: the request goes back; its next D issues it
            self.report.ignore("R requeue")
            queue = self._waiting.get(_key(trace.device, op_from_rwbs(trace.rwbs), *shape))
            if queue:
                queue.popleft()
            return None
        self._on_issue(line_no, trace, shape)
        return None

    def _on_issue(self, line_no: int, trace: TraceLine, shape: tuple[int | None, int]
                  ) -> None:
        if trace.device not in self.volume_map:
            self.report.skip(f"device {trace.device} is not in --volume-map", line_no)
            return
        op = op_from_rwbs(trace.rwbs)
        if op is None or (op == "flush") != (shape[0] is None):
            self.report.skip(f"RWBS {trace.rwbs} with this size is not read/write/discard/"
                             "flush", line_no)
            return
        issue = Issue(line_no, trace.time_ns, op, shape[0] or 0, shape[1])
        self._waiting.setdefault(_key(trace.device, op, *shape), deque()).append(issue)
        return None

    def _on_complete(self, line_no: int, trace: TraceLine) -> IoEvent | None:
        match = _COMPLETE_RE.fullmatch(trace.rest)
        if match is None:
            self.report.skip("passthrough (PC) command, not a block I/O", line_no)
            return None
        sector, sectors, error = int(match[1]), int(match[2] or 0), int(match[3])
        tally = self.completions.setdefault(trace.device, CompletionTally())
        tally.add(blkparse_direction_is_write(trace.rwbs), sectors * SECTOR_BYTES)
        if trace.device not in self.volume_map:
            self.report.skip(f"device {trace.device} is not in --volume-map", line_no)
            return None
        queue = self._waiting.get(_key(trace.device, op_from_rwbs(trace.rwbs),
                                       sector if sectors else None, sectors))
        if not queue:
            self.report.skip(ORPHAN_COMPLETION, line_no)
            return None
        return self._event(queue.popleft(), trace, error)

    def _event(self, issue: Issue, trace: TraceLine, error: int) -> IoEvent:
        assert self.start_ns is not None
        target = self.volume_map[trace.device]
        event = IoEvent(
            volume_id=target.volume_id, tenant_id=target.tenant_id, op=issue.op,
            status="failed" if error else "ok", offset=issue.sector * SECTOR_BYTES,
            bytes=issue.sectors * SECTOR_BYTES, submit_ns=self.start_ns + issue.time_ns,
            # blkparse prints in time order, so C follows its D; max() only guards
            # against per-CPU clock skew of a few ns
            complete_ns=self.start_ns + max(trace.time_ns, issue.time_ns),
            host_id=self.host_id)
        self.report.on_event(event)
        return event


def _issue_shape(rest: str, requeue: bool) -> tuple[int | None, int] | None:
    """(start sector, sectors) of a D/R line; (None, 0) for no data; None for passthrough."""
    if requeue:  # R prints like C: "sector + n [error]", a requeued flush "0 [0]"
        match = _COMPLETE_RE.fullmatch(rest)
        if match is None:
            return None
        return (int(match[1]), int(match[2])) if match[2] else (None, 0)
    match = _ISSUE_DATA_RE.fullmatch(rest)
    if match is not None:
        return int(match[1]), int(match[2])
    return (None, 0) if _ISSUE_NODATA_RE.fullmatch(rest) else None


def _key(device: str, op: str | None, sector: int | None, sectors: int) -> RequestKey:
    return device, op, sector, sectors


def last_time_ns(lines: Iterable[str]) -> int | None:
    """blkparse's largest action time in ``lines`` (to anchor a finished trace file)."""
    latest: int | None = None
    for text in lines:
        trace = parse_trace_line(text)
        if trace is not None and (latest is None or trace.time_ns > latest):
            latest = trace.time_ns
    return latest


# --- the summary blkparse prints at the end ------------------------------------------------

_SECTION_RE = re.compile(r"(CPU\d+|Total) \((.+)\):")
_NUMBER = r"(\d+(?:,\d{3})*)"  # blkparse prints with the thousands separator ("%'8Lu")
_STAT_RE = re.compile(rf"([A-Z][A-Za-z. ]*?):\s+{_NUMBER}([KMGP]?)(?:,\s+{_NUMBER}([KMGP])iB)?")
_TRAILER_RE = re.compile(r"(Throughput \(R/W\)|Events \(.+\)|Skips):.*")
_SCALE = {"": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "P": 1000**4}


@dataclass
class DeviceSummary:
    """One device's section: counts (``reads_completed``) and KiB (same keys).

    blkparse shows numbers above 1,000,000 divided by 1000 with a K/M/G suffix;
    ``exact`` is False when a number was shown so (the value here is then a floor).
    """

    counts: Counter[str] = field(default_factory=Counter)
    kib: Counter[str] = field(default_factory=Counter)
    exact: bool = True


class SummaryParser:
    """The "CPU0 (8,0):" / "Total (8,0):" sections; ``devices()`` per device name."""

    def __init__(self) -> None:
        self._cpu: dict[str, DeviceSummary] = {}
        self._total: dict[str, DeviceSummary] = {}
        self._current: DeviceSummary | None = None

    def feed(self, text: str) -> bool:
        """Take one line; False when it belongs to no summary."""
        line = text.strip()
        section = _SECTION_RE.fullmatch(line)
        if section is not None:
            kind, device = section.groups()
            if kind == "Total":
                self._current = self._total[device] = DeviceSummary()
            else:  # CPU sections of a device add up (but for the depths, a maximum)
                self._current = self._cpu.setdefault(device, DeviceSummary())
            return True
        if _TRAILER_RE.fullmatch(line):
            self._current = None
            return True
        stats = _STAT_RE.findall(line) if self._current is not None else []
        for label, count, count_unit, kib, kib_unit in stats:
            self._add(label, count, count_unit, kib, kib_unit)
        return bool(stats)

    def _add(self, label: str, count: str, count_unit: str, kib: str, kib_unit: str) -> None:
        assert self._current is not None
        name = re.sub(r"[^a-z]+", "_", label.lower()).strip("_")
        self._current.counts[name] += int(count.replace(",", "")) * _SCALE[count_unit]
        if kib:  # the size column starts at K: "4KiB" is 4, "1,234MiB" is 1,234,000
            self._current.kib[name] += int(kib.replace(",", "")) * _SCALE[kib_unit] // 1000
        self._current.exact &= count_unit == "" and kib_unit in ("", "K")

    def devices(self) -> dict[str, DeviceSummary]:
        """Per device: its Total section, or its one CPU section when it had only one
        (blkparse prints Total only for two or more CPUs)."""
        return {**self._cpu, **self._total}


def compare_with_summary(source: BlkparseSource) -> list[str]:
    """Per device, the C lines read here against blkparse's own "Reads/Writes Completed"."""
    out: list[str] = []
    summaries = source.summary.devices()
    for device, tally in sorted(source.completions.items()):
        summary = summaries.get(device)
        if summary is None:
            out.append(f"{device}: no blkparse summary in the input to check against")
            continue
        ours = (tally.reads, tally.read_kib, tally.writes, tally.write_kib)
        theirs = (summary.counts["reads_completed"], summary.kib["reads_completed"],
                  summary.counts["writes_completed"], summary.kib["writes_completed"])
        verdict = "agree" if ours == theirs else (
            "DIFFER" if summary.exact else "differ (blkparse rounded its numbers)")
        out.append(f"{device}: completions read {ours[0]} ({ours[1]} KiB) 'reads', "
                   f"{ours[2]} ({ours[3]} KiB) 'writes'; blkparse's summary {theirs[0]} "
                   f"({theirs[1]} KiB), {theirs[2]} ({theirs[3]} KiB): {verdict}")
    return out
