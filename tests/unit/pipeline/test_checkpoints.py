"""Checkpoints of the tables (pipeline/checkpoints.py) on real RocksDB databases: a
checkpoint is made valid only once every changelog send queued before it landed, and a
worker started after a kill gets exactly the newest valid checkpoint's databases."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from faust.stores.rocksdb import RocksDBOptions
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.config import Settings
from streams.pipeline.checkpoints import (
    CHECKPOINTS,
    SendLedger,
    TableCheckpoints,
    newest_valid,
    restore_newest,
    watch_sends,
)
from streams.pipeline.tables import CLEAN_MARK, KEPT, REBUILT, RESTORED, open_tables_dir


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_sends_landed_through_n_only_when_the_first_n_all_landed(data: st.DataObject) -> None:
    """Against the plain definition, acknowledgements in any order (Kafka's partitions
    acknowledge independently), a failed send holding everything back."""
    ledger = SendLedger()
    n = data.draw(st.integers(0, 12))
    seqs = [ledger.issue() for _ in range(n)]
    order = data.draw(st.permutations(seqs))
    fail = data.draw(st.sampled_from([None, *seqs])) if seqs else None
    for i, seq in enumerate(order):
        ledger.done(seq, landed=seq != fail)
        failed_yet = fail in order[: i + 1]
        acked = set(order[: i + 1]) - {fail}
        for k in range(n + 1):
            assert ledger.landed_through(k) == (not failed_yet and set(range(1, k + 1)) <= acked)


class _Table:
    """What watch_sends needs of a faust table: ``send_changelog`` returning the send's
    future (asyncio's, as faust's FutureMessage is)."""

    def __init__(self) -> None:
        self.sent: list[asyncio.Future[Any]] = []

    def send_changelog(self, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append(fut)
        return fut


def _db(path: Path) -> Any:
    return RocksDBOptions().open(path)


def _content(path: Path) -> dict[bytes, bytes]:
    db = _db(path)
    try:
        return dict(db.items())
    finally:
        db.close()


async def _checkpoint_run(tabledir: Path) -> tuple[TableCheckpoints, list[Path | None]]:
    """Two databases written through tables whose sends land late or never."""
    ledger = SendLedger()
    table = _Table()
    watch_sends(table, ledger)
    dbs = {f"t-{p}.db": _db(tabledir / f"t-{p}.db") for p in (0, 1)}
    checkpoints = TableCheckpoints(tabledir, lambda: dbs.items(), ledger)

    def write(name: str, key: bytes, value: bytes) -> None:  # as faust: put, then send
        dbs[name].put(key, value)
        table.send_changelog(key, value)

    write("t-0.db", b"a", b"1")
    write("t-1.db", b"b", b"1")
    table.sent[1].set_result(None)
    taking = asyncio.ensure_future(checkpoints.once(timeout_s=5))
    await asyncio.sleep(0.3)
    assert not taking.done()  # send 1 is out: the checkpoint may hold what never lands
    write("t-0.db", b"a", b"2")  # after the checkpoint: not in it
    table.sent[2].set_result(None)
    await asyncio.sleep(0.2)
    assert not taking.done()  # a later send landing does not stand for send 1
    table.sent[0].set_result(None)
    first = await taking
    write("t-1.db", b"c", b"3")  # its send never lands
    second = await checkpoints.once(timeout_s=0.3)
    for db in dbs.values():
        db.close()
    return checkpoints, [first, second]


def test_a_checkpoint_is_valid_once_its_sends_landed_and_dropped_if_they_do_not(
    tmp_path: Path,
) -> None:
    tabledir = tmp_path / "tables"
    tabledir.mkdir()
    checkpoints, (first, second) = asyncio.run(_checkpoint_run(tabledir))
    assert first is not None and first.name == "valid-1"
    assert second is None and checkpoints.made_valid == 1
    assert sorted(p.name for p in (tabledir / CHECKPOINTS).iterdir()) == ["valid-1"]
    assert _content(first / "t-0.db") == {b"a": b"1"}  # the write after it is not there
    assert _content(first / "t-1.db") == {b"b": b"1"}

    assert restore_newest(tabledir) == first
    assert _content(tabledir / "t-0.db") == {b"a": b"1"}
    assert _content(tabledir / "t-1.db") == {b"b": b"1"}  # not c: its send never landed
    assert _content(first / "t-0.db") == {b"a": b"1"}  # kept, and untouched by the open


def test_the_newest_valid_checkpoint_is_restored_and_the_rest_cleared(tmp_path: Path) -> None:
    tabledir = tmp_path / "tables"
    root = tabledir / CHECKPOINTS
    for name, value in (("valid-3", b"3"), ("valid-12", b"12"), ("pending-13", b"13")):
        db = _db(root / name / "t-0.db")
        db.put(b"k", value)
        db.close()
    live = _db(tabledir / "t-0.db")
    live.put(b"k", b"ahead of the changelog")
    live.close()
    (tabledir / "t-5.db").mkdir()  # a partition opened after the checkpoint
    assert newest_valid(tabledir) == root / "valid-12"
    assert restore_newest(tabledir) == root / "valid-12"
    assert _content(tabledir / "t-0.db") == {b"k": b"12"}
    assert not (tabledir / "t-5.db").exists() and not (root / "pending-13").exists()
    assert TableCheckpoints(tabledir, lambda: [], SendLedger()).number == 12


def test_older_valid_checkpoints_are_pruned(tmp_path: Path) -> None:
    async def run() -> list[str]:
        db = _db(tmp_path / "t-0.db")
        checkpoints = TableCheckpoints(tmp_path, lambda: [("t-0.db", db)], SendLedger(),
                                       keep=2)
        for _ in range(4):
            assert await checkpoints.once(timeout_s=1) is not None
        db.close()
        return sorted(p.name for p in (tmp_path / CHECKPOINTS).iterdir())

    assert asyncio.run(run()) == ["valid-3", "valid-4"]


def _killed_with_checkpoint(tables: Path) -> None:
    db = _db(tables / CHECKPOINTS / "valid-1" / "t-0.db")
    db.put(b"k", b"checkpointed")
    db.close()
    live = _db(tables / "t-0.db")
    live.put(b"k", b"live")
    live.close()


def test_a_killed_worker_restores_the_checkpoint_and_a_clean_one_keeps_its_tables(
    tmp_path: Path,
) -> None:
    tables = tmp_path / "tables"
    _killed_with_checkpoint(tables)
    assert open_tables_dir(Settings(), tables) == RESTORED
    assert _content(tables / "t-0.db") == {b"k": b"checkpointed"}

    (tables / CLEAN_MARK).touch()
    assert open_tables_dir(Settings(), tables) == KEPT
    assert not (tables / CHECKPOINTS).exists()  # older than the tables themselves
    assert _content(tables / "t-0.db") == {b"k": b"checkpointed"}


@pytest.mark.parametrize("settings", [Settings(table_checkpoint_s=0),
                                      Settings(processing_guarantee="exactly_once")])
def test_without_checkpoints_a_killed_workers_tables_are_rebuilt(
    tmp_path: Path, settings: Settings,
) -> None:
    """Off, or with transactions (an acknowledged write may yet be aborted)."""
    tables = tmp_path / "tables"
    _killed_with_checkpoint(tables)
    assert open_tables_dir(settings, tables) == REBUILT
    assert list(tables.iterdir()) == []


def test_a_checkpoint_that_fails_leaves_the_last_valid_one(tmp_path: Path) -> None:
    """A database RocksDB cannot checkpoint (here: closed) costs that checkpoint alone."""
    async def run() -> tuple[Path | None, Path | None]:
        db = _db(tmp_path / "t-0.db")
        good = TableCheckpoints(tmp_path, lambda: [("t-0.db", db)], SendLedger())
        first = await good.once(timeout_s=1)
        db.close()
        return first, await good.once(timeout_s=1)

    first, second = asyncio.run(run())
    assert first is not None and second is None
    assert sorted(p.name for p in (tmp_path / CHECKPOINTS).iterdir()) == [first.name]
