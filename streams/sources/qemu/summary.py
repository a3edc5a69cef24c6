"""QEMU trace lines -> IoEvents with a summary of what was seen, and the comparison
with QEMU's own ``query-blockstats`` (pure: no faust, no aiokafka, no sockets).

The counters use SEMANTICS.md section 2 names (``read_ios``, ``total_read_time_ns``,
...) so that the summary, the pipeline and QEMU's ``rd_operations``, ``rd_total_time_ns``
... line up one to one (BLOCKSTATS_NAMES).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from streams.core.counters import (
    BYTES,
    ERRORS,
    INVALID,
    IOS,
    OP_COUNTER_NAMES,
    TIME,
    event_counts,
)
from streams.core.events import OP_CODE, OPS, STATUS_CODE, IoEvent
from streams.sources.qemu.trace import (
    DEFAULT_MAX_IN_FLIGHT,
    CompletedRequest,
    TraceLineError,
    VirtioBlkPairing,
    VolumeMap,
    parse_line,
)

_QEMU_OP = {"read": "rd", "write": "wr", "flush": "flush", "discard": "unmap"}
# QEMU's name of each counter slot, {q}: its name of the op.
_QEMU_SLOT_NAMES = {IOS: "{q}_operations", BYTES: "{q}_bytes", ERRORS: "failed_{q}_operations",
                    INVALID: "invalid_{q}_operations", TIME: "{q}_total_time_ns"}


def _blockstats_names() -> dict[str, str]:
    return {name: _QEMU_SLOT_NAMES[slot].format(q=_QEMU_OP[op])
            for op, names in zip(OPS, OP_COUNTER_NAMES, strict=True) for name, slot in names}


BLOCKSTATS_NAMES: dict[str, str] = _blockstats_names()  # SEMANTICS counter -> QEMU's name


def count_request(counters: Counter[str], op: str, status: str, nbytes: int,
                  latency_ns: int) -> None:
    """Add one request to SEMANTICS.md section 2 counters (account_failed=on)."""
    counters.update(event_counts(OP_CODE[op], STATUS_CODE[status], nbytes, latency_ns))


@dataclass
class TraceReport:
    """Everything `produce --qemu-trace` read, by reason; counters per process and vdev."""

    lines: int = 0
    ignored_lines: int = 0  # other events, QEMU's own messages
    bad_lines: Counter[str] = field(default_factory=Counter)  # reason -> lines
    requests: Counter[str] = field(default_factory=Counter)  # "op status" -> completions
    by_process: dict[int, Counter[str]] = field(default_factory=dict)
    by_vdev: dict[str, Counter[str]] = field(default_factory=dict)
    before_last_reset: dict[str, Counter[str]] = field(default_factory=dict)
    unmapped: Counter[str] = field(default_factory=Counter)  # vdev -> requests not sent
    events: int = 0  # sent to the pipeline


class QemuTraceConverter:
    """Feeds trace lines through the pairing and the volume map, keeping the report."""

    def __init__(self, volumes: VolumeMap, host_id: str | None = None,
                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        self.volumes = volumes
        self.host_id = host_id
        self.pairing = VirtioBlkPairing(max_in_flight)
        self.report = TraceReport()

    def feed(self, text: str) -> IoEvent | None:
        """One line of the trace; the event to send, if it completed a mapped request."""
        self.report.lines += 1
        try:
            line = parse_line(text)
            if line is None:
                self.report.ignored_lines += 1
                return None
            if line.name == "virtio_set_status" and line.int_arg("val") == 0:
                vdev = line.args["vdev"]
                self.report.before_last_reset[vdev] = Counter(self.report.by_vdev.get(vdev, {}))
            completed = self.pairing.on_line(line)
        except TraceLineError as exc:
            self.report.bad_lines[str(exc)] += 1
            return None
        return None if completed is None else self._event(completed)

    def _event(self, request: CompletedRequest) -> IoEvent | None:
        report = self.report
        report.requests[f"{request.op} {request.status}"] += 1
        latency_ns = request.complete_ns - request.submit_ns
        for counters in (report.by_process.setdefault(request.thread_id, Counter()),
                         report.by_vdev.setdefault(request.vdev, Counter())):
            count_request(counters, request.op, request.status, request.bytes, latency_ns)
        target = self.volumes.target(request.thread_id, request.vdev)
        if target is None:
            report.unmapped[request.vdev] += 1
            return None
        report.events += 1
        return IoEvent(target.volume_id, target.tenant_id, request.op, request.status,
                       request.offset, request.bytes, request.submit_ns, request.complete_ns,
                       self.host_id)

    def current_process(self) -> Counter[str]:
        """The counters of the QEMU process now running (the one QMP answers for)."""
        pid = self.pairing.process_id
        return self.report.by_process.get(pid, Counter()) if pid is not None else Counter()

    def summary_lines(self) -> list[str]:
        report, counts = self.report, self.pairing.counts
        out = [f"qemu trace: {report.lines} lines, {report.events} events sent, "
               f"{report.ignored_lines} lines of other events ignored",
               "  completed: " + _pairs(report.requests)]
        out += [f"  {n} bad line(s): {reason}" for reason, n in report.bad_lines.most_common()]
        out += [f"  {n} completion(s) not sent: {reason}"
                for reason, n in counts.unmatched.most_common()]
        notes = [
            (counts.untimed_flushes, "flush(es) without virtqueue_pop in the trace: latency "
             "unknown, sent as 0"),
            (sum(counts.lost_in_restart.values()), "request(s) in flight when QEMU restarted, "
             f"never completed ({_pairs(counts.lost_in_restart)}); not sent"),
            (counts.restarts, "QEMU restart(s) (a new thread id on virtio-blk lines)"),
            (sum(counts.evicted.values()), "started request(s) evicted from the in-flight map "
             f"at its cap of {self.pairing.max_in_flight} ({_pairs(counts.evicted)})"),
            (counts.stale_lines, "line(s) of an earlier QEMU process after its restart, ignored"),
            (counts.resubmitted, "request(s) started again by QEMU (werror/rerror=stop, "
             "then resumed): timed from the last start, as QEMU does"),
            (counts.clock_went_back, "completion(s) traced before their start (host clock "
             "stepped back): latency 0"),
        ]
        out += [f"  {n} {text}" for n, text in notes if n]
        out += [f"  {n} request(s) of unmapped vdev {vdev} not sent (--volume-map)"
                for vdev, n in report.unmapped.items()]
        in_flight = self.pairing.in_flight_requests()
        if in_flight:
            out.append(f"  in flight at the end (not sent): {_pairs(in_flight)}")
        for vdev, before in report.before_last_reset.items():
            if before:
                out.append(f"  vdev {vdev}: before its last reset by the guest (firmware or "
                           f"an earlier driver): {_pairs(before)}")
        return out


def _pairs(counter: Counter[str] | dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counter.items()) if v) or "none"


def select_blockstats(entries: list[dict[str, Any]], device: str | None) -> dict[str, Any]:
    """The ``stats`` of the query-blockstats entry named ``device`` (its drive id,
    qdev path or node name); without a name, the only entry attached to a device."""
    if device is not None:
        found = [e for e in entries
                 if device in (e.get("device"), e.get("qdev"), e.get("node-name"))]
    else:
        found = [e for e in entries if e.get("qdev")]
    if len(found) != 1:
        names = [e.get("device") or e.get("qdev") or e.get("node-name") for e in entries]
        raise ValueError(f"query-blockstats: {len(found)} entries match "
                         f"{device or 'a guest device'}; entries: {names} (use --qmp-device)")
    stats: dict[str, Any] = found[0]["stats"]
    return stats


@dataclass(frozen=True, slots=True)
class DriftRow:
    counter: str  # SEMANTICS name
    blockstats: str  # QEMU's name
    qmp_start: int | None
    qmp_end: int
    trace: int

    @property
    def drift(self) -> int:
        return self.trace - self.qmp_end


def reconcile(trace: Counter[str], qmp_end: dict[str, Any],
              qmp_start: dict[str, Any] | None = None) -> list[DriftRow]:
    """Trace counters of the current QEMU process against query-blockstats.

    The trace file holds the process' whole life (``-D`` starts it afresh), so it
    compares with the cumulative counters at the end, not with end - start."""
    return [DriftRow(counter, name, None if qmp_start is None else int(qmp_start.get(name, 0)),
                     int(qmp_end.get(name, 0)), int(trace.get(counter, 0)))
            for counter, name in BLOCKSTATS_NAMES.items()]


def reconciliation_lines(rows: list[DriftRow]) -> list[str]:
    """A table of the rows where anything is non-zero; drift = trace - QMP at the end."""
    out = [f"  {'counter':<22} {'query-blockstats':<24} {'qmp start':>14} {'qmp end':>14} "
           f"{'trace':>14} {'drift':>12}"]
    for row in rows:
        if not (row.qmp_start or row.qmp_end or row.trace):
            continue
        start = "-" if row.qmp_start is None else str(row.qmp_start)
        drift = f"{row.drift:+d}"
        if row.counter.startswith("total_") and row.qmp_end:
            drift += f" ({100 * row.drift / row.qmp_end:+.1f} %)"
        out.append(f"  {row.counter:<22} {row.blockstats:<24} {start:>14} {row.qmp_end:>14} "
                   f"{row.trace:>14} {drift:>12}")
    return out
