// ioacct panel: the caller's volumes, and per volume CloudWatch-style charts drawn with
// plotly.js from GET /volumes/{id}/stats. Every number on a chart is one field of the
// stats API (or a sum of fields) divided by a constant; docs/dashboard.md says which.
"use strict";

const PERIOD_MS = {"1s": 1000, "1m": 60000, "1h": 3600000};
const RANGE_S = {"5m": 300, "15m": 900, "1h": 3600, "3h": 10800, "12h": 43200, "1d": 86400,
                 "3d": 259200, "7d": 604800, "30d": 2592000};
const OPS = ["read", "write", "flush", "discard"];
const $ = (id) => document.getElementById(id);
let timer = null;
let generation = 0;

async function api(path) {
  const response = await fetch(path, {credentials: "same-origin",
                                      headers: {"Accept": "application/json"}});
  if (response.status === 401) { location.href = "/login"; throw new Error("signed out"); }
  const body = await response.json();
  if (!response.ok) throw new Error(`${path}: ${response.status} ${body.reason || body.error}`);
  return body;
}

function autoPeriod(spanMs) {  // 1 s up to 15 min, 1 m up to a day, 1 h beyond
  return spanMs <= 900000 ? "1s" : spanMs <= 86400000 ? "1m" : "1h";
}

function timeRange() {
  const range = $("range").value;
  let fromMs, toMs;
  if (range === "custom" && $("from").value && $("to").value) {
    fromMs = Date.parse($("from").value + "Z");
    toMs = Date.parse($("to").value + "Z");
  } else {
    toMs = Date.now();
    fromMs = toMs - 1000 * (RANGE_S[range] || 900);
  }
  const period = $("period").value === "auto" ? autoPeriod(toMs - fromMs) : $("period").value;
  const step = PERIOD_MS[period];
  // Whole periods: [from, to) holds the windows whose start is in it; exact in ns strings.
  fromMs = Math.floor(fromMs / step) * step;
  toMs = Math.ceil(toMs / step) * step;
  return {period, step, fromMs, toMs,
          fromNs: (BigInt(fromMs) * 1000000n).toString(),
          toNs: (BigInt(toMs) * 1000000n).toString()};
}

