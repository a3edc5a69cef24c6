"""A tiny QEMU guest that does known I/O on one virtio-blk disk, for tests and `make run`.

Builds (and caches) a Debian cloud kernel (``apt-get download``; nothing is
installed), an initramfs of busybox-static and the virtio modules, and a 64 MiB disk;
boots it under TCG with the virtio-blk trace on (docs/qemu.md), a QMP socket and
blkdebug failing every read of one sector and every write of another. The guest's
init prints /proc/diskstats for the disk on the serial console before and after its
workload (reads, writes, an fsync, a failed read and a failed write), then idles,
or repeats the workload until QEMU is stopped.
"""

from __future__ import annotations

import lzma
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.sources.qemu.qmp import qmp_command
from streams.sources.qemu.trace import TRACE_EVENTS

KERNEL_META_PACKAGE = "linux-image-cloud-amd64"
MODULES = ("virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
           "virtio_pci", "virtio_blk")
DISK_BYTES = 64 << 20
READ_ERROR_SECTOR = 32768  # blkdebug fails every read of it (dd skip=4096 of 4 KiB)
WRITE_ERROR_SECTOR = 65536  # ... and every write (dd seek=8192)
DISKSTATS_FIELDS = (
    "reads", "reads_merged", "sectors_read", "ms_reading", "writes", "writes_merged",
    "sectors_written", "ms_writing", "in_flight", "ms_io", "ms_weighted", "discards",
    "discards_merged", "sectors_discarded", "ms_discarding", "flushes", "ms_flushing",
)
BLKDEBUG_CONF = f"""\
[inject-error]
event = "read_aio"
errno = "5"
sector = "{READ_ERROR_SECTOR}"

[inject-error]
event = "write_aio"
errno = "5"
sector = "{WRITE_ERROR_SECTOR}"
"""
# The guest's /init. Direct I/O, so that each dd block is one request the guest counts.
INIT_SCRIPT = """\
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for m in {modules}; do insmod /lib/modules/$m.ko || echo "IOACCT-ERROR insmod $m"; done
i=0; while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done
stats() {{ echo "IOACCT-DISKSTATS-$1 $(grep ' vda ' /proc/diskstats)"; }}
workload() {{
  dd if=/dev/vda of=/dev/null bs=4096 count={reads} iflag=direct 2>/dev/null
  dd if=/dev/zero of=/dev/vda bs=65536 count={writes} seek=16 oflag=direct conv=fsync 2>/dev/null
  dd if=/dev/vda of=/dev/null bs=4096 count=1 skip={read_error_block} iflag=direct 2>/dev/null \\
    && echo "IOACCT-ERROR the injected read error did not happen"
  dd if=/dev/zero of=/dev/vda bs=4096 count=1 seek={write_error_block} oflag=direct 2>/dev/null \\
    && echo "IOACCT-ERROR the injected write error did not happen"
}}
stats BEFORE
n=0
while true; do
  workload; n=$((n+1))
  stats AFTER; echo "IOACCT-WORKLOAD-DONE $n"
  grep -q ioacct.loop=1 /proc/cmdline || break
  sleep 2
done
while true; do sleep 1000; done
"""


class GuestError(RuntimeError):
    """QEMU, busybox or the kernel cannot be had, or the guest did not do its work."""


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path
    modules_dir: Path


def _need(program: str) -> str:
    found = shutil.which(program) or next(
        (p for p in (f"/usr/bin/{program}", f"/bin/{program}") if os.access(p, os.X_OK)), None)
    if found is None:
        raise GuestError(f"{program} not found: install the Debian packages with "
                         "`bash deploy/debian-packages.sh qemu` (qemu-system-x86, busybox-static)")
    return found


