"""Running real worker processes against the test broker, and waiting on them."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from streams.config import REPO_ROOT, Settings
from streams.core.codec import default_schemas
from streams.core.raw import raw_batch
from streams.kafka.registry import register_volumes
from streams.kafka.security import client_kwargs
from streams.kafka.topics import topic_partitions
from tests.conftest import free_port

RATE_LIMITED_TRIES = 60  # a test reading many volumes outruns a token's burst


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes an `ioacct` subprocess use these settings."""
    env = dict(os.environ)
    env.update({f"IOACCT_{f.name.upper()}": str(getattr(settings, f.name))
                for f in fields(settings)})
    env["IOACCT_BOOTSTRAP"] = settings.bootstrap_servers
    return env


def ioacct(
    settings: Settings, *args: str, timeout: float = 300, **kw: Any,
) -> subprocess.CompletedProcess[str]:
    """Run the real command line, as a user would. `produce` registers the volumes it
    sends (as the admin the tests log in as), unless the test says --no-register: the
    worker counts registered volumes only."""
    if args[:1] == ("produce",) and not {"--register", "--no-register"} & set(args):
        args = ("produce", "--register", *args[1:])
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args], env=settings_env(settings), cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=timeout, check=False, **kw,
    )


def register(settings: Settings, pairs: Iterable[tuple[str, str]]) -> None:
    """Register (volume, tenant) pairs as admin, as the operator would before a fleet
    sends: for tests that write raw records themselves."""
    report = asyncio.run(register_volumes(settings, list(pairs)))
    assert not report.refused, report.refused


@dataclass
class WorkerProcess:
    settings: Settings
    web_port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        scheme = "https" if self.settings.web_cert else "http"
        return f"{scheme}://127.0.0.1:{self.web_port}"

    @property
    def tls(self) -> ssl.SSLContext | None:
        """A worker serving HTTPS (IOACCT_WEB_CERT) is checked against its certificate."""
        if not self.settings.web_cert:
            return None
        return ssl.create_default_context(cafile=self.settings.web_cert)

    def get(self, path: str, token: str | None = "operator") -> tuple[int, Any]:
        """GET a JSON view as the operator (the default), with another token, or with
        none (``token=None``); (status, decoded body)."""
        status, body = self.get_raw(path, token)
        return status, orjson.loads(body)

    def get_raw(self, path: str, token: str | None = "operator",
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """GET anything; (status, body bytes)."""
        if token == "operator":
            token = operator_token(self.settings)
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.url + path, headers=sent)
        refused = (429, b"")
        for _ in range(RATE_LIMITED_TRIES):
            try:
                with urllib.request.urlopen(request, timeout=30, context=self.tls) as response:
                    return response.status, response.read()
            except urllib.error.HTTPError as exc:
                refused = (exc.code, exc.read())
                if exc.code != 429:
                    return refused
                # As a well-behaved client: wait as told (the per-token rate limit), again.
                time.sleep(float(exc.headers.get("Retry-After", "1")))
        return refused

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


_OPERATOR_TOKENS: dict[tuple[str, str], str] = {}


def create_token(settings: Settings, *args: str) -> str:
    """A new token through the real command line: ``create_token(s, "--tenant", "t1")``."""
    result = ioacct(settings, "token", "create", *args, "--label", "tests")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token.startswith("ioa_"), result.stdout
    return token


def operator_token(settings: Settings) -> str:
    """One operator token per pipeline (topic prefix) of the test session."""
    key = (settings.bootstrap_servers, settings.topic_prefix)
    if key not in _OPERATOR_TOKENS:
        _OPERATOR_TOKENS[key] = create_token(settings, "--operator")
    return _OPERATOR_TOKENS[key]


def start_worker(settings: Settings, web_port: int, log_dir: Path) -> WorkerProcess:
    log_path = log_dir / f"worker-{web_port}.log"
    env = settings_env(settings)
    env["IOACCT_WEB_PORT"] = str(web_port)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--loglevel",
             os.environ.get("IOACCT_TEST_WORKER_LOGLEVEL", "warning")],
            env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
        )
    return WorkerProcess(settings, web_port, process, log_path)


