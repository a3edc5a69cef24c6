"""Checkpoints of the worker's RocksDB tables: a worker killed -9 restarts from disk.

faust writes a table value to RocksDB at once and queues its changelog message in the
same synchronous call; Kafka acknowledges the message later. So a killed worker's
databases may hold values the changelog never got, and tables.py drops them. A RocksDB
checkpoint (hard links of the immutable SST files, a copy of the rest) holds a consistent
prefix of each database's writes, all made before it was taken; once every changelog
message queued before then is acknowledged, the checkpoint holds nothing the changelog
lacks and is made *valid* (a rename). A worker that starts after an unclean stop restores
the newest valid checkpoint, and faust reads each partition's changelog from the offset
kept in it (faust's persisted offset, acknowledged before the checkpoint) to the end: the
writes after the checkpoint that landed are redone, in order, and nothing else is there.

Only with ``at_least_once``: with Kafka transactions an acknowledged message may still be
aborted, so ``exactly_once`` keeps dropping the tables after an unclean stop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rocksdict import Checkpoint

log = logging.getLogger(__name__)
CHECKPOINTS = "checkpoints"
VALID, PENDING = "valid-", "pending-"


class SendLedger:
    """Which changelog sends Kafka has acknowledged, by the order they were queued in."""

    def __init__(self) -> None:
        self.issued = 0  # sends queued so far; send n is the n-th (1-based)
        self.outstanding: set[int] = set()
        self.first_out = 1  # the first send not acknowledged (sends before it all were)
        self.failed = 0  # sends that did not land: no checkpoint is made valid after one

    def issue(self) -> int:
        self.issued += 1
        self.outstanding.add(self.issued)
        return self.issued

    def done(self, seq: int, landed: bool) -> None:
        if not landed:
            self.failed += 1
            return
        self.outstanding.discard(seq)
        while self.first_out <= self.issued and self.first_out not in self.outstanding:
            self.first_out += 1  # each send passed once: O(1) a send, however many wait

    def landed_through(self, seq: int) -> bool:
        """Whether sends 1..seq were all acknowledged (and none failed)."""
        return not self.failed and self.first_out > seq

    async def wait_landed(self, seq: int, timeout_s: float, poll_s: float = 0.05) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self.landed_through(seq):
            if self.failed or time.monotonic() >= deadline:
                return False
            await asyncio.sleep(poll_s)
        return True


def watch_sends(table: Any, ledger: SendLedger) -> None:
    """Count ``table``'s changelog sends in ``ledger`` (faust calls ``self.send_changelog``
    for every write and delete; an instance attribute takes its place)."""
    send = table.send_changelog

    def counted(*args: Any, **kwargs: Any) -> Any:
        fut = send(*args, **kwargs)
        seq = ledger.issue()
        fut.add_done_callback(lambda f: ledger.done(
            seq, not f.cancelled() and f.exception() is None))
        return fut

    table.send_changelog = counted


def _numbered(root: Path, prefix: str) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    return sorted((int(p.name[len(prefix):]), p) for p in root.iterdir()
                  if p.name.startswith(prefix) and p.name[len(prefix):].isdigit())


def newest_valid(tabledir: Path) -> Path | None:
    found = _numbered(tabledir / CHECKPOINTS, VALID)
    return found[-1][1] if found else None


def _link_or_copy(src: str, dst: str) -> None:
    """SST files never change once written: a hard link; the rest (MANIFEST, WAL, ...) a
    copy, as RocksDB's own checkpoint does, so the opened database cannot touch them."""
    if src.endswith(".sst"):
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copy2(src, dst)


def restore_newest(tabledir: Path) -> Path | None:
    """After an unclean stop: every database in ``tabledir`` replaced by the newest valid
    checkpoint's (kept, for a crash in the middle of this). None: there was none, and
    ``tabledir`` is emptied but for the checkpoints."""
    chosen = newest_valid(tabledir)
    for entry in tabledir.iterdir() if tabledir.is_dir() else ():
        if entry.name != CHECKPOINTS:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    for _, pending in _numbered(tabledir / CHECKPOINTS, PENDING):
        shutil.rmtree(pending)  # never valid: some of its writes may not have landed
    if chosen is not None:
        for db in chosen.iterdir():
            shutil.copytree(db, tabledir / db.name, copy_function=_link_or_copy)
    return chosen


def drop_checkpoints(tabledir: Path) -> None:
    """After a clean stop the databases are newer than any checkpoint."""
    shutil.rmtree(tabledir / CHECKPOINTS, ignore_errors=True)


class TableCheckpoints:
    """Takes a checkpoint of every open table database now and then, and makes it valid
    once the changelog sends queued before it were acknowledged (module doc)."""

    def __init__(self, tabledir: Path, databases: Callable[[], Iterable[tuple[str, Any]]],
                 ledger: SendLedger, keep: int = 2) -> None:
        self.root = tabledir / CHECKPOINTS
        self.databases = databases  # (directory name, open Rdict) of every table partition
        self.ledger = ledger
        self.keep = keep  # valid checkpoints kept (the newest is restored)
        found = _numbered(self.root, VALID) + _numbered(self.root, PENDING)
        self.number = max((n for n, _ in found), default=0)
        self.made_valid = 0

    def take(self, databases: list[tuple[str, Any]]) -> Path:
        """A checkpoint of ``databases`` as pending (in a thread: RocksDB flushes each
        database's memtable; faust goes on writing meanwhile)."""
        self.number += 1
        pending = self.root / f"{PENDING}{self.number}"
        pending.mkdir(parents=True)
        for name, db in databases:
            Checkpoint(db).create_checkpoint(str(pending / name))
        return pending

    def make_valid(self, pending: Path) -> Path:
        valid = pending.with_name(f"{VALID}{self.number}")
        pending.rename(valid)  # atomic: a restart sees it whole or not at all
        for _, old in _numbered(self.root, VALID)[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        self.made_valid += 1
        return valid

    async def once(self, timeout_s: float) -> Path | None:
        """Take one; valid once its sends landed, dropped if they did not in time."""
        databases = list(self.databases())  # on the loop: faust changes the set there
        try:
            pending = await asyncio.to_thread(self.take, databases)
        except Exception as exc:  # noqa: BLE001 (disk full, ...: the last valid one stays)
            shutil.rmtree(self.root / f"{PENDING}{self.number}", ignore_errors=True)
            log.warning("table checkpoint %d not taken: %s", self.number, exc)
            return None
        sends = self.ledger.issued  # read after: every write in it was queued by now
        if await self.ledger.wait_landed(sends, timeout_s):
            return self.make_valid(pending)
        shutil.rmtree(pending, ignore_errors=True)
        log.warning("table checkpoint %s dropped: its changelog sends did not land in %.0f s",
                    pending.name, timeout_s)
        return None
