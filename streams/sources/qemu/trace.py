"""QEMU's virtio-blk trace -> SEMANTICS.md events: parsing, pairing, restarts (pure).

QEMU's ``log`` trace backend with ``-msg timestamp=on`` writes one line per event,
``TID@SEC.USEC:NAME ARGS``: TID is the id of the thread that traced (the pid for
the main loop, which runs virtio-blk unless an iothread does) and SEC.USEC is
gettimeofday(), the host's wall clock. docs/qemu.md says which events to enable.

A read or write is ``virtio_blk_handle_read/write`` (its start), ``virtio_blk_rw_complete``
(the back end answered, ``ret`` < 0 on error) and ``virtio_blk_req_complete`` (the
status the guest sees: 0 ok, 1 I/O error, 2 unsupported). A flush has no start line;
``virtqueue_pop`` (one per request taken off any virtqueue) gives its start and its
shape: one buffer out (the header), one in (the status byte). Requests are paired by
their pointer within one QEMU process; nothing is invented for a completion whose
start was not seen: it is counted in the summary with the reason.
"""

from __future__ import annotations

import re
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from streams.core.events import id_error

SECTOR_BYTES = 512
STATUS_OK, STATUS_IOERR, STATUS_UNSUPP = 0, 1, 2
# The events docs/qemu.md enables; the first four are required, the others optional.
TRACE_EVENTS: tuple[str, ...] = (
    "virtio_blk_handle_read", "virtio_blk_handle_write", "virtio_blk_rw_complete",
    "virtio_blk_req_complete", "virtqueue_pop", "virtio_set_status",
)
_ARGS: dict[str, tuple[str, ...]] = {
    "virtio_blk_handle_read": ("vdev", "req", "sector", "nsectors"),
    "virtio_blk_handle_write": ("vdev", "req", "sector", "nsectors"),
    "virtio_blk_rw_complete": ("vdev", "req", "ret"),
    "virtio_blk_req_complete": ("vdev", "req", "status"),
    "virtqueue_pop": ("vq", "elem", "in_num", "out_num"),
    "virtio_set_status": ("vdev", "val"),
}
_BLK_EVENTS = frozenset(n for n in _ARGS if n.startswith("virtio_blk_"))
_LINE_RE = re.compile(r"(\d+)@(\d+)\.(\d{1,9}):(\w+) ?(.*)")
_UNTIMED_RE = re.compile(r"(\w+) (.*)")
# A virtqueue holds at most 1,024 requests; this is room for many queues and devices.
DEFAULT_MAX_IN_FLIGHT = 65_536
ORPHANS_KEPT = 1024  # back-end completions of unknown requests, until their req_complete
FLUSH_SHAPE = (1, 1)  # (in_num, out_num) of a flush: the status byte in, the header out


class TraceLineError(ValueError):
    """A line of one of our events that cannot be read; the message is the reason."""


@dataclass(frozen=True, slots=True)
class TraceLine:
    thread_id: int
    time_ns: int
    name: str
    args: dict[str, str]

    def int_arg(self, name: str) -> int:
        try:
            return int(self.args[name], 0)
        except ValueError:
            raise TraceLineError(f"{self.name}: {name} {self.args[name]!r} is not a number"
                                 ) from None


def parse_line(text: str) -> TraceLine | None:
    """One trace line, or None for a line of another event or not a trace line at all.

    Raises TraceLineError for a line of one of our events that lacks the
    ``TID@SEC.USEC:`` prefix (QEMU runs without ``-msg timestamp=on``) or an argument.
    """
    match = _LINE_RE.fullmatch(text.rstrip("\r\n"))
    if match is None:
        untimed = _UNTIMED_RE.fullmatch(text.rstrip("\r\n"))
        if untimed is not None and untimed.group(1) in _ARGS:
            raise TraceLineError(f"{untimed.group(1)} without the TID@SEC.USEC: prefix "
                                 "(start QEMU with -msg timestamp=on)")
        return None
    tid, sec, frac, name, rest = match.groups()
    wanted = _ARGS.get(name)
    if wanted is None:
        return None
    words = rest.split()
    args = dict(zip(words[::2], words[1::2], strict=False))
    missing = [a for a in wanted if a not in args]
    if missing:
        raise TraceLineError(f"{name}: missing {', '.join(missing)}")
    time_ns = int(sec) * 1_000_000_000 + int(frac.ljust(9, "0"))
    return TraceLine(int(tid), time_ns, name, args)


@dataclass(frozen=True, slots=True)
class CompletedRequest:
    """A request whose completion the trace showed, with what QEMU accounts it as."""

    thread_id: int
    vdev: str
    op: str
    status: str
    offset: int
    bytes: int
    submit_ns: int
    complete_ns: int
    untimed: bool = False  # a flush seen without virtqueue_pop: submit_ns = complete_ns


