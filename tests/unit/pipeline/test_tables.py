"""The tables' store settings, and a worker's local tables kept only after a clean stop."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.config import Settings
from streams.pipeline.tables import CLEAN_MARK, open_tables_dir, store_url, table_options


def test_the_store_is_rocksdb_by_default_and_memory_on_request() -> None:
    assert store_url(Settings()) == "rocksdb://"
    assert store_url(Settings(table_store="memory")) == "memory://"
    assert table_options(Settings(table_store="memory")) is None
    options = table_options(Settings(table_write_buffer_bytes=1 << 20))
    assert options is not None and options["write_buffer_size"] == 1 << 20
    assert table_options(Settings()) is not table_options(Settings())  # faust pops from it


def test_an_unknown_store_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="IOACCT_TABLE_STORE='disk' is not one of"):
        store_url(Settings(table_store="disk"))


def _tables(tmp_path: Path) -> Path:
    tables = tmp_path / "tables"
    (tables / "ioacct-windows-0.db").mkdir(parents=True)
    (tables / "ioacct-windows-0.db" / "CURRENT").write_text("x")
    return tables


def test_tables_left_by_a_clean_stop_are_kept_and_the_mark_taken(tmp_path: Path) -> None:
    tables = _tables(tmp_path)
    (tables / CLEAN_MARK).touch()
    assert open_tables_dir(Settings(), tables)
    assert (tables / "ioacct-windows-0.db" / "CURRENT").exists()
    assert not (tables / CLEAN_MARK).exists()  # running now: a kill leaves no mark


def test_tables_left_by_a_killed_worker_are_dropped(tmp_path: Path) -> None:
    tables = _tables(tmp_path)
    assert not open_tables_dir(Settings(), tables)
    assert tables.exists() and not any(tables.iterdir())


def test_the_memory_store_leaves_the_directory_alone(tmp_path: Path) -> None:
    tables = _tables(tmp_path)
    assert not open_tables_dir(Settings(table_store="memory"), tables)
    assert (tables / "ioacct-windows-0.db" / "CURRENT").exists()