def _run(args: list[str], cwd: Path) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise GuestError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def fetch_kernel(cache_dir: Path) -> tuple[Path, Path]:
    """The cloud kernel and its virtio modules, downloaded once with apt-get download."""
    kernel_dir = cache_dir / "kernel"
    vmlinuz, modules = kernel_dir / "vmlinuz", kernel_dir / "modules"
    if (kernel_dir / ".complete").exists():
        return vmlinuz, modules
    cache_dir.mkdir(parents=True, exist_ok=True)
    _need("apt-get")
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp_name:
        tmp = Path(tmp_name)
        _run(["apt-get", "download", KERNEL_META_PACKAGE], tmp)
        meta = next(tmp.glob("*.deb"))
        package = _run(["dpkg-deb", "-f", str(meta), "Depends"], tmp).split()[0]
        _run(["apt-get", "download", package], tmp)
        deb = next(tmp.glob(f"{package}_*.deb"))
        _run(["dpkg-deb", "-x", str(deb), "root"], tmp)
        staged = tmp / "kernel"
        (staged / "modules").mkdir(parents=True)
        shutil.copy(next((tmp / "root/boot").glob("vmlinuz-*")), staged / "vmlinuz")
        for name in MODULES:
            _copy_module(tmp / "root/lib/modules", name, staged / "modules")
        (staged / ".complete").write_text(package + "\n")
        shutil.rmtree(kernel_dir, ignore_errors=True)
        staged.rename(kernel_dir)
    return vmlinuz, modules


def _copy_module(tree: Path, name: str, out_dir: Path) -> None:
    """Copy NAME.ko (decompressing .ko.xz) from the unpacked kernel package."""
    found = sorted(tree.rglob(f"{name}.ko")) + sorted(tree.rglob(f"{name}.ko.xz"))
    if not found:
        raise GuestError(f"kernel module {name} not in the kernel package")
    data = found[0].read_bytes()
    if found[0].suffix == ".xz":
        data = lzma.decompress(data)
    (out_dir / f"{name}.ko").write_bytes(data)


def _cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """An uncompressed initramfs: (path, mode, content) in the kernel's newc format."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], 1):
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def build_image(cache_dir: Path, reads: int = 2000, writes: int = 100) -> GuestImage:
    """Kernel (cached), and an initramfs with the workload (rebuilt: it is small)."""
    busybox = Path(_need("busybox"))
    if not _is_static(busybox.read_bytes()):
        raise GuestError(f"{busybox} is not statically linked: install busybox-static")
    vmlinuz, modules = fetch_kernel(cache_dir)
    init = INIT_SCRIPT.format(modules=" ".join(MODULES), reads=reads, writes=writes,
                              read_error_block=READ_ERROR_SECTOR // 8,
                              write_error_block=WRITE_ERROR_SECTOR // 8)
    dirs = [(d, 0o40755, b"") for d in ("bin", "dev", "proc", "sys", "lib", "lib/modules")]
    files = [("init", 0o100755, init.encode()), ("bin/busybox", 0o100755, busybox.read_bytes())]
    files += [(f"lib/modules/{m}.ko", 0o100644, (modules / f"{m}.ko").read_bytes())
              for m in MODULES]
    initrd = cache_dir / f"initrd-{reads}-{writes}.cpio"
    initrd.write_bytes(_cpio_newc(dirs + files))
    return GuestImage(vmlinuz, initrd, modules)


def _is_static(elf: bytes) -> bool:
    """An ELF64 executable without a PT_INTERP program header (no dynamic loader)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        return False
    phoff = int.from_bytes(elf[0x20:0x28], "little")
    size, count = (int.from_bytes(elf[o:o + 2], "little") for o in (0x36, 0x38))
    types = (int.from_bytes(elf[phoff + i * size:phoff + i * size + 4], "little")
             for i in range(count))
    return 3 not in types


def parse_diskstats(line: str) -> dict[str, int]:
    """`MAJOR MINOR NAME field...` of /proc/diskstats -> DISKSTATS_FIELDS by name."""
    values = line.split()[3:]
    return {name: int(v) for name, v in zip(DISKSTATS_FIELDS, values, strict=False)}


