"""Anchor (i), quix-streams: what a Python user writes for the bench's job with quix-streams.

Reads the raw topic's IoBatch2 records (fastavro with the schema file, after the 10-byte
single-object header; numpy for the packed little-endian columns), explodes each record
into one row per event, re-keys the rows by volume (``group_by``: a repartition topic),
and aggregates 1 s tumbling windows in event time (``complete_ns``) with count, bytes and
latency sum/min/max (quix's RocksDB state with its changelog topic), every update of a
window (``current()``) published to the output topic as JSON.

Imports nothing from ``streams``: it is the peer's program, run as
``python -m streams.tools.bench.quix_anchor ...`` by ``anchors.py``; quixstreams comes
with the ``bench`` extra (pyproject.toml).
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import fastavro
import numpy as np

HEADER_BYTES = 10  # single-object encoding: 0xC3 0x01 and the 8-byte schema fingerprint
NS_PER_MS = 1_000_000


def explode(payload: bytes, schema: Any) -> list[dict[str, Any]]:
    """One IoBatch2 record as one row per event: volume, bytes, latency, event time (ms)."""
    if payload[:2] != b"\xc3\x01":
        raise ValueError("not an Avro single-object encoded record")
    record: dict[str, Any] = fastavro.schemaless_reader(  # type: ignore[assignment]
        io.BytesIO(payload[HEADER_BYTES:]), schema, None)
    ids = [ref["volume_id"] for ref in record["volumes"]]
    index = np.frombuffer(record["volume"], "<u4").tolist()
    nbytes = np.frombuffer(record["bytes"], "<i8").tolist()
    submit = np.frombuffer(record["submit_ns"], "<i8").tolist()
    complete = np.frombuffer(record["complete_ns"], "<i8").tolist()
    return [{"volume": ids[v], "bytes": b, "latency_ns": c - s, "complete_ms": c // NS_PER_MS}
            for v, b, s, c in zip(index, nbytes, submit, complete, strict=True)]


def window_row(window: dict[str, Any], key: Any, _ts: int, _headers: Any) -> dict[str, Any]:
    return {"volume": key, "start_ms": window["start"], "count": window["count"],
            "bytes": window["bytes"], "latency_sum_ns": window["latency_sum_ns"],
            "latency_min_ns": window["latency_min_ns"],
            "latency_max_ns": window["latency_max_ns"]}


def build(args: argparse.Namespace) -> Any:
    """The quix Application with its one dataframe."""
    from quixstreams import Application
    from quixstreams.dataframe.windows import Count, Max, Min, Sum

    schema = fastavro.parse_schema(json.loads(Path(args.schema).read_text()))
    app = Application(broker_address=args.bootstrap, consumer_group=args.group,
                      auto_offset_reset="earliest", commit_interval=args.commit_s,
                      state_dir=args.state_dir, loglevel=args.loglevel)
    raw = app.topic(args.input, key_deserializer="bytes", value_deserializer="bytes")
    out = app.topic(args.output, key_serializer="json", value_serializer="json")
    sdf = app.dataframe(raw)
    sdf = sdf.apply(lambda payload: explode(payload, schema), expand=True)
    sdf = sdf.set_timestamp(lambda row, _key, _ts, _headers: row["complete_ms"])
    sdf = sdf.group_by("volume")
    sdf = sdf.tumbling_window(1000, grace_ms=args.grace_ms).agg(
        count=Count(), bytes=Sum("bytes"), latency_sum_ns=Sum("latency_ns"),
        latency_min_ns=Min("latency_ns"), latency_max_ns=Max("latency_ns")).current()
    sdf = sdf.apply(window_row, metadata=True)
    sdf.to_topic(out)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="quix_anchor")
    for name in ("bootstrap", "input", "output", "group", "schema", "state_dir"):
        parser.add_argument(f"--{name.replace('_', '-')}", required=True)
    parser.add_argument("--grace-ms", type=int, required=True)
    parser.add_argument("--commit-s", type=float, required=True)
    parser.add_argument("--loglevel", default="WARNING")
    build(parser.parse_args(argv)).run()


if __name__ == "__main__":
    main()