function esc(text) {  // ids follow the id rule (no markup), but never trust that here
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function rate(n) {
  if (n >= 100) return n.toFixed(0);
  if (n >= 1) return n.toFixed(1);
  return n === 0 ? "0" : n.toFixed(2);
}

function bytesRate(b) {
  const units = ["B/s", "KiB/s", "MiB/s", "GiB/s"];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
  return `${rate(b)} ${units[i]}`;
}

function ago(ns) {
  if (!ns) return "never";
  const s = Math.max(0, (Date.now() - Number(ns) / 1e6) / 1000);
  return s < 90 ? `${s.toFixed(0)} s ago` : s < 5400 ? `${(s / 60).toFixed(0)} min ago`
    : new Date(Number(ns) / 1e6).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

async function showList() {
  $("list-view").hidden = false;
  $("volume-view").hidden = true;
  const body = await api("/volumes");
  const rows = body.volumes.map((v) => {
    const a = v.activity, t = v.totals;
    const errors = t.read_ios_error + t.write_ios_error;
    const id = encodeURIComponent(v.volume_id);
    return `<tr data-volume="${esc(id)}"><td><a href="#volume=${id}">${esc(v.volume_id)}</a></td>
      <td>${esc(v.tenant_id)}</td><td>${ago(v.last_io_ns)}</td>
      <td class="num">${rate(a.read_iops)}</td><td class="num">${rate(a.write_iops)}</td>
      <td class="num">${bytesRate(a.read_bytes_per_s)}</td>
      <td class="num">${bytesRate(a.write_bytes_per_s)}</td>
      <td class="num">${(100 * a.busy_fraction).toFixed(1)} %</td>
      <td class="num">${errors}</td><td class="num">${v.invalid_ios}</td></tr>`;
  });
  $("volumes").tBodies[0].innerHTML = rows.join("") ||
    `<tr><td colspan="10">No volumes yet.</td></tr>`;
  for (const row of $("volumes").tBodies[0].rows) {
    row.addEventListener("click", () => { location.hash = "volume=" + row.dataset.volume; });
  }
  $("list-note").textContent = `${body.volumes.length} volume(s)` +
    (body.complete ? "" : " — some workers did not answer: the list may be incomplete");
  document.body.dataset.view = "list";
}

// One series per trace: f(window) for a window of the API, absent(): value for a period
// without a window (no I/O completed and none in flight: zero counts, all idle; latency
// undefined, so a gap).
function charts(periodS) {
  const sum = (w, fmt) => OPS.reduce((acc, op) => acc + w[fmt.replace("{op}", op)], 0);
  const ms = (ns) => (ns === null || ns === undefined ? null : ns / 1e6);
  return [
    {id: "chart-iops", title: "Operations (ops/s) · VolumeReadOps, VolumeWriteOps per second",
     traces: [["read", (w) => w.read_ios / periodS, 0], ["write", (w) => w.write_ios / periodS, 0]]},
    {id: "chart-throughput", title: "Throughput (bytes/s) · VolumeReadBytes, VolumeWriteBytes per second",
     traces: [["read", (w) => w.read_bytes / periodS, 0], ["write", (w) => w.write_bytes / periodS, 0]]},
    {id: "chart-latency", title: "Average latency (ms) · VolumeAverageRead/WriteLatency", gaps: true,
     traces: [["read", (w) => ms(w.avg_read_latency_ns), null],
              ["write", (w) => ms(w.avg_write_latency_ns), null]]},
    {id: "chart-p99", title: "p99 latency (ms, within 1.1 % · exponential histogram)", gaps: true,
     traces: [["read", (w) => ms(w.p99_read_latency_ns), null],
              ["write", (w) => ms(w.p99_write_latency_ns), null]]},
    {id: "chart-queue", title: "Queue length (requests in flight, time-weighted) · VolumeQueueLength",
     traces: [["all ops", (w) => sum(w, "{op}_inflight_time_ns") / w.window_length_ns, 0],
              ["read", (w) => w.avg_read_queue_depth, 0], ["write", (w) => w.avg_write_queue_depth, 0]]},
    {id: "chart-util", title: "Utilization (% of the period with I/O in flight)",
     traces: [["busy", (w) => 100 * w.util, 0]]},
    {id: "chart-idle", title: "Idle time (s per period) · VolumeIdleTime",
     traces: [["idle", (w) => w.idle_time_ns / 1e9, periodS]]},
    {id: "chart-errors", title: "Errors and invalid requests (count per period)",
     traces: [["failed", (w) => sum(w, "{op}_ios_error"), 0],
              ["invalid", (w) => sum(w, "invalid_{op}_ios"), 0]]},
  ];
}

// The latency heatmap of one op: rows are buckets 8 per octave (the stats API's scale-5
// buckets, 32 per octave, summed four by four: bucket i lies in row floor(i / 4), exact),
// columns the periods; a cell is how many requests completed in the period with a latency
// in the row's range; empty cells are null (drawn blank).
const HEAT_SHIFT = 4;
const HEAT_PER_OCTAVE = 8;

function heatRows(exp) {
  const rows = new Map();
  if (!exp) return rows;  // a window stored before the exponential histogram existed
  exp.counts.forEach((count, k) => {
    const row = Math.floor((exp.offset + k) / HEAT_SHIFT);
    if (count) rows.set(row, (rows.get(row) || 0) + count);
  });
  return rows;
}

function latencyLabel(ns) {
  return ns >= 1e9 ? `${+(ns / 1e9).toPrecision(3)} s` : ns >= 1e6 ? `${+(ns / 1e6).toPrecision(3)} ms`
    : ns >= 1e3 ? `${+(ns / 1e3).toPrecision(3)} µs` : `${+ns.toPrecision(3)} ns`;
}

function heatmap(op, xs, byStart) {
  const columns = xs.map((t) => (byStart.has(t) ? heatRows(byStart.get(t)[`${op}_latency_exp`])
    : new Map()));
  const used = columns.flatMap((c) => [...c.keys()]);
  const lo = Math.min(...used), hi = Math.max(...used);
  const ys = used.length ? Array.from({length: hi - lo + 1}, (_, k) => lo + k) : [];
  const z = ys.map((row) => columns.map((c) => c.get(row) || null));
  const upper = (row) => 2 ** ((row + 1) / HEAT_PER_OCTAVE);  // the row's upper bound, ns
  return {
    trace: {name: op, type: "heatmap", x: xs, y: ys, z, colorscale: "Viridis",
            customdata: ys.map((row) => xs.map(() => `${latencyLabel(upper(row - 1))} – ${
              latencyLabel(upper(row))}`)),
            hovertemplate: "%{customdata}: %{z} request(s)<extra>" + op + "</extra>",
            showscale: true, hoverongaps: false,
            colorbar: {thickness: 8, len: 0.9, title: {text: "requests", side: "right"}}},
    yaxis: {tickvals: ys.filter((row) => row % HEAT_PER_OCTAVE === 0),
            ticktext: ys.filter((row) => row % HEAT_PER_OCTAVE === 0)
              .map((row) => latencyLabel(2 ** (row / HEAT_PER_OCTAVE)))},
  };
}

const LAYOUT = {margin: {l: 56, r: 12, t: 32, b: 36}, showlegend: true,
                legend: {orientation: "h", y: 1.02, x: 1, xanchor: "right", yanchor: "bottom"}};

function drawHeatmaps(xs, byStart, r) {
  for (const op of ["read", "write"]) {
    const {trace, yaxis} = heatmap(op, xs, byStart);
    Plotly.react(`chart-heat-${op}`, [trace], {
      ...LAYOUT, showlegend: false,
      title: {text: `${op[0].toUpperCase() + op.slice(1)} latency distribution ` +
              "(requests per bucket, 8 per octave)", font: {size: 13}, x: 0.01},
      xaxis: {type: "date", range: [r.fromMs, r.toMs]}, yaxis,
    }, {displaylogo: false, responsive: true});
  }
}

async function showVolume(volumeId) {
  const mine = ++generation;
  $("list-view").hidden = true;
  $("volume-view").hidden = false;
  $("volume-title").textContent = volumeId;
  const r = timeRange();
  const q = new URLSearchParams({window: r.period, from: r.fromNs, to: r.toNs});
  const body = await api(`/volumes/${encodeURIComponent(volumeId)}/stats?${q}`);
  if (mine !== generation) return;  // a newer request is under way
  const byStart = new Map(body.windows.map((w) => [w.window_start_ns / 1e6, w]));
  const xs = [];
  for (let t = r.fromMs; t < r.toMs; t += r.step) xs.push(t);
  const periodS = r.step / 1000;
  for (const chart of charts(periodS)) {
    const traces = chart.traces.map(([name, f, absent]) => ({
      // Latency is undefined where nothing completed: markers keep a lone point visible.
      name, type: "scatter", marker: {size: 3},
      mode: r.period === "1h" || chart.gaps ? "lines+markers" : "lines",
      x: xs, y: xs.map((t) => (byStart.has(t) ? f(byStart.get(t)) : absent)),
      connectgaps: false, line: {width: 1.5},
      hovertemplate: "%{y:.4~g}<extra>" + name + "</extra>",
    }));
    Plotly.react(chart.id, traces, {
      ...LAYOUT, title: {text: chart.title, font: {size: 13}, x: 0.01},
      xaxis: {type: "date", range: [r.fromMs, r.toMs]},
      yaxis: chart.id === "chart-throughput" ? {rangemode: "tozero", tickformat: ".3s",
                                                 ticksuffix: "B/s"} : {rangemode: "tozero"},
      hovermode: "x unified",
    }, {displaylogo: false, responsive: true});
  }
  drawHeatmaps(xs, byStart, r);
  const view = $("volume-view");
  view.dataset.volume = volumeId;
  view.dataset.window = r.period;
  view.dataset.fromNs = r.fromNs;
  view.dataset.toNs = r.toNs;
  const open = body.windows.filter((w) => w.revision === null).length;
  $("volume-note").textContent = `${body.windows.length} window(s) of ${r.period}` +
    (open ? `, ${open} still open (numbers so far)` : "") + " · times in UTC";
  document.body.dataset.view = "volume";
  document.body.dataset.rendered = String(Number(document.body.dataset.rendered || 0) + 1);
}

async function render() {
  $("error").textContent = "";
  const hash = new URLSearchParams(location.hash.slice(1));
  try {
    if (hash.get("volume")) await showVolume(hash.get("volume"));
    else await showList();
  } catch (e) {
    $("error").textContent = String(e.message || e);
  }
}

function schedule() {
  if (timer) clearInterval(timer);
  const seconds = Number($("refresh").value);
  if (seconds > 0) timer = setInterval(render, seconds * 1000);
}

async function start() {
  const who = await api("/whoami");
  $("who").textContent = who.role === "operator" ? "operator (all tenants)"
    : `tenant ${who.tenant_id}`;
  $("range").addEventListener("change", () => {
    $("custom").hidden = $("range").value !== "custom";
    render();
  });
  for (const id of ["from", "to", "period"]) $(id).addEventListener("change", render);
  $("refresh").addEventListener("change", schedule);
  $("reload").addEventListener("click", render);
  $("sign-out").addEventListener("click", async () => {
    await fetch("/logout", {method: "POST", credentials: "same-origin"});
    location.href = "/login";
  });
  window.addEventListener("hashchange", render);
  schedule();
  await render();
}

start().catch((e) => { $("error").textContent = String(e.message || e); });
