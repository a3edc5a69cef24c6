"""`ioacct`: the one command-line entry point."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from streams.config import Settings

Handler = Callable[[argparse.Namespace, Settings], int]


def _common(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("pipeline (defaults from IOACCT_* environment variables)")
    g.add_argument("--bootstrap", help="Kafka bootstrap servers (IOACCT_BOOTSTRAP; "
                   "default 127.0.0.1:<kafka port>)")
    g.add_argument("--kafka-port", type=int, help="local broker port (IOACCT_KAFKA_PORT, 9092)")
    g.add_argument("--kafka-controller-port", type=int,
                   help="local broker's KRaft controller port (IOACCT_KAFKA_CONTROLLER_PORT, 9093)")
    g.add_argument("--topic-prefix", help="topic name prefix (IOACCT_TOPIC_PREFIX, ioacct)")
    g.add_argument("--partitions", type=int,
                   help="partitions of the raw topic (IOACCT_PARTITIONS, 8)")
    g.add_argument("--state-dir", help="pids, logs, broker data (IOACCT_STATE_DIR, ./.state)")


def settings_from(args: argparse.Namespace) -> Settings:
    from pathlib import Path

    return Settings.from_env(
        bootstrap=args.bootstrap, kafka_port=args.kafka_port,
        kafka_controller_port=args.kafka_controller_port, topic_prefix=args.topic_prefix,
        partitions=args.partitions,
        state_dir=Path(args.state_dir) if args.state_dir else None,
        web_port=getattr(args, "web_port", None), kafka_brokers=getattr(args, "brokers", None),
    )


def cmd_kafka(args: argparse.Namespace, settings: Settings) -> int:
    from streams.kafka import cluster as kafka_cluster
    from streams.kafka.local import KafkaError

    if args.action == "user":
        from streams.kafka.users import cli_user

        return cli_user(args.rest, args.role, settings)
    try:
        cluster = kafka_cluster.LocalCluster.from_settings(settings)
        if args.action == "start":
            started = kafka_cluster.start(cluster)
            print(f"kafka {'started' if started else 'already running'} on {cluster.bootstrap} "
                  f"(pids {_pids(cluster.pids())}, logs {cluster.home})")
        elif args.action == "stop":
            was = kafka_cluster.stop(cluster)
            print(f"kafka on {cluster.bootstrap} "
                  + (f"stopped (nodes {', '.join(map(str, was))})" if was else "was not running"))
        else:
            nodes = kafka_cluster.status(cluster)
            for node_id, (pid, answers) in nodes.items():
                name = f"node {node_id} " if len(nodes) > 1 else ""
                state = (f"running (pid {pid})" + ("" if answers else ", not answering")
                         if pid else "not running")
                print(f"kafka {name}on {cluster.node(node_id).bootstrap}: {state}")
            return 0 if all(answers for _, answers in nodes.values()) else 3
    except KafkaError as exc:
        print(f"ioacct kafka {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0


def _pids(pids: dict[int, int | None]) -> str:
    return ", ".join(f"{node}: {pid}" for node, pid in pids.items())


def cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    from streams.kafka.topics import TopicsError, ensure_topics

    try:
        created = asyncio.run(ensure_topics(settings))
    except TopicsError as exc:
        print(f"ioacct topics: {exc}", file=sys.stderr)
        return 1
    print("created: " + (", ".join(created) if created else "nothing (all topics exist)"))
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from streams.worker import run_worker

    return run_worker(settings, args.loglevel)


def cmd_produce(args: argparse.Namespace, settings: Settings) -> int:
    from streams.tools.produce import cli_produce

    return cli_produce(args, settings)


def cmd_query(args: argparse.Namespace, settings: Settings) -> int:
    import ssl
    from urllib.parse import quote, urlencode

    from streams.api.tls import caller_context
    from streams.core.events import id_error

    reason = id_error("volume_id", args.volume_id)
    if reason is not None:
        print(f"ioacct query: {reason}", file=sys.stderr)
        return 1
    url = f"{args.url or settings.web_url}/volumes/{quote(args.volume_id, safe='')}/{args.what}"
    if args.what == "stats":
        query = {"window": args.window, "from": args.from_, "to": args.to}
        url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
    token = args.token or os.environ.get("IOACCT_TOKEN")
    if not token:
        print("ioacct query: needs a token: --token or IOACCT_TOKEN "
              "(ioacct token create --tenant T, or --operator)", file=sys.stderr)
        return 1
    try:
        context = caller_context(settings, args.ca_file)
    except (OSError, ssl.SSLError) as exc:
        print(f"ioacct query: cannot use the CA file "
              f"{args.ca_file or settings.web_ca_file or settings.web_cert}: {exc}",
              file=sys.stderr)
        return 1
    return _query(url, token, context)


def _query(url: str, token: str, context: Any) -> int:
    """GET ``url`` with the token; the answer on stdout (exit 0), or why not."""
    import ssl

    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            print(response.read().decode())
            return 0
    except urllib.error.HTTPError as exc:
        print(exc.read().decode(), file=sys.stderr)
        return 2 if exc.code == 404 else 1
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLCertVerificationError):
            print(f"ioacct query: the worker's certificate at {url} is not trusted "
                  f"({exc.reason.verify_message}): give its CA or certificate with "
                  "--ca-file or IOACCT_WEB_CA_FILE", file=sys.stderr)
        else:
            print(f"ioacct query: no worker answers at {url}: {exc.reason}", file=sys.stderr)
        return 1


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    from streams.api import tokens
    from streams.api.auth import OPERATOR, TENANT, AuthError

    try:
        if args.action == "create":
            if (args.tenant is None) == (not args.operator):
                print("ioacct token create: give --tenant T or --operator", file=sys.stderr)
                return 1
            role, tenant = (OPERATOR, None) if args.operator else (TENANT, args.tenant)
            text, record = asyncio.run(tokens.create(settings, role, tenant, args.label))
            who = "operator" if record.tenant_id is None else f"tenant {record.tenant_id}"
            print(f"token {record.token_id} for {who} (shown once; keep it secret):",
                  file=sys.stderr)
            print(text)
        elif args.action == "revoke":
            if not args.token:
                print("ioacct token revoke: name the token (its text or its id)",
                      file=sys.stderr)
                return 1
            record = asyncio.run(tokens.revoke(settings, args.token))
            print(f"token {record.token_id} revoked")
        else:
            book = asyncio.run(tokens.read_book(settings))
            rows = [r.public() for r in book.records()]
            if args.json:
                import orjson

                print(orjson.dumps(rows).decode())
            for r in [] if args.json else rows:
                state = "valid" if r["revoked_ns"] is None else "revoked"
                print(f"{r['token_id']}  {r['role']:8}  {r['tenant_id'] or '-':20}  {state:7}  "
                      f"{r['label']}")
    except (ValueError, AuthError, tokens.TokenStoreError) as exc:
        print(f"ioacct token {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_tail(args: argparse.Namespace, settings: Settings) -> int:
    from streams.kafka.topics import topic_specs
    from streams.tools.tail import run_tail

    public = {spec.name for spec in topic_specs(settings)}
    topic = settings.topic(args.topic) if settings.topic(args.topic) in public else args.topic
    run_tail(settings, topic, args.from_beginning, args.idle_exit, args.max)
    return 0


def cmd_volume(args: argparse.Namespace, settings: Settings) -> int:
    from streams.tools.volumes import cli_volume

    return cli_volume(args, settings)


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    from streams.audit.command import cli_audit

    return cli_audit(args, settings)


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from streams.tools.bench.bench import cli_bench

    return cli_bench(args, settings)


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from streams.tools.run import run_pipeline

    return run_pipeline(settings, rate_per_s=args.rate, volumes=args.volumes,
                        tenants=args.tenants, source=args.source)


AUDIT_EPILOG = """\
The whole raw topic is replayed (effectively-once, validation and retention as the worker
does them), so hours and windows are recomputed whole. Limits (docs/audit.md):
- events later than the revision horizon (1 h by default) revise no window by design; the
  audit cannot tell which were, so such windows are reported as differences (the detail
  says when they may be). In a normal run nothing is that late.
