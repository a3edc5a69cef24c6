"""The customer panel in a real headless Chromium (Debian's), driven by Playwright, under
the worker's Content-Security-Policy (the waits are CSS selectors: a string predicate
would need eval, which the policy refuses).

A tenant signs in through the form, sees exactly its own volumes, opens one, and every
point of every chart equals the number the stats API gives for that volume and window,
recomputed here from the API's fields; the operations chart also sums to the events sent
(the oracle). Screenshots go to test-output/ (look at them).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.config import REPO_ROOT, Settings
from streams.core.events import OPS
from streams.sources.simulator import FleetConfig, FleetSimulator

from .harness import WorkerProcess, create_token, ioacct, running_worker, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
OUTPUT = REPO_ROOT / "test-output"
NS = 1_000_000_000
CHARTS = ("chart-iops", "chart-throughput", "chart-latency", "chart-p99", "chart-queue",
          "chart-util", "chart-idle", "chart-errors")
HEATMAPS = {"chart-heat-read": "read", "chart-heat-write": "write"}


@pytest.fixture(scope="module")
def panel(pipeline_settings: Settings, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[WorkerProcess, dict[str, str], list[dict[str, Any]]]]:
    """One worker, six volumes of two tenants, four minutes of simulated I/O ending two
    minutes ago (so every 1 s and 1 m window is closed), and a token per tenant."""
    tmp = Path(tmp_path_factory.mktemp("panel"))
    start_ns = (time.time_ns() - 6 * 60 * NS) // NS * NS
    sim = FleetSimulator(FleetConfig(seed=11, volumes=6, tenants=2, start_ns=start_ns,
                                     events_per_s=60.0))
    events = [e.to_json() for e in sim.events(4 * 60 * 60)]
    path = tmp / "events.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    with running_worker(pipeline_settings, tmp) as worker:
        sent = ioacct(pipeline_settings, "produce", "--jsonl", str(path))
        assert sent.returncode == 0, sent.stderr
        tokens = {t: create_token(pipeline_settings, "--tenant", t)
                  for t in sorted({e["tenant_id"] for e in events})}
        for volume in sorted({e["volume_id"] for e in events}):
            wait_until(lambda v=volume: _all_closed(worker, v), 120,
                       f"every window of {volume} to close", [worker])
        yield worker, tokens, events


def _all_closed(worker: WorkerProcess, volume: str) -> bool:
    for window in ("1s", "1m"):
        status, body = worker.get(f"/volumes/{volume}/stats?window={window}&from=now-1h")
        if status != 200 or not body["windows"] or any(
                w["revision"] is None for w in body["windows"]):
            return False
    return True


def _expected_charts(windows: list[dict[str, Any]], window_ns: int, from_ns: int, to_ns: int
                     ) -> dict[str, dict[str, list[Any]]]:
    """The charts as docs/dashboard.md defines them, from the API's windows: one point per
    period in [from, to); a period without a window had no I/O (zero, all idle, no
    latency)."""
    period_s = window_ns // NS
    by_start = {w["window_start_ns"]: w for w in windows}
    starts = range(from_ns, to_ns, window_ns)

    def series(f: Any, absent: Any) -> list[Any]:
        return [f(by_start[s]) if s in by_start else absent for s in starts]

    def ms(ns: float | None) -> float | None:
        return None if ns is None else ns / 1e6

    def total(w: dict[str, Any], fmt: str) -> int:
        return sum(w[fmt.format(op=op)] for op in OPS)

    return {
        "chart-iops": {"read": series(lambda w: w["read_ios"] / period_s, 0),
                       "write": series(lambda w: w["write_ios"] / period_s, 0)},
        "chart-throughput": {"read": series(lambda w: w["read_bytes"] / period_s, 0),
                             "write": series(lambda w: w["write_bytes"] / period_s, 0)},
        "chart-latency": {"read": series(lambda w: ms(w["avg_read_latency_ns"]), None),
                          "write": series(lambda w: ms(w["avg_write_latency_ns"]), None)},
        "chart-p99": {"read": series(lambda w: ms(w["p99_read_latency_ns"]), None),
                      "write": series(lambda w: ms(w["p99_write_latency_ns"]), None)},
        "chart-queue": {
            "all ops": series(lambda w: total(w, "{op}_inflight_time_ns")
                              / w["window_length_ns"], 0),
            "read": series(lambda w: w["avg_read_queue_depth"], 0),
            "write": series(lambda w: w["avg_write_queue_depth"], 0)},
        "chart-util": {"busy": series(lambda w: 100 * w["util"], 0)},
        "chart-idle": {"idle": series(lambda w: w["idle_time_ns"] / 1e9, period_s)},
        "chart-errors": {"failed": series(lambda w: total(w, "{op}_ios_error"), 0),
                         "invalid": series(lambda w: total(w, "invalid_{op}_ios"), 0)},
    }


def _heat_row(latency_ns: int) -> int:
    """The heatmap row of a positive latency: rows are 8 per octave, row j holds
    (2**(j/8), 2**((j+1)/8)] as SEMANTICS.md's buckets are bounded, floor of the power
    (so: the least j with latency <= floor(2**((j+1)/8))), computed with integers here,
    independently of streams' own bucket code."""
    j = (latency_ns.bit_length() - 1) * 8 - 8  # a row at or below the answer
    while not latency_ns <= _floor_root8(j + 1):
        j += 1
    return j


