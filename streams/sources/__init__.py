"""Where events come from: the fleet simulator, fio logs, blkparse traces and QEMU
(``sources.qemu``); each turns its input into SEMANTICS.md events and reports what it
skipped."""
