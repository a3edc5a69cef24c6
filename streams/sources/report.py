"""What a real source (fio log, blkparse text) turned into events, and what it did not.

Pure logic: no faust, no aiokafka. A line that becomes no event is never
dropped silently: it is either an *ignored* action (a step of a request that
is not a request of its own, e.g. blkparse's Q, G, M) or *skipped* with a
reason and the numbers of its first few lines.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from streams.core.events import IoEvent

EXAMPLE_LINES = 3  # line numbers kept per skip reason, to find them in the input


@dataclass
class SourceReport:
    """Tallies of one source's lines: events per op, ignored actions, skips with reasons."""

    source: str
    lines: int = 0
    events: int = 0
    events_by_op: Counter[str] = field(default_factory=Counter)
    bytes_by_op: Counter[str] = field(default_factory=Counter)  # of ok events, as counters
    failed_by_op: Counter[str] = field(default_factory=Counter)
    ignored: Counter[str] = field(default_factory=Counter)
    other_lines: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    skipped_lines: dict[str, list[int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def on_event(self, event: IoEvent) -> None:
        self.events += 1
        self.events_by_op[event.op] += 1
        if event.status == "ok":
            self.bytes_by_op[event.op] += event.bytes
        else:
            self.failed_by_op[event.op] += 1

    def ignore(self, what: str) -> None:
        """A step of a request that is not a request of its own (blkparse's Q, M, ...)."""
        self.ignored[what] += 1

    def other_line(self, what: str) -> None:
        """A line that is no I/O at all: blank, or a tool's summary."""
        self.other_lines[what] += 1

    @property
    def failed(self) -> int:
        return sum(self.failed_by_op.values())

    def skip(self, reason: str, line_no: int) -> None:
        self.skipped[reason] += 1
        examples = self.skipped_lines.setdefault(reason, [])
        if len(examples) < EXAMPLE_LINES:
            examples.append(line_no)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def lines_out(self) -> list[str]:
        """The end-of-run summary, for a person."""
        out = [f"{self.source}: {self.lines} line(s) read, {self.events} event(s) "
               f"({self.failed} failed)"]
        for op in sorted(self.events_by_op):
            failed = self.failed_by_op[op]
            out.append(f"  {op}: {self.events_by_op[op]} I/Os, {self.bytes_by_op[op]} bytes"
                       + (f" ({failed} failed, their bytes not counted)" if failed else ""))
        if self.ignored:
            out.append("  ignored, steps of a request and not requests: "
                       + ", ".join(f"{k}={v}" for k, v in sorted(self.ignored.items())))
        if self.other_lines:
            out.append("  other lines: "
                       + ", ".join(f"{k}={v}" for k, v in sorted(self.other_lines.items())))
        if self.skipped:
            out.append(f"  skipped {self.skipped_total} line(s):")
            for reason, n in self.skipped.most_common():
                where = ", ".join(str(n) for n in self.skipped_lines.get(reason, []))
                out.append(f"    {n} x {reason} (first at line {where})")
        out += [f"  {note}" for note in self.notes]
        return out