def counter_mismatches(worker: WorkerProcess, expected: dict[str, dict[str, Any]]
                       ) -> list[str]:
    """Every field of every expected volume's counters that the worker answers otherwise."""
    diffs: list[str] = []
    for volume_id, want in expected.items():
        status, got = worker.get(f"/volumes/{volume_id}/counters")
        if status != 200:
            diffs.append(f"{volume_id}: HTTP {status} {got}")
            continue
        diffs += [f"{volume_id}.{k}: got {got.get(k)} want {v}"
                  for k, v in want.items() if got.get(k) != v]
    return diffs


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str,
               workers: list[WorkerProcess] = ()) -> Any:  # type: ignore[assignment]
    """Poll ``condition`` until it returns a truthy value; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for worker in workers:
            assert worker.alive(), f"worker {worker.web_port} died:\n{worker.log_tail()}"
        try:
            result = condition()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            result = None
        if result:
            return result
        time.sleep(0.5)
    logs = "\n".join(f"--- worker {w.web_port}\n{w.log_tail()}" for w in workers)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{logs}")


def assigned_partitions(workers: list[WorkerProcess]) -> list[int]:
    parts: list[int] = []
    for worker in workers:
        status, body = worker.get("/status")
        if status != 200:
            return []
        parts += body.get("assigned_partitions", [])
    return sorted(parts)


async def consumer_lag(settings: Settings, topic: str, group: str,
                       ends_before: dict[Any, int] | None = None) -> tuple[int, dict[Any, int]]:
    """Records of ``topic`` up to ``ends_before`` (default: its end now) that consumer group
    ``group`` has not committed yet, and the end offsets it measured against.

    Workers write Ticks into the raw topic while windows are open, so its end keeps
    moving: wait for the records that were there, not for a lag of zero."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    consumer = AIOKafkaConsumer(**client_kwargs(settings))
    await admin.start()
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, topic)
        assert tps, f"no topic {topic}"
        ends = ends_before or await consumer.end_offsets(tps)
        committed = await admin.list_consumer_group_offsets(group)
        return sum(
            max(0, end - (committed[tp].offset
                          if tp in committed and committed[tp].offset >= 0 else 0))
            for tp, end in ends.items()
        ), ends
    finally:
        await consumer.stop()
        await admin.close()


def wait_committed(settings: Settings, workers: list[WorkerProcess], timeout_s: float = 180,
                   topic: str | None = None) -> None:
    """Wait until the workers have committed every record of ``topic`` (default: the raw
    topic) that is there now."""
    topic = topic or settings.raw_topic
    _, ends = asyncio.run(consumer_lag(settings, topic, settings.app_id))
    wait_until(lambda: asyncio.run(consumer_lag(settings, topic, settings.app_id,
                                                ends))[0] == 0,
               timeout_s, f"the workers to commit every record of {topic}", workers)


def wait_settled(settings: Settings, workers: list[WorkerProcess], timeout_s: float = 180,
                 ) -> None:
    """Wait until every raw record there now has gone through the worker: the raw topic
    committed (one stage makes every window length, billing and the dead letters).

    Faust flushes the producer before it commits (Consumer._commit_offsets), so the
    commit means what it made of those records is on its output topics. Waiting for keys
    is not enough: a window is published at its close and revised by later records."""
    wait_committed(settings, workers, timeout_s, settings.raw_topic)


async def read_topic(settings: Settings, topic: str, idle_s: float = 2.0) -> list[Any]:
    """Every message of ``topic`` from the beginning, until nothing arrives for ``idle_s``."""
    consumer = AIOKafkaConsumer(**client_kwargs(settings),
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, topic)
        assert tps, f"no topic {topic}"
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        messages: list[Any] = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            batches = await consumer.getmany(timeout_ms=int(idle_s * 1000))
            if not batches:
                break
            for batch in batches.values():
                messages.extend(batch)
        return messages
    finally:
        await consumer.stop()


