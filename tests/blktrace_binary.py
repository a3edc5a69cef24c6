"""Binary blktrace records (struct blk_io_trace), so that the real blkparse prints the
sample the unit tests read: its text format and its summary are blkparse's own.

blktrace itself needs debugfs and CAP_SYS_ADMIN on a real block device, which CI
machines and containers rarely give; blkparse only needs the records. The layout
is include/uapi/linux/blktrace_api.h (version 7), in native (little-endian) order.

    python -m tests.blktrace_binary | blkparse -i - > tests/unit/sources/data/blkparse_sample.txt
"""

from __future__ import annotations

import struct
import sys
from collections import defaultdict

MAGIC_V7 = 0x65617407
_RECORD = struct.Struct("<IIQQIIIIIHH")
# enum blktrace_cat bits (BLK_TC_*), shifted into the action's upper 16 bits
_CATEGORY = {"READ": 0, "WRITE": 1, "FLUSH": 2, "SYNC": 3, "QUEUE": 4, "REQUEUE": 5,
             "ISSUE": 6, "COMPLETE": 7, "FS": 8, "PC": 9, "NOTIFY": 10, "AHEAD": 11,
             "META": 12, "DISCARD": 13, "FUA": 15}
# enum blktrace_act (__BLK_TA_*) and the category the kernel adds to each
_ACTION = {"Q": (1, "QUEUE"), "M": (2, "QUEUE"), "F": (3, "QUEUE"), "G": (4, "QUEUE"),
           "R": (6, "REQUEUE"), "D": (7, "ISSUE"), "C": (8, "COMPLETE"), "P": (9, "QUEUE"),
           "U": (10, "QUEUE"), "I": (12, "QUEUE")}
# RWBS as blkparse prints it -> the categories the kernel sets (a discard and a write
# carry WRITE; a bare flush carries FLUSH without WRITE)
_RWBS = {"R": [], "RS": ["SYNC"], "W": ["WRITE"], "WS": ["WRITE", "SYNC"],
         "WFS": ["WRITE", "FUA", "SYNC"], "FWS": ["FLUSH", "WRITE", "SYNC"],
         "FN": ["FLUSH"], "D": ["WRITE", "DISCARD"], "N": []}


def _cat(name: str) -> int:
    return 1 << (_CATEGORY[name] + 16)


def device(major: int, minor: int) -> int:
    return (major << 20) | minor


class TraceWriter:
    """Records in the order given; each device's trace numbers the records of each CPU
    1, 2, ... as the kernel does."""

    def __init__(self) -> None:
        self.data = bytearray()
        self._sequence: defaultdict[tuple[int, int], int] = defaultdict(int)

    def process(self, pid: int, name: str, dev: int) -> None:
        """A BLK_TN_PROCESS notify: blkparse prints ``name`` for ``pid``."""
        comm = name.encode().ljust(16, b"\0")
        self.data += _RECORD.pack(MAGIC_V7, 0, 0, 0, 0, _cat("NOTIFY"), pid, dev, 0, 0,
                                  len(comm)) + comm

    def action(self, time_ns: int, dev: int, cpu: int, pid: int, act: str, rwbs: str,
               sector: int = 0, sectors: int = 0, error: int = 0) -> None:
        code, category = _ACTION[act]
        bits = code | _cat(category) | _cat("FS")
        for name in _RWBS[rwbs]:
            bits |= _cat(name)
        self._sequence[dev, cpu] += 1
        pdu = struct.pack(">Q", 1) if act == "U" else b""  # an unplug carries its depth
        self.data += _RECORD.pack(MAGIC_V7, self._sequence[dev, cpu], time_ns, sector,
                                  sectors * 512, bits, pid, dev, cpu, error & 0xFFFF,
                                  len(pdu)) + pdu