@dataclass(slots=True)
class _Request:
    start_ns: int
    op: str | None = None  # read/write once a handle line named it; None: only popped
    offset: int = 0
    nbytes: int = 0
    shape: tuple[int, int] | None = None  # (in_num, out_num) from virtqueue_pop
    rw_ret: int | None = None


@dataclass
class PairingCounts:
    """What the pairing saw besides completed requests: every count a reason."""

    restarts: int = 0
    lost_in_restart: Counter[str] = field(default_factory=Counter)  # op -> requests
    evicted: Counter[str] = field(default_factory=Counter)  # op -> started requests
    pops_evicted: int = 0  # popped by some virtqueue, never handled by virtio-blk
    resubmitted: int = 0  # a start seen twice: QEMU restarted it (werror=stop, resume)
    stale_lines: int = 0  # lines of a QEMU process that was restarted since
    unmatched: Counter[str] = field(default_factory=Counter)  # reason -> completions
    untimed_flushes: int = 0
    clock_went_back: int = 0  # completions traced before their start (a host clock step)
    resets: Counter[str] = field(default_factory=Counter)  # vdev -> virtio_set_status 0


class VirtioBlkPairing:
    """Pairs starts and completions by request pointer within one QEMU process.

    At most ``max_in_flight`` requests are kept; the oldest is evicted past that
    (counted: its completion will then be an unmatched one). A line from a thread
    id never seen on a virtio-blk line before is a new QEMU process: the requests
    in flight in the old one will never complete and are counted as lost.
    """

    def __init__(self, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.max_in_flight = max_in_flight
        self.counts = PairingCounts()
        self.process_id: int | None = None  # thread id of the current process' blk lines
        self._old_processes: set[int] = set()
        self._pops_seen: set[int] = set()  # processes whose virtqueue_pop lines we see
        self._in_flight: OrderedDict[tuple[int, str], _Request] = OrderedDict()
        self._orphans: OrderedDict[tuple[int, str], None] = OrderedDict()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def in_flight_requests(self) -> Counter[str]:
        """Started requests not completed yet, by op ('popped' for those not named yet)."""
        return Counter(r.op or "popped" for r in self._in_flight.values())

    def on_line(self, line: TraceLine) -> CompletedRequest | None:
        if line.name == "virtqueue_pop":
            self._on_pop(line)
            return None
        if line.name == "virtio_set_status":
            if line.int_arg("val") == 0:
                self.counts.resets[line.args["vdev"]] += 1
            return None
        if not self._current(line.thread_id):
            self.counts.stale_lines += 1
            return None
        if line.name == "virtio_blk_req_complete":
            return self._on_req_complete(line)
        if line.name == "virtio_blk_rw_complete":
            self._on_rw_complete(line)
        else:
            self._on_handle(line)
        return None

    def _current(self, thread_id: int) -> bool:
        """False for a line of an earlier process; a new thread id starts a new process."""
        if thread_id == self.process_id:
            return True
        if thread_id in self._old_processes:
            return False
        if self.process_id is not None:
            self._restart(thread_id)
        self.process_id = thread_id
        return True

    def _restart(self, new_process: int) -> None:
        assert self.process_id is not None
        self.counts.restarts += 1
        self._old_processes.add(self.process_id)
        for key in [k for k in self._in_flight if k[0] != new_process]:
            request = self._in_flight.pop(key)
            if request.op is not None or request.shape == FLUSH_SHAPE:
                self.counts.lost_in_restart[request.op or "flush"] += 1

    def _remember(self, key: tuple[int, str], request: _Request) -> None:
        self._in_flight[key] = request
        self._in_flight.move_to_end(key)
        if len(self._in_flight) > self.max_in_flight:
            _, evicted = self._in_flight.popitem(last=False)
            if evicted.op is None:
                self.counts.pops_evicted += 1
            else:
                self.counts.evicted[evicted.op] += 1

    def _on_pop(self, line: TraceLine) -> None:
        if line.thread_id in self._old_processes:
            return
        self._pops_seen.add(line.thread_id)
        shape = (line.int_arg("in_num"), line.int_arg("out_num"))
        self._remember((line.thread_id, line.args["elem"]), _Request(line.time_ns, shape=shape))

    def _on_handle(self, line: TraceLine) -> None:
        key = (line.thread_id, line.args["req"])
        request = self._in_flight.get(key)
        if request is None:
            request = _Request(line.time_ns)
        elif request.op is not None:
            self.counts.resubmitted += 1
        # QEMU's accounting starts here (block_acct_start), after the pop.
        request.start_ns = line.time_ns
        request.op = "read" if line.name == "virtio_blk_handle_read" else "write"
        request.offset = line.int_arg("sector") * SECTOR_BYTES
        request.nbytes = line.int_arg("nsectors") * SECTOR_BYTES
        request.rw_ret = None
        self._remember(key, request)

    def _on_rw_complete(self, line: TraceLine) -> None:
        key = (line.thread_id, line.args["req"])
        request = self._in_flight.get(key)
        if request is None:  # a read/write whose start is unknown: req_complete counts it
            self._orphans[key] = None
            if len(self._orphans) > ORPHANS_KEPT:
                self._orphans.popitem(last=False)
            return
        request.rw_ret = line.int_arg("ret")

    def _on_req_complete(self, line: TraceLine) -> CompletedRequest | None:
        request = self._in_flight.pop((line.thread_id, line.args["req"]), None)
        status = line.int_arg("status")
        if request is not None and request.op is not None:
            return self._completed(line, request, request.op, _rw_status(status, request))
        if request is not None and request.shape == FLUSH_SHAPE and status != STATUS_UNSUPP:
            return self._completed(line, request, "flush", _flush_status(status))
        return self._unstarted_completion(line, request, status)

    def _unstarted_completion(self, line: TraceLine, request: _Request | None,
                              status: int) -> CompletedRequest | None:
        key = (line.thread_id, line.args["req"])
        orphan = key in self._orphans  # its back-end completion was seen: a read/write
        self._orphans.pop(key, None)
        if status == STATUS_UNSUPP:
            self.counts.unmatched["unsupported request type (status 2; QEMU counts it "
                                  "nowhere)"] += 1
        elif orphan:
            self.counts.unmatched["read/write completion without a start (started before "
                                  "the trace, or evicted)"] += 1
        elif request is not None:
            self.counts.unmatched[f"other request type (virtqueue shape in/out "
                                  f"{request.shape}: discard, write-zeroes or get-id)"] += 1
        elif line.thread_id in self._pops_seen:
            self.counts.unmatched["completion without a start (started before the trace, "
                                  "or evicted)"] += 1
        else:
            # No virtqueue_pop in this trace: a completion with no start is a flush
            # (or a rare get-id/discard: --qmp reconciles); its start time is unknown.
            self.counts.untimed_flushes += 1
            return self._completed(line, _Request(line.time_ns), "flush", _flush_status(status),
                                   untimed=True)
        return None

    def _completed(self, line: TraceLine, request: _Request, op: str, status: str,
                   untimed: bool = False) -> CompletedRequest:
        offset, nbytes = (0, 0) if op == "flush" else (request.offset, request.nbytes)
        if line.time_ns < request.start_ns:
            self.counts.clock_went_back += 1  # latency 0 rather than a rejected event
        return CompletedRequest(line.thread_id, line.args["vdev"], op, status, offset, nbytes,
                                request.start_ns, max(line.time_ns, request.start_ns), untimed)


def _rw_status(status: int, request: _Request) -> str:
    """ok, failed (the back end failed it) or invalid (QEMU rejected it before any I/O)."""
    if status == STATUS_OK:
        return "ok"  # also after a back-end error with rerror/werror=ignore, as QEMU counts
    if status == STATUS_IOERR and request.rw_ret is not None:
        return "failed"
    return "invalid"  # out of range or too large: completed without reaching the back end


def _flush_status(status: int) -> str:
    return "ok" if status == STATUS_OK else "failed"


@dataclass(frozen=True, slots=True)
class VolumeTarget:
    volume_id: str
    tenant_id: str


def parse_volume_map(text: str, default_tenant: str | None) -> dict[str, VolumeTarget]:
    """``DEVICE=VOLUME_ID[:TENANT_ID],...``; DEVICE is the vdev pointer of the trace."""
    mapping: dict[str, VolumeTarget] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        device, sep, target = item.partition("=")
        volume_id, _, tenant_id = target.partition(":")
        tenant_id = tenant_id or default_tenant or ""
        if not sep or not device:
            raise ValueError(f"{item!r} is not DEVICE=VOLUME_ID[:TENANT_ID]")
        for name, value in (("volume_id", volume_id), ("tenant_id", tenant_id)):
            reason = id_error(name, value)
            if reason is not None:
                raise ValueError(f"{item!r}: {reason}")
        mapping[device.lower()] = VolumeTarget(volume_id, tenant_id)
    return mapping


class VolumeMap:
    """Which volume a vdev's requests are billed to.

    Explicit entries map vdev pointers. The default volume, when given, takes the
    first vdev seen in each QEMU process (a restarted QEMU has new pointers);
    requests of any other vdev are unmapped: counted, never billed to a guess.
    """

    def __init__(self, by_vdev: dict[str, VolumeTarget],
                 default: VolumeTarget | None = None) -> None:
        self.by_vdev = by_vdev
        self.default = default
        self._default_vdev: dict[int, str] = {}

    def target(self, thread_id: int, vdev: str) -> VolumeTarget | None:
        found = self.by_vdev.get(vdev.lower())
        if found is not None or self.default is None:
            return found
        chosen = self._default_vdev.setdefault(thread_id, vdev)
        return self.default if chosen == vdev else None