async def redeliver(settings: Settings, messages: list[Any]) -> None:
    """Send the same records again, to the same partitions (a redelivery)."""
    producer = AIOKafkaProducer(**client_kwargs(settings))
    await producer.start()
    try:
        for msg in messages:
            await producer.send(msg.topic, value=msg.value, key=msg.key, partition=msg.partition)
        await producer.flush()
    finally:
        await producer.stop()


@contextmanager
def running_workers(settings: Settings, log_dir: Path, count: int = 2
                    ) -> Iterator[list[WorkerProcess]]:
    """Topics created, ``count`` workers started, sharing every raw partition; stopped on
    exit."""
    assert ioacct(settings, "topics").returncode == 0
    started = [start_worker(settings, free_port(), log_dir) for _ in range(count)]
    try:
        wait_until(
            lambda: assigned_partitions(started) == list(range(settings.partitions))
            and all(w.get("/status")[1].get("assigned_partitions") for w in started),
            120, f"{count} workers to share all partitions", started,
        )
        yield started
    finally:
        for worker in started:
            worker.stop()


@contextmanager
def running_worker(settings: Settings, log_dir: Path) -> Iterator[WorkerProcess]:
    """Topics created, one worker started and assigned; stopped on exit."""
    assert ioacct(settings, "topics").returncode == 0
    started = start_worker(settings, free_port(), log_dir)
    try:
        wait_until(lambda: started.get("/status")[1].get("assigned_partitions"), 120,
                   "the worker to be assigned", [started])
        yield started
    finally:
        started.stop()


@dataclass
class PrometheusServer:
    """A real Prometheus server (Debian's package) started for a test."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def query(self, expr: str) -> dict[str, float]:
        """An instant query: value by volume_id (or by instance, for series without one).
        Integers as Python ints when they are (Prometheus stores float64: exact to 2**53)."""
        request = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = orjson.loads(response.read())
        assert answer["status"] == "success", answer
        out: dict[str, float] = {}
        for series in answer["data"]["result"]:
            labels = series["metric"]
            key = labels.get("volume_id") or labels["instance"]
            value = float(series["value"][1])
            out[key] = int(value) if value.is_integer() else value
        return out


@contextmanager
def running_prometheus(tmp_path: Path, worker_urls: list[str], token: str
                       ) -> Iterator[PrometheusServer]:
    """Prometheus scraping ``worker_urls``' /metrics every 5 s with ``token``: the
    scrape configuration of deploy/prometheus/prometheus.yml, pointed at these workers."""
    import shutil

    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus is missing (Debian package prometheus: make system-deps)"
    token_file = tmp_path / "operator.token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    targets = ", ".join(f'"{urllib.parse.urlsplit(u).netloc}"' for u in worker_urls)
    deployed = (REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        # 5 s, not 1: a scrape's timeout is its interval, and a worker's /metrics with its
        # volumes' latency histograms takes about a second to make and parse here.
        deployed.replace("scrape_interval: 15s", "scrape_interval: 5s")
        .replace("/etc/prometheus/ioacct-operator.token", str(token_file))
        .replace('["worker-1.example:6066", "worker-2.example:6066", "worker-3.example:6066"]',
                 f"[{targets}]"))
    shutil.copy(REPO_ROOT / "deploy" / "prometheus" / "rules.yml", tmp_path)
    port = free_port()
    log = tmp_path / "prometheus.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=out, stderr=subprocess.STDOUT)
    server = PrometheusServer(f"http://127.0.0.1:{port}", process, log)
    try:
        def ready() -> bool:
            assert process.poll() is None, f"prometheus exited:\n{log.read_text()[-3000:]}"
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=5) as response:
                return response.status == 200
        wait_until(ready, 60, "Prometheus to be ready")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def volume_parts(messages: Iterable[Any]) -> int:
    """How many (record, volume) parts raw records carry: what a worker counts in
    ``replays_skipped`` when they all come again (a record holds several volumes)."""
    schemas = default_schemas()
    return sum(len(set(raw_batch(*schemas.decode(m.value)).columns.volume.tolist()))
               for m in messages)