def sample_trace() -> bytes:
    """Two mapped devices (8,0 and 8,16), one unmapped (8,32), two CPUs: reads, writes,
    merges, a FUA write, a pre-flush write, flushes, a discard, failed completions, a
    requeue, two requests in flight at one sector, an orphan completion at the start and
    an unpaired issue at the end. tests/unit/test_blkparse_source.py checks it by hand."""
    sda, sdb, sdc = device(8, 0), device(8, 16), device(8, 32)
    trace = TraceWriter()
    for dev in (sda, sdb, sdc):
        trace.process(1234, "fio", dev)
        trace.process(99, "kworker/0:1H", dev)
    steps: list[tuple[int, int, int, int, str, str, int, int, int]] = [
        # time_us, dev, cpu, pid, action, rwbs, sector, sectors, error
        (10, sda, 1, 0, "C", "R", 100, 8, 0),            # orphan: issued before the trace
        (20, sda, 0, 1234, "Q", "R", 2048, 8, 0),
        (21, sda, 0, 1234, "G", "R", 2048, 8, 0),
        (22, sda, 0, 1234, "P", "N", 0, 0, 0),
        (23, sda, 0, 1234, "I", "R", 2048, 8, 0),
        (24, sda, 0, 1234, "U", "N", 0, 0, 0),
        (25, sda, 0, 1234, "D", "R", 2048, 8, 0),
        (105, sda, 1, 0, "C", "R", 2048, 8, 0),          # read: 80 us
        (110, sda, 0, 1234, "Q", "W", 4096, 8, 0),
        (111, sda, 0, 1234, "G", "W", 4096, 8, 0),
        (112, sda, 0, 1234, "Q", "W", 4104, 8, 0),
        (113, sda, 0, 1234, "M", "W", 4104, 8, 0),       # back merge
        (114, sda, 0, 1234, "Q", "W", 4088, 8, 0),
        (115, sda, 0, 1234, "F", "W", 4088, 8, 0),       # front merge: 4088 + 24
        (116, sda, 0, 1234, "I", "W", 4088, 24, 0),
        (120, sda, 0, 1234, "D", "W", 4088, 24, 0),
        (320, sda, 1, 0, "C", "W", 4088, 24, 0),         # write 12 KiB: 200 us
        (330, sda, 0, 1234, "Q", "WFS", 8192, 8, 0),
        (331, sda, 0, 1234, "G", "WFS", 8192, 8, 0),
        (332, sda, 0, 1234, "D", "WFS", 8192, 8, 0),
        (632, sda, 1, 0, "C", "WFS", 8192, 8, 0),        # FUA write: 300 us
        (640, sda, 0, 99, "D", "FWS", 9000, 16, 0),
        (1040, sda, 1, 0, "C", "FWS", 9000, 16, 0),      # pre-flush write 8 KiB: 400 us
        (1050, sda, 0, 99, "D", "FN", 0, 0, 0),
        (1550, sda, 1, 0, "C", "FN", 0, 0, 0),           # flush: 500 us
        (1560, sda, 0, 1234, "D", "D", 65536, 2048, 0),
        (2560, sda, 1, 0, "C", "D", 65536, 2048, 0),     # discard 1 MiB: 1000 us
        (2570, sda, 0, 1234, "D", "RS", 12000, 8, 0),
        (2670, sda, 1, 0, "C", "RS", 12000, 8, -5),      # failed read: 100 us
        (2680, sda, 0, 1234, "D", "W", 13000, 8, 0),
        (2880, sda, 1, 0, "C", "W", 13000, 8, -5),       # failed write: 200 us
        (2900, sda, 0, 1234, "D", "R", 20000, 8, 0),
        (2910, sda, 0, 1234, "R", "R", 20000, 8, 0),     # requeued ...
        (2950, sda, 0, 1234, "D", "R", 20000, 8, 0),     # ... issued again
        (3000, sda, 1, 0, "C", "R", 20000, 8, 0),        # read: 50 us after the second D
        (3010, sda, 0, 1234, "D", "R", 30000, 8, 0),
        (3020, sda, 0, 1234, "D", "R", 30000, 8, 0),     # two reads of one sector in flight
        (3030, sda, 1, 0, "C", "R", 30000, 8, 0),        # 20 us (first issued, first done)
        (3050, sda, 1, 0, "C", "R", 30000, 8, 0),        # 30 us
        (3100, sdb, 0, 1234, "D", "R", 0, 8, 0),
        (3160, sdb, 1, 0, "C", "R", 0, 8, 0),            # vol-b read: 60 us
        (3170, sdb, 0, 1234, "D", "WS", 8, 8, 0),
        (3240, sdb, 1, 0, "C", "WS", 8, 8, 0),           # vol-b write: 70 us
        (3250, sdb, 0, 99, "D", "FN", 0, 0, 0),
        (3340, sdb, 1, 0, "C", "FN", 0, 0, 0),           # vol-b flush: 90 us
        (3400, sdc, 0, 1234, "D", "R", 0, 8, 0),         # unmapped device
        (3500, sdc, 1, 0, "C", "R", 0, 8, 0),
        (3600, sda, 0, 1234, "D", "W", 40000, 8, 0),     # never completes in the trace
    ]
    for time_us, dev, cpu, pid, act, rwbs, sector, sectors, error in steps:
        trace.action(time_us * 1000, dev, cpu, pid, act, rwbs, sector, sectors, error)
    return bytes(trace.data)


if __name__ == "__main__":
    sys.stdout.buffer.write(sample_trace())
