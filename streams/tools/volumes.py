"""`ioacct volume register VOL --tenant T` and `ioacct volume list`: the volume registry
(docs/access.md, "The volume registry"), read to its end before answering."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime

import orjson
from aiokafka.errors import KafkaError

from streams.config import Settings
from streams.kafka.registry import RegistryError, read_registry, register_volumes
from streams.kafka.security import SecurityError
from streams.kafka.topics import TopicsError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["register", "list"])
    parser.add_argument("volume_id", nargs="?", help="register: the volume")
    parser.add_argument("--tenant", help="register: its owner; list: only this tenant's")
    parser.add_argument("--json", action="store_true", help="list: JSON lines")


def _when(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _register(args: argparse.Namespace, settings: Settings) -> int:
    if not args.volume_id or not args.tenant:
        print("usage: ioacct volume register VOLUME --tenant TENANT", file=sys.stderr)
        return 2
    report = asyncio.run(register_volumes(settings, [(args.volume_id, args.tenant)]))
    if report.refused:
        print(f"ioacct volume register: {report.refused[0]}", file=sys.stderr)
        return 1
    if report.registered:
        print(f"volume {args.volume_id} registered to tenant {args.tenant}")
    else:
        when = _when(report.unchanged[0].registered_at_ns)
        print(f"volume {args.volume_id} was registered to tenant {args.tenant} already "
              f"({when}); nothing changed")
    return 0


def _list(args: argparse.Namespace, settings: Settings) -> int:
    rows = [r for r in asyncio.run(read_registry(settings))
            if args.tenant is None or r.tenant_id == args.tenant]
    for r in rows:
        if args.json:
            print(orjson.dumps(r.to_avro()).decode())
        else:
            print(f"{r.volume_id:30}  {r.tenant_id:20}  {_when(r.registered_at_ns)}  "
                  f"{r.registered_by}")
    if not args.json:
        print(f"{len(rows)} volume(s)", file=sys.stderr)
    return 0


def cli_volume(args: argparse.Namespace, settings: Settings) -> int:
    try:
        if args.action == "register":
            return _register(args, settings)
        return _list(args, settings)
    except (RegistryError, SecurityError, KafkaError, TopicsError) as exc:
        print(f"ioacct volume {args.action}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
