"""`ioacct run` (what `make run` calls): broker, topics, one worker, a simulated fleet.

Ctrl-C stops the fleet (which flushes what it buffered), the worker, and the
broker if this command started it. State stays under the state directory, so
a second run reuses the broker's data and the built jars.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from streams.api.tls import caller_context
from streams.config import REPO_ROOT, Settings
from streams.core.registry import REGISTRY_OFF
from streams.kafka import cluster as kafka_cluster
from streams.kafka.local import LocalBroker
from streams.kafka.topics import ensure_topics
from streams.sources.simulator import FleetConfig, FleetSimulator


def _spawn(args: list[str], log_path: Path, settings: Settings,
           kafka_user: str | None = None) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update({
        "IOACCT_BOOTSTRAP": settings.bootstrap_servers,
        "IOACCT_TOPIC_PREFIX": settings.topic_prefix,
        "IOACCT_PARTITIONS": str(settings.partitions), "IOACCT_STATE_DIR": str(settings.state_dir),
        "IOACCT_WEB_PORT": str(settings.web_port),
        "IOACCT_KAFKA_SECURITY": settings.kafka_security,
        "IOACCT_KAFKA_USER": kafka_user or settings.kafka_user,
    })
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli", *args], env=env, cwd=REPO_ROOT,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # our Ctrl-C handler stops them in order
        )


def _wait_for_worker(settings: Settings, worker: subprocess.Popen[bytes], log: Path,
                     token: str) -> None:
    deadline = time.monotonic() + 120
    status = urllib.request.Request(f"{settings.web_url}/status",
                                    headers={"Authorization": f"Bearer {token}"})
    context = caller_context(settings)  # a self-signed IOACCT_WEB_CERT is trusted
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited with {worker.returncode}; see {log}")
        try:
            with urllib.request.urlopen(status, timeout=2, context=context) as response:
                if b'"assigned_partitions":[]' not in response.read():
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the worker did not become ready within 120 s; see {log}")


def _stop(process: subprocess.Popen[bytes], sig: int, timeout_s: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _banner(settings: Settings, logs: Path, operator: str, tenant_id: str, tenant: str,
            volume: str = "vol-000000", source: str = "a simulated fleet") -> str:
    url = settings.web_url
    return f"""