@dataclass
class Guest:
    """A running guest: its QEMU process and the files it writes."""

    process: subprocess.Popen[bytes]
    workdir: Path
    trace_path: Path
    serial_path: Path
    qmp_socket: Path

    def serial(self) -> str:
        return self.serial_path.read_text(errors="replace") if self.serial_path.exists() else ""

    def wait_for(self, marker: str, timeout_s: float = 300) -> str:
        """The first serial console line starting with ``marker``; fails if QEMU exits."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.serial().splitlines():
                if line.startswith("IOACCT-ERROR"):
                    raise GuestError(f"the guest says: {line}\n{self.log_tail()}")
                if line.startswith(marker):
                    return line
            if self.process.poll() is not None:
                raise GuestError(f"QEMU exited with {self.process.returncode}\n{self.log_tail()}")
            time.sleep(0.2)
        raise GuestError(f"no {marker!r} on the serial console after {timeout_s:.0f} s\n"
                         + self.log_tail())

    def diskstats(self, which: str) -> dict[str, int]:
        """The guest's /proc/diskstats for vda, BEFORE or AFTER the workload."""
        line = self.wait_for(f"IOACCT-DISKSTATS-{which}")
        return parse_diskstats(line.split(" ", 1)[1])

    def blockstats(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = qmp_command(str(self.qmp_socket), "query-blockstats")
        return entries

    def log_tail(self, lines: int = 30) -> str:
        log = self.workdir / "qemu.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return "--- qemu.log\n" + "\n".join(text.splitlines()[-lines:]) + \
            "\n--- serial\n" + "\n".join(self.serial().splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                qmp_command(str(self.qmp_socket), "quit", timeout_s=5)
                self.process.wait(timeout=10)
            except (OSError, RuntimeError, subprocess.TimeoutExpired):
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()


def qemu_command(image: GuestImage, workdir: Path, loop: bool) -> list[str]:
    """The QEMU command line; the trace flags are the ones docs/qemu.md gives."""
    drive = (f"file=blkdebug:{workdir / 'blkdebug.conf'}:{workdir / 'disk.img'},format=raw,"
             "if=none,id=vol0,rerror=report,werror=report,cache=writeback")
    append = "console=ttyS0 quiet loglevel=3 panic=-1" + (" ioacct.loop=1" if loop else "")
    trace = [arg for event in TRACE_EVENTS for arg in ("-trace", f"enable={event}")]
    return [
        _need("qemu-system-x86_64"), "-nodefaults", "-no-user-config",
        "-machine", "q35,accel=tcg", "-m", "256", "-smp", "1", "-display", "none",
        "-no-reboot", "-kernel", str(image.kernel), "-initrd", str(image.initrd),
        "-append", append, "-drive", drive, "-device", "virtio-blk-pci,drive=vol0,id=disk0",
        "-serial", f"file:{workdir / 'serial.log'}",
        "-qmp", f"unix:{workdir / 'qmp.sock'},server=on,wait=off",
        *trace, "-msg", "timestamp=on", "-D", str(workdir / "trace.log"),
    ]


def start_guest(workdir: Path, cache_dir: Path, loop: bool = False, reads: int = 2000,
                writes: int = 100) -> Guest:
    """Boot the guest; it starts its workload as soon as the disk is there."""
    image = build_image(cache_dir, reads, writes)
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("trace.log", "serial.log", "qmp.sock"):
        (workdir / name).unlink(missing_ok=True)
    (workdir / "blkdebug.conf").write_text(BLKDEBUG_CONF)
    with open(workdir / "disk.img", "wb") as disk:
        disk.truncate(DISK_BYTES)
    with open(workdir / "qemu.log", "wb") as log:
        process = subprocess.Popen(qemu_command(image, workdir, loop), cwd=workdir,
                                   stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    guest = Guest(process, workdir, workdir / "trace.log", workdir / "serial.log",
                  workdir / "qmp.sock")
    deadline = time.monotonic() + 30
    while not guest.qmp_socket.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            guest.stop()
            raise GuestError(f"QEMU did not start its QMP socket\n{guest.log_tail()}")
        time.sleep(0.05)
    return guest