- the 7-day retention and 5-minute future limits are judged against each raw record's
  Kafka timestamp, the worker used its clock: an event within seconds of them can differ.
- hours and windows that ended within grace + idle timeout + 60 s before the audit
  started may not be published yet; they are not reported as missing.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ioacct", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)

    def verb(name: str, handler: Handler, help_text: str, **kw: Any) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_text, description=help_text, **kw)
        _common(sub)
        sub.set_defaults(handler=handler)
        return sub

    kafka = verb("kafka", cmd_kafka, "start, stop or show the local Kafka broker (or cluster: "
                 "--brokers 3); `kafka user add NAME --role ROLE` adds a principal")
    kafka.add_argument("action", choices=["start", "stop", "status", "user"])
    kafka.add_argument("rest", nargs="*", help="for `user`: add NAME")
    kafka.add_argument("--brokers", type=int, help="nodes of the local KRaft cluster "
                       "(IOACCT_KAFKA_BROKERS, 1); node i listens on kafka port + 2*(i-1) and "
                       "controller port + 2*(i-1): 9092/9093, 9094/9095, 9096/9097 by default")
    kafka.add_argument("--role", help="for `user add`: admin, worker, hypervisor, "
                       "billing-reader or monitoring-reader")
    verb("topics", cmd_topics, "create the pipeline's topics that are missing")
    worker = verb("worker", cmd_worker, "run a Faust accounting worker")
    worker.add_argument("--web-port", type=int, help="HTTP port (IOACCT_WEB_PORT, 6066)")
    worker.add_argument("--loglevel", default="info")
    _produce_parser(verb("produce", cmd_produce, "send I/O completion events through the SDK"))
    query = verb("query", cmd_query, "ask a worker about a volume")
    query.add_argument("what", choices=["counters", "stats"],
                       help="cumulative counters, or windowed statistics")
    query.add_argument("volume_id")
    query.add_argument("--window", choices=["1s", "1m", "1h"], default="1m", help="stats only")
    query.add_argument("--from", dest="from_", metavar="TIME",
                       help="stats only: epoch ns, ISO 8601 (UTC) or now-15m (default: "
                            "15 min / 1 day / 30 days before --to)")
    query.add_argument("--to", metavar="TIME", help="stats only (default: now)")
    query.add_argument("--url", help="any worker's web address (default http://127.0.0.1:6066)")
    query.add_argument("--token", help="bearer token (default: IOACCT_TOKEN)")
    query.add_argument("--ca-file", help="HTTPS: a CA or a worker's self-signed certificate "
                       "to trust besides the system's (default: IOACCT_WEB_CA_FILE)")
    query.add_argument("--web-port", type=int, help=argparse.SUPPRESS)
    token = verb("token", cmd_token, "create, revoke or list the bearer tokens of the "
                 "workers' HTTP endpoints (docs/access.md)")
    token.add_argument("action", choices=["create", "revoke", "list"])
    token.add_argument("token", nargs="?", help="revoke: the token, or its id")
    token.add_argument("--tenant", help="create: a token that reads this tenant's volumes")
    token.add_argument("--operator", action="store_true",
                       help="create: a token that reads everything (/status, /metrics too)")
    token.add_argument("--label", default="", help="create: who or what holds it")
    token.add_argument("--json", action="store_true", help="list: JSON")
    from streams.tools.volumes import add_arguments as volume_arguments

    volume_arguments(verb("volume", cmd_volume, "register a volume to its tenant (admin), or "
                          "list the volume registry (docs/access.md)"))
    tail = verb("tail", cmd_tail, "print a topic's records decoded as JSON lines")
    tail.add_argument("topic", help="full name, or the part after the prefix (io.raw, io.dlq)")
    tail.add_argument("--from-beginning", action="store_true")
    tail.add_argument("--idle-exit", type=float, metavar="SECONDS",
                      help="exit once no record arrived for this long (default: follow)")
    tail.add_argument("--max", type=int, help="exit after this many records")
    audit = verb("audit", cmd_audit, "replay the raw topic and check the published billing "
                 "records and windows against it (exit 0: all agree, 1: differences, 2: error)",
                 epilog=AUDIT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    audit.add_argument("--from", dest="from_", metavar="TIME", required=True,
                       help="epoch ns, ISO 8601 (UTC) or now-2h: windows starting at or after "
                            "it, and the hours that overlap [--from, --to), are checked")
    audit.add_argument("--to", metavar="TIME", required=True, help="end of the range (now)")
    audit.add_argument("--volume", metavar="ID", help="check one volume only")
    audit.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    bench = verb("bench", cmd_bench, "throughput, latency and memory figures on a broker of "
                 "its own (make bench; docs/performance.md)")
    bench.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    bench.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    bench.add_argument("--profile", metavar="FILE", help="py-spy raw stacks of the (c) worker")
    bench.add_argument("--logs", metavar="DIR", help="keep the workers' logs here")
    bench.add_argument("--max-volumes", type=int, help="volumes of the (f) point (100,000)")
    bench.add_argument("--only", choices=["c", "bc", "f"],
                       help="c: only (b), (c), (c) at 100 and 100,000 volumes and with the "
                       "fleet at 1,000,000 events/s (profiling work); bc: only (b) and (c); "
                       "f: only the (f) memory points (partial reports)")
    run = verb("run", cmd_run, "broker + worker + simulated fleet, until Ctrl-C (make run)")
    run.add_argument("--rate", type=float, default=2000.0, help="simulated events/s")
    # 20 volumes at 2,000 events/s make ~300 records/s of ~60 events: what one worker
    # carries today (docs/performance.md); 200 volumes made ~2,000 one-event records/s,
    # and the worker fell further behind every second.
    run.add_argument("--volumes", type=int, default=20)
    run.add_argument("--tenants", type=int, default=5,
                     help="tenants owning the volumes (the dashboard shows one tenant's)")
    run.add_argument("--source", choices=["sim", "qemu"], default="sim",
                     help="sim: the simulated fleet; qemu: a QEMU guest's virtio-blk trace "
                          "(docs/qemu.md)")
    run.add_argument("--web-port", type=int, help=argparse.SUPPRESS)
    return parser


def _produce_parser(produce: argparse.ArgumentParser) -> None:
    produce.add_argument("--spool-dir", metavar="DIR",
                         help="the disk spool of records Kafka has not acknowledged; what an "
                              "earlier run left there is sent first (default: "
                              "STATE_DIR/spool/PREFIX; docs/producer.md). Exit status 3: "
                              "records were left in it")
    produce.add_argument("--register", action=argparse.BooleanOptionalAction,
                         help="as admin, register each volume to the tenant its events claim "
                              "before sending them (default: only with --sim, when admin)")
    source = produce.add_mutually_exclusive_group(required=True)
    source.add_argument("--jsonl", metavar="FILE", help="events as JSON lines ('-': stdin)")
    source.add_argument("--sim", action="store_true", help="the simulated fleet")
    source.add_argument("--fio-lat-log", metavar="FILE",
                        help="fio's per-I/O total-latency log NAME_lat.N.log (write_lat_log, "
                             "log_avg_msec=0, log_offset=1): one event per line")
    source.add_argument("--blkparse", metavar="FILE",
                        help="blkparse's default text ('-': stdin): one event per issue (D) "
                             "-> completion (C) pair; see docs/sources.md")
    source.add_argument("--qemu-trace", metavar="FILE",
                        help="QEMU's virtio-blk trace (-trace ... -msg timestamp=on -D FILE; "
                             "'-': stdin): one event per request; see docs/qemu.md")
    qemu = produce.add_argument_group("QEMU trace (docs/qemu.md); also --volume-id, "
                                      "--tenant-id, --volume-map VDEV=VOLUME[:TENANT],...")
    qemu.add_argument("--follow", action="store_true",
                      help="keep reading as the file grows, across QEMU restarts, until "
                           "SIGINT/SIGTERM (like tail -F)")
    qemu.add_argument("--qmp", metavar="SOCKET",
                      help="QEMU's QMP unix socket: query-blockstats at the start, the end "
                           "and on SIGUSR1, compared with the trace in the summary")
    qemu.add_argument("--qmp-device", metavar="NAME",
                      help="the query-blockstats entry (drive id, qdev or node name; default: "
                           "the only one attached to a guest device)")
    qemu.add_argument("--max-in-flight", type=int, default=65536,
                      help="requests kept waiting for their completion; past it the oldest "
                           "is evicted and reported")
    qemu.add_argument("--report-json", metavar="FILE", help="also write the summary as JSON")
    real = produce.add_argument_group("real sources (docs/sources.md)")
    real.add_argument("--volume-id", help="fio: the volume the log's I/Os are billed to")
    real.add_argument("--tenant-id", help="fio: the volume's tenant; blkparse: the tenant of "
                      "--volume-map entries without one")
    real.add_argument("--fio-json", metavar="FILE",
                      help="fio's --output-format=json report: the job's start time")
    real.add_argument("--volume-map", action="append", default=[],
                      metavar="MAJ,MIN=VOLUME[:TENANT],...",
                      help="blkparse: which device is which volume (repeatable)")
    real.add_argument("--host-id", help="the host_id of the events (optional)")
    sim = produce.add_argument_group("simulator")
    sim.add_argument("--events", type=int, help="stop after this many (default: until Ctrl-C)")
    sim.add_argument("--rate", type=float, default=0.0,
                     help="events/s in real time (0: as fast as possible)")
    sim.add_argument("--sim-rate", type=float, default=5000.0,
                     help="events per simulated second when not paced in real time")
    sim.add_argument("--volumes", type=int, default=200)
    sim.add_argument("--tenants", type=int, default=20)
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--volume-prefix", default="vol-",
                     help="volume ids are PREFIX + 6 digits (default vol-): simulated hosts of "
                          "their own, side by side")
    sim.add_argument("--start-ns", type=int,
                     help="simulated time of the first event (default: now, or when unpaced, "
                          "early enough that the last event is about now); fio: the job's "
                          "start; blkparse: the epoch ns of the trace's time 0")
    sim.add_argument("--write-jsonl", metavar="FILE", help="also write the events sent as JSONL")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_from(args)
    return int(args.handler(args, settings))


if __name__ == "__main__":
    sys.exit(main())