ioacct is running: {source} -> {settings.raw_topic} -> worker -> counters,
windows, billing, monitoring.
  dashboard  {url}/dashboard   (sign in with a token below)
  tokens     operator (everything):     {operator}
             {tenant_id} (its volumes): {tenant}
             (new ones: .venv/bin/ioacct token create --tenant T | --operator)
  try        export IOACCT_TOKEN={tenant}
             .venv/bin/ioacct query counters {volume}
             curl -H "Authorization: Bearer $IOACCT_TOKEN" {url}/volumes
             curl -H "Authorization: Bearer $IOACCT_TOKEN" \\
                  "{url}/volumes/{volume}/stats?window=1s&from=now-1m"
  operator   {url}/status and {url}/metrics need the operator token
  raw topic  .venv/bin/ioacct tail io.raw --max 3
  windows    .venv/bin/ioacct tail stats.1s --max 3
  billing    .venv/bin/ioacct tail billing.hourly --from-beginning --idle-exit 2
             (an hour's first record comes when the hour closes; the simulator starts now)
  monitoring .venv/bin/ioacct tail monitoring.1m --max 3
  rejected   .venv/bin/ioacct tail io.dlq --from-beginning --idle-exit 2
  logs       {logs}/
Press Ctrl-C to stop.
"""


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _run_tokens(settings: Settings, tenant_id: str) -> tuple[str, str]:
    """An operator token and a token of ``tenant_id`` for this run (docs/access.md)."""
    from streams.api.auth import OPERATOR, TENANT
    from streams.api.tokens import create

    async def both() -> tuple[str, str]:
        operator, _ = await create(settings, OPERATOR, None, "make run")
        tenant, _ = await create(settings, TENANT, tenant_id, "make run")
        return operator, tenant

    return asyncio.run(both())


QEMU_VOLUME_ID, QEMU_TENANT_ID = "qemu-vm-1-vda", "tenant-qemu"


def _qemu_produce_args(settings: Settings) -> list[str]:
    guest_dir = settings.state_dir / "qemu" / "guest"
    return ["produce", "--qemu-trace", str(guest_dir / "trace.log"), "--follow",
            "--qmp", str(guest_dir / "qmp.sock"), "--volume-id", QEMU_VOLUME_ID,
            "--tenant-id", QEMU_TENANT_ID]


def _start_qemu_guest(settings: Settings) -> Any:
    """`ioacct run --source qemu`: a guest repeating its workload (docs/qemu.md)."""
    from streams.sources.qemu.guest import GuestError, start_guest

    cache = settings.state_dir / "qemu"
    try:
        guest = start_guest(cache / "guest", cache, loop=True, reads=200, writes=20)
    except GuestError as exc:
        raise SystemExit(f"cannot start the QEMU guest: {exc}") from exc
    print(f"QEMU guest (pid {guest.process.pid}) repeats its workload on volume "
          f"{QEMU_VOLUME_ID} (tenant {QEMU_TENANT_ID}); trace {guest.trace_path}, "
          f"serial console {guest.serial_path}")
    return guest


def _principals(settings: Settings, broker: LocalBroker
                ) -> tuple[str | None, str | None]:
    """On a secured broker, the worker and the fleet log in as principals of their own
    roles (docs/access.md), made now; else both use the settings' login."""
    if not broker.secure:
        return None, None
    from streams.kafka.users import add_user

    add_user(settings, "worker", "worker")
    add_user(settings, "hypervisor", "hypervisor")
    return "worker", "hypervisor"


def _register_fleet(settings: Settings, pairs: list[tuple[str, str]]) -> None:
    """The fleet's volumes in the volume registry, as admin (the fleet's own login, a
    hypervisor, may not write it): the worker counts only registered volumes."""
    from streams.tools.register_fleet import Registrar

    if settings.volume_registry == REGISTRY_OFF:
        return
    registrar = Registrar(settings)
    asyncio.run(registrar.ensure(pairs))
    print("\n".join(registrar.report.lines()))


def run_pipeline(settings: Settings, rate_per_s: float, volumes: int, tenants: int = 5,
                 source: str = "sim") -> int:
    # Ctrl-C and `kill` stop everything cleanly; also when started from a script, whose
    # background jobs inherit SIGINT ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    cluster = kafka_cluster.LocalCluster.from_settings(settings)  # IOACCT_KAFKA_BROKERS nodes
    started_broker = kafka_cluster.start(cluster)
    print(f"kafka {'started' if started_broker else 'already running'} on {cluster.bootstrap}")
    asyncio.run(ensure_topics(settings))
    worker_user, fleet_user = _principals(settings, cluster.nodes[0])
    fleet_args = ["--rate", str(rate_per_s), "--volumes", str(volumes), "--tenants", str(tenants)]
    fleet_volumes = [(v.volume_id, v.tenant_id) for v in
                     FleetSimulator(FleetConfig(volumes=volumes, tenants=tenants)).volumes]
    tenant_id = fleet_volumes[0][1]
    produce_args = ["produce", "--sim", "--no-register", *fleet_args]  # registered below
    if source == "qemu":
        tenant_id, produce_args = QEMU_TENANT_ID, _qemu_produce_args(settings)
        fleet_volumes = [(QEMU_VOLUME_ID, QEMU_TENANT_ID)]
    _register_fleet(settings, fleet_volumes)
    operator, tenant = _run_tokens(settings, tenant_id)
    logs = settings.state_dir / "logs"
    worker = _spawn(["worker"], logs / "worker.log", settings, worker_user)
    fleet: subprocess.Popen[bytes] | None = None
    guest = None
    try:
        _wait_for_worker(settings, worker, logs / "worker.log", operator)
        if source == "qemu":
            guest = _start_qemu_guest(settings)
        fleet = _spawn(produce_args, logs / "fleet.log", settings, fleet_user)
        print(_banner(settings, logs, operator, tenant_id, tenant,
                      *((QEMU_VOLUME_ID, "a QEMU guest's virtio-blk trace") if source == "qemu"
                        else ())), flush=True)
        while worker.poll() is None and fleet.poll() is None:
            time.sleep(0.5)
        print(f"a process exited early; see {logs}/", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0
    finally:
        if fleet is not None:
            _stop(fleet, signal.SIGINT)
        if guest is not None:
            guest.stop()
        _stop(worker, signal.SIGTERM)
        if started_broker:
            kafka_cluster.stop(cluster)
        print("stopped" + (" (kafka too)" if started_broker else ""))
