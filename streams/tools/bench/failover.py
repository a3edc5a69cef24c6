"""(k) failover: two workers carrying a live fleet; one of them killed -9 a few times, each
time started again after the systemd unit's RestartSec; per kill the seconds from the
kill to its partitions caught up again (catchup.py has the definition), and their
distribution, against the target of the session timeout + 10 s (issue 19).

Run alone: ``python -m streams.tools.bench.failover`` (a broker of its own, as the bench).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.config import Settings
from streams.core.times import NS_PER_S
from streams.tools.bench.alone import run_alone
from streams.tools.bench.catchup import CatchUpWatch, KillFigures, distribution
from streams.tools.bench.latency import _send_real_time, register_fleet
from streams.tools.bench.procs import BenchError, Proc, free_port, pipeline_topics, spawn_worker

TARGET_EXTRA_S = 10.0  # the target: kill to caught up <= session timeout + this
RESTART_S = 2.0  # deploy/systemd/ioacct-worker.service RestartSec
FIXED_RATE = 5_000.0  # events/s when (c) was not measured in this run
SENDER_CLOSE_S = 60.0  # at most this long for the cancelled fleet sender to close


@dataclass
class FailoverPlan:
    kills: int = 4
    settle_s: float = 15.0  # steady running before each kill
    rate: float = FIXED_RATE
    volumes: int = 50
    rate_basis: str = "fixed"  # or "half of (c)"


@dataclass
class Failover:
    kills: list[KillFigures] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


async def _owned(proc: Proc) -> list[int]:
    try:
        return sorted((await asyncio.to_thread(proc.get, "/status"))["assigned_partitions"])
    except Exception:  # noqa: BLE001 (restarting: it owns nothing it could name)
        return []


async def _wait_shared(procs: list[Proc], partitions: int, timeout_s: float = 180) -> None:
    """Until the workers' /status show every partition assigned, each worker some."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        owned = [await _owned(p) for p in procs]
        if all(owned) and sorted(sum(owned, [])) == list(range(partitions)):
            return
        for proc in procs:
            if not proc.alive():
                raise BenchError("a failover worker exited:\n" + proc.log_tail())
        await asyncio.sleep(0.5)
    raise BenchError("the failover workers never shared every partition:\n"
                     + procs[0].log_tail())


async def _kill_once(s: Settings, procs: list[Proc], victim: int, log_dir: Path,
                     n: int, timeout_s: float = 300) -> KillFigures:
    """kill -9 ``procs[victim]``, start it again after RESTART_S; its partitions' figures."""
    proc = procs[victim]
    watch = CatchUpWatch(s, await _owned(proc) or list(range(s.partitions)))
    await asyncio.to_thread(watch.start)
    proc.process.send_signal(signal.SIGKILL)
    watch.killed()
    proc.process.wait()
    await asyncio.sleep(RESTART_S)
    procs[victim] = spawn_worker(s, log_dir, f"failover-{victim}-{n}", proc.web_port,
                                 proc.token)
    deadline = time.monotonic() + timeout_s
    while not watch.done() and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    await asyncio.to_thread(watch.stop)
    return watch.result()


async def failover_run(s: Settings, log_dir: Path, plan: FailoverPlan) -> Failover:
    """Two workers and a live fleet at ``plan.rate``; ``plan.kills`` kills, alternating."""
    await pipeline_topics(s)
    await register_fleet(s, plan.volumes)
    port = [free_port(), free_port()]
    procs = [spawn_worker(s, log_dir, f"failover-{i}", port[i]) for i in range(2)]
    out = Failover()
    start_ns = time.time_ns()
    duration_s = 24 * 3600.0  # until cancelled, however long the kills take
    sender = asyncio.create_task(_send_real_time(
        s, plan.rate, plan.volumes, start_ns, start_ns + int(duration_s * NS_PER_S)))
    try:
        await _wait_shared(procs, s.partitions)
        for n in range(plan.kills):
            await asyncio.sleep(plan.settle_s)
            if sender.done():  # it runs until cancelled: this is its error
                raise BenchError(f"the failover fleet stopped: {sender.exception()!r}")
            out.kills.append(await _kill_once(s, procs, n % 2, log_dir, n))
            print(f"(k) kill {n + 1}: {out.kills[-1].as_dict()}", file=sys.stderr, flush=True)
            await _wait_shared(procs, s.partitions)
    finally:
        # Await the cancelled sender (its producer's close) before anything else: left to
        # asyncio.run's clean-up, which cancels aiokafka's own tasks too, the close could
        # wait for ever on sends those tasks were to finish (seen once in CI).
        sender.cancel()
        await asyncio.wait([sender], timeout=SENDER_CLOSE_S)
        for proc in procs:
            proc.stop(timeout_s=30)
    _summarize(s, plan, out)
    return out


def _summarize(s: Settings, plan: FailoverPlan, out: Failover) -> None:
    caught = [k.caught_up_s for k in out.kills if k.caught_up_s is not None]
    dist = distribution(caught)
    target = s.session_timeout_s + TARGET_EXTRA_S
    out.figures.update({f"k_caught_up_{k}_s": v for k, v in dist.items() if k != "count"})
    out.figures["k_target_s"] = target
    out.info.update(
        kills=[k.as_dict() for k in out.kills], rate=plan.rate, rate_basis=plan.rate_basis,
        volumes=plan.volumes, session_timeout_s=s.session_timeout_s, target_s=target,
        missed=len(out.kills) - len(caught),
        resumed=distribution([k.resumed_s for k in out.kills if k.resumed_s is not None]))


def failover_rows(fig: dict[str, float], info: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The (k) rows of the bench's table: (figure, value, note)."""
    k = info["k"]
    kills = ", ".join("-" if x["caught_up_s"] is None else f"{x['caught_up_s']:.1f}"
                      for x in k["kills"])
    if "k_caught_up_max_s" not in fig:
        return [("(k) failover: kill -9 to caught up", "none", f"no kill caught up ({kills})")]
    worst = fig["k_caught_up_max_s"]
    verdict = (f"target <= {k['target_s']:.0f} s (session timeout {k['session_timeout_s']:g} s"
               f" + {TARGET_EXTRA_S:g} s): " + ("met" if worst <= k["target_s"] and not
                                                 k["missed"] else "NOT met"))
    resumed = k["resumed"]
    return [
        ("(k) failover: kill -9 to caught up, max", f"{worst:.1f} s",
         f"{verdict}; per kill: {kills} s"),
        ("    median / p90", f"{fig['k_caught_up_median_s']:.1f} s",
         f"p90 {fig['k_caught_up_p90_s']:.1f} s, min {fig['k_caught_up_min_s']:.1f} s; "
         f"resumed (commits moving again) after median {resumed.get('median', 0):.1f} s; 2 "
         f"workers at {k['rate']:,.0f} events/s ({k['rate_basis']}), {k['volumes']} volumes"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=FailoverPlan.kills)
    parser.add_argument("--rate", type=float, default=FailoverPlan.rate, help="events/s")
    parser.add_argument("--volumes", type=int, default=FailoverPlan.volumes)
    parser.add_argument("--json", metavar="FILE", help="write the figures here")
    parser.add_argument("--logs", metavar="DIR", help="keep the workers' logs here")
    args = parser.parse_args(argv)
    plan = FailoverPlan(args.kills, rate=args.rate, volumes=args.volumes)
    return run_alone("k", lambda base, log_dir: failover_run(base, log_dir, plan),
                     failover_rows, args.json, args.logs)


if __name__ == "__main__":
    sys.exit(main())