def _floor_root8(k: int) -> int:
    """The largest n with n**8 <= 2**k (k may be negative: then 0 or 1)."""
    if k < 0:
        return 0
    n = 1 << (k // 8)
    step = n
    while step:  # binary search from below on the bits of n
        if (n + step) ** 8 <= 1 << k:
            n += step
        step //= 2
    return n


def _expected_heatmaps(events: list[dict[str, Any]], volume: str, window_ns: int,
                       from_ns: int, to_ns: int) -> dict[str, dict[str, Any]]:
    """Each op's heatmap straight from the events (not the API): per period, how many ok
    or failed requests of the op completed in it with a latency in each row; rows from
    the lowest to the highest used; empty cells None."""
    expected: dict[str, dict[str, Any]] = {}
    starts = list(range(from_ns, to_ns, window_ns))
    for chart, op in HEATMAPS.items():
        cells: dict[tuple[int, int], int] = {}
        for e in events:
            if (e["volume_id"] == volume and e["op"] == op and e["status"] != "invalid"
                    and from_ns <= e["complete_ns"] < to_ns
                    and e["complete_ns"] > e["submit_ns"]):
                key = (_heat_row(e["complete_ns"] - e["submit_ns"]),
                       (e["complete_ns"] - from_ns) // window_ns)
                cells[key] = cells.get(key, 0) + 1
        rows = sorted({row for row, _ in cells})
        ys = list(range(rows[0], rows[-1] + 1)) if rows else []
        expected[chart] = {"y": ys, "z": [[cells.get((row, col)) for col in range(len(starts))]
                                          for row in ys]}
    return expected


def _check_p99_against_events(drawn: dict[str, Any], events: list[dict[str, Any]],
                              volume: str, window_ns: int, from_ns: int, to_ns: int) -> None:
    """Each period's p99 as drawn is within SEMANTICS.md's 1.1 % of the exact 99th
    percentile (order statistic of rank ceil(0.99 n)) of the events' own latencies."""
    for op in ("read", "write"):
        by_period: dict[int, list[int]] = {}
        for e in events:
            if (e["volume_id"] == volume and e["op"] == op and e["status"] != "invalid"
                    and from_ns <= e["complete_ns"] < to_ns):
                by_period.setdefault((e["complete_ns"] - from_ns) // window_ns, []).append(
                    e["complete_ns"] - e["submit_ns"])
        ys = drawn[op]["y"]
        assert {i for i, y in enumerate(ys) if y is not None} == set(by_period), op
        for i, latencies in by_period.items():
            exact = sorted(latencies)[-(-len(latencies) * 99 // 100) - 1]
            assert abs(ys[i] * 1e6 - exact) <= 0.011 * exact + 1, (op, i, ys[i], exact)


def _drawn(page: Any) -> dict[str, Any]:
    return page.evaluate("""() => {
        const view = document.getElementById("volume-view").dataset;
        const charts = {};
        for (const div of document.querySelectorAll(".chart")) {
            charts[div.id] = Object.fromEntries(
                div.data.map((t) => [t.name, {x: t.x, y: t.y, z: t.z}]));
        }
        return {volume: view.volume, window: view.window, fromNs: view.fromNs,
                toNs: view.toNs, charts};
    }""")


def _check_charts_against_api(page: Any, worker: WorkerProcess, token: str, volume: str,
                              events: list[dict[str, Any]]) -> int:
    drawn = _drawn(page)
    assert drawn["volume"] == volume
    window_ns = {"1s": NS, "1m": 60 * NS, "1h": 3600 * NS}[drawn["window"]]
    from_ns, to_ns = int(drawn["fromNs"]), int(drawn["toNs"])
    status, body = worker.get(f"/volumes/{volume}/stats?window={drawn['window']}"
                              f"&from={from_ns}&to={to_ns}", token=token)
    assert status == 200, body
    expected = _expected_charts(body["windows"], window_ns, from_ns, to_ns)
    assert set(drawn["charts"]) == set(CHARTS) | set(HEATMAPS)
    heat = _expected_heatmaps(events, volume, window_ns, from_ns, to_ns)
    for chart, op in HEATMAPS.items():
        got = drawn["charts"][chart][op]
        assert [x * 1_000_000 for x in got["x"]] == list(range(from_ns, to_ns, window_ns))
        assert got["y"] == heat[chart]["y"] and got["z"] == heat[chart]["z"], (
            f"{chart}: the heatmap and the events' own latencies differ")
        assert heat[chart]["y"], f"{chart} must show the simulated {op}s"
    _check_p99_against_events(drawn["charts"]["chart-p99"], events, volume, window_ns,
                              from_ns, to_ns)
    points = 0
    for chart, traces in expected.items():
        assert set(drawn["charts"][chart]) == set(traces), chart
        for name, want in traces.items():
            got = drawn["charts"][chart][name]
            assert [x * 1_000_000 for x in got["x"]] == list(range(from_ns, to_ns, window_ns))
            assert got["y"] == want, f"{chart} / {name}: chart and stats API differ"
            points += sum(1 for y in want if y)
    # And against the events themselves: ok reads completing in the range.
    reads = sum(1 for e in events if e["volume_id"] == volume and e["op"] == "read"
                and e["status"] == "ok" and from_ns <= e["complete_ns"] < to_ns)
    period_s = window_ns // NS
    per_period = [round(y * period_s) for y in drawn["charts"]["chart-iops"]["read"]["y"]]
    assert reads > 0 and sum(per_period) == reads  # ops/s x period: whole requests
    return points


def test_a_tenant_signs_in_and_the_charts_hold_the_stats_apis_numbers(
    panel: tuple[WorkerProcess, dict[str, str], list[dict[str, Any]]],
) -> None:
    from playwright.sync_api import sync_playwright

    assert shutil.which(CHROMIUM), (
        f"{CHROMIUM} is missing: bash deploy/debian-packages.sh browser (make test does it)")
    worker, tokens, events = panel
    tenant = sorted(tokens)[0]
    own = sorted({e["volume_id"] for e in events if e["tenant_id"] == tenant})
    others = sorted({e["volume_id"] for e in events} - set(own))
    assert own and others
    volume = own[0]
    OUTPUT.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # The panel runs under the worker's Content-Security-Policy (no eval, nothing
            # inline but plotly's styles): any violation is logged to the console.
            page.on("console", lambda msg: errors.append(msg.text)
                    if "Content Security Policy" in msg.text else None)
            first = page.goto(worker.url + "/dashboard")
            assert first is not None
            assert "default-src 'self'" in first.headers["content-security-policy"]
            assert page.url.endswith("/login"), "an unsigned browser must land on the form"
            page.fill("#token", "ioa_000000000000_" + "x" * 43)
            page.click("#sign-in")
            page.wait_for_selector("#error:not(:empty)")
            assert "unknown token" in page.text_content("#error")
            page.fill("#token", tokens[tenant])
            page.click("#sign-in")
            page.wait_for_url("**/dashboard")
            page.wait_for_selector("#volumes tbody tr[data-volume]")
            listed = page.eval_on_selector_all(
                "#volumes tbody tr", "rows => rows.map(r => r.dataset.volume)")
            assert listed == own, "the list must show exactly the tenant's volumes"
            assert tenant in page.text_content("#who")
            page.screenshot(path=str(OUTPUT / "dashboard-volumes.png"))

            page.click(f"text={volume}")
            page.wait_for_selector("body[data-view='volume']", state="attached")
            assert page.input_value("#range") == "15m"
            points = _check_charts_against_api(page, worker, tokens[tenant], volume, events)
            assert points > 100, "the 1 s charts must show the simulated minutes"
            page.screenshot(path=str(OUTPUT / "dashboard-volume-1s.png"), full_page=True)

            rendered = page.evaluate("document.body.dataset.rendered")
            page.select_option("#range", "1d")  # auto period: 1 minute
            page.wait_for_selector(f"body:not([data-rendered='{rendered}'])", state="attached")
            assert _drawn(page)["window"] == "1m"
            _check_charts_against_api(page, worker, tokens[tenant], volume, events)
            page.screenshot(path=str(OUTPUT / "dashboard-volume-1m.png"), full_page=True)

            # Another tenant's volume, typed into the address bar: not found, nothing drawn.
            page.goto(f"{worker.url}/dashboard#volume={others[0]}")
            page.wait_for_selector("#error:not(:empty)")
            assert "404 unknown volume" in page.text_content("#error")
            assert errors == [], f"JavaScript errors: {errors}"
        finally:
            browser.close()
    assert (OUTPUT / "dashboard-volume-1s.png").stat().st_size > 10_000
