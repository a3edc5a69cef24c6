"""`ioacct audit`: replay the raw topic with a fresh consumer and diff the published records.

The audit of SEMANTICS.md section 6, put together: the topics are read in
:mod:`streams.audit.read`, recounted in :mod:`streams.audit.replay`, compared in
:mod:`streams.audit.compare` and reported in :mod:`streams.audit.report`.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka.errors import KafkaError

from streams.audit.compare import compare
from streams.audit.ledgers import BillingLedger, WindowLedger
from streams.audit.read import AuditError, read_topics
from streams.audit.replay import Replay
from streams.audit.report import AuditReport
from streams.audit.scope import Scope
from streams.config import Settings
from streams.core.codec import default_schemas
from streams.core.events import id_error
from streams.core.ingest import Limits
from streams.core.registry import REGISTRY_OFF
from streams.core.times import NS_PER_S, parse_time_ns
from streams.core.windows.acc import WINDOW_LENGTHS_NS
from streams.core.windows.book import WindowSettings
from streams.kafka.registry import read_registry

# An hour or window that ended less than grace + idle timeout + this before the audit
# started may still be open in the workers: missing is then not a difference.
SETTLE_MARGIN_NS = 60 * NS_PER_S
EXIT_OK, EXIT_DIFFERENCES, EXIT_ERROR = 0, 1, 2


async def audit(settings: Settings, from_ns: int, to_ns: int, volume: str | None = None,
                progress: bool = True) -> AuditReport:
    started = time.monotonic()
    started_wall_ns = time.time_ns()
    scope = Scope(from_ns, to_ns, volume)
    schemas = default_schemas()
    limits = Limits(settings.retention_s * NS_PER_S, settings.future_tolerance_s * NS_PER_S,
                    settings.max_events_per_record)
    window_settings = WindowSettings(int(settings.grace_s * NS_PER_S),
                                     int(settings.idle_timeout_s * NS_PER_S),
                                     settings.revision_horizon_s * NS_PER_S)
    replay = Replay(scope, limits, schemas, await _registry_lookup(settings), window_settings)
    billing = BillingLedger(scope, schemas)
    windows = [WindowLedger(n, scope, schemas) for n in WINDOW_LENGTHS_NS]
    replay_seconds = await read_topics(settings, replay, billing, windows, started_wall_ns,
                                       progress)
    open_after_ns = (started_wall_ns - int(settings.grace_s * NS_PER_S)
                     - int(settings.idle_timeout_s * NS_PER_S) - SETTLE_MARGIN_NS)
    comparison = compare(replay, billing, windows, open_after_ns,
                         settings.revision_horizon_s * NS_PER_S)
    report = AuditReport.build(replay, billing, windows, comparison, replay_seconds,
                               time.monotonic() - started)
    if progress:
        print(f"ioacct audit: replayed {report.records_replayed:,} raw records "
              f"({report.events_replayed:,} events) in {replay_seconds:.1f} s: "
              f"{report.rate_events_per_s:,.0f} events/s, "
              f"{report.rate_records_per_s:,.0f} records/s; whole audit "
              f"{report.seconds:.1f} s", file=sys.stderr)
    return report


async def _registry_lookup(settings: Settings) -> Callable[[str], str | None] | None:
    """The registry as of now (read to its end once), as the worker's rule applies it."""
    if settings.volume_registry == REGISTRY_OFF:
        return None
    try:
        return (await read_registry(settings)).tenant_of
    except (KafkaError, OSError) as exc:
        raise AuditError(f"cannot reach Kafka at {settings.bootstrap_servers} to read the "
                         f"volume registry: {exc}") from exc


def run_audit(settings: Settings, from_ns: int, to_ns: int, volume: str | None = None,
              progress: bool = True) -> AuditReport:
    """Replay the raw topic and compare it with the published billing and stats records.

    Raises AuditError when the audit cannot run; ValueError for an empty range.
    """
    return asyncio.run(audit(settings, from_ns, to_ns, volume, progress))


def cli_audit(args: Any, settings: Settings) -> int:
    """`ioacct audit`: 0 when everything agrees, 1 on any difference, 2 when it cannot run."""
    audit_range = _audit_range(args)
    if audit_range is None:
        return EXIT_ERROR
    try:
        report = run_audit(settings, *audit_range, args.volume, progress=True)
    except AuditError as exc:
        print(f"ioacct audit: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        sys.stdout.write(orjson.dumps(report.to_json()).decode() + "\n")
    else:
        sys.stdout.write(report.text() + "\n")
    return EXIT_OK if report.ok else EXIT_DIFFERENCES


def _audit_range(args: Any) -> tuple[int, int] | None:
    """--from and --to in ns, with --volume checked; None (said on stderr) when wrong."""
    now_ns = time.time_ns()
    times = []
    for flag, text in (("--from", args.from_), ("--to", args.to)):
        try:
            times.append(parse_time_ns(text, now_ns))
        except ValueError as exc:
            print(f"ioacct audit: cannot read {flag} {text!r} (epoch ns, ISO 8601 or now-2h): "
                  f"{exc}", file=sys.stderr)
            return None
    from_ns, to_ns = times
    if to_ns <= from_ns:
        print(f"ioacct audit: --to ({to_ns}) must be after --from ({from_ns})", file=sys.stderr)
        return None
    if args.volume is not None and (reason := id_error("volume_id", args.volume)):
        print(f"ioacct audit: {reason}", file=sys.stderr)
        return None
    return from_ns, to_ns
