"""Avro single-object encoding of every record the pipeline reads or writes.

Pure logic: no faust, no aiokafka. ``schemas/*.avsc`` are the source of truth;
``schemas/history/*.avsc`` keeps every version ever published, so a reader can
resolve records written with any older version (Avro schema resolution).

Wire form (Avro specification, "single-object encoding"):
``0xC3 0x01`` + 8-byte little-endian CRC-64-AVRO fingerprint of the writer
schema's canonical form + the Avro binary body.
"""

from __future__ import annotations

import io
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

MAGIC = b"\xc3\x01"
HEADER_LEN = len(MAGIC) + 8
SCHEMA_DIR = Path(
    os.environ.get("IOACCT_SCHEMA_DIR", Path(__file__).resolve().parents[2] / "schemas")
)


class CodecError(ValueError):
    """A payload that is not a record of a known schema; the message is the reason."""


def _load(path: Path) -> dict[str, Any]:
    schema = fastavro.parse_schema(fastavro.schema.load_schema(str(path)), _write_hint=False)
    return schema  # type: ignore[return-value]


def schema_fingerprint(parsed_schema: dict[str, Any]) -> bytes:
    """The 8 fingerprint bytes of single-object encoding for a parsed schema."""
    canonical = to_parsing_canonical_form(parsed_schema)
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


class SchemaSet:
    """The current schemas by record name, and every known writer version by fingerprint."""

    def __init__(self, schema_dir: Path = SCHEMA_DIR) -> None:
        self.current: dict[str, dict[str, Any]] = {}
        self.headers: dict[str, bytes] = {}
        self.writers: dict[bytes, tuple[str, dict[str, Any]]] = {}
        for path in sorted(schema_dir.glob("*.avsc")):
            schema = _load(path)
            name = schema["name"].rsplit(".", 1)[-1]
            self.current[name] = schema
            self.headers[name] = MAGIC + schema_fingerprint(schema)
        for path in sorted(schema_dir.glob("history/*.avsc")) + sorted(schema_dir.glob("*.avsc")):
            schema = _load(path)
            name = schema["name"].rsplit(".", 1)[-1]
            self.writers[schema_fingerprint(schema)] = (name, schema)

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        """Encode ``record`` with the current schema ``name``."""
        buf = io.BytesIO()
        buf.write(self.headers[name])
        fastavro.schemaless_writer(buf, self.current[name], record)
        return buf.getvalue()

    def decode(self, payload: bytes, expect: str | None = None) -> tuple[str, dict[str, Any]]:
        """Decode a payload into (record name, record in the current schema's shape).

        Raises CodecError with a readable reason for anything that is not a whole
        record of a known schema (or not of ``expect``, when given).
        """
        if len(payload) < HEADER_LEN or payload[:2] != MAGIC:
            raise CodecError(f"not Avro single-object encoded ({len(payload)} bytes, "
                             f"header {payload[:2].hex() or 'empty'})")
        known = self.writers.get(payload[2:HEADER_LEN])
        if known is None:
            raise CodecError(f"unknown writer schema fingerprint {payload[2:HEADER_LEN].hex()}")
        name, writer = known
        if expect is not None and name != expect:
            raise CodecError(f"expected a {expect} record, got {name}")
        body = io.BytesIO(payload)
        body.seek(HEADER_LEN)
        try:
            # written with the current schema (the usual case): no resolution to do, and
            # fastavro decodes ~25 % faster without a reader schema
            reader = None if self.headers[name] == payload[:HEADER_LEN] else self.current[name]
            record = fastavro.schemaless_reader(body, writer, reader)
        except Exception as exc:  # fastavro raises EOFError, ValueError, IndexError, ...
            raise CodecError(f"undecodable {name} body: {type(exc).__name__}: {exc}") from exc
        if body.tell() != len(payload):
            raise CodecError(f"{len(payload) - body.tell()} trailing bytes after the {name} body")
        return name, record  # type: ignore[return-value]


@lru_cache(maxsize=1)
def default_schemas() -> SchemaSet:
    """The schema set of this checkout, loaded once per process."""
    return SchemaSet()
