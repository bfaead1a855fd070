#pragma once

/// @file
/// The dashboard page HttpServer serves at `/`: one self-contained HTML file (no external
/// scripts, fonts or styles, so it works offline) that polls the JSON API, and its CSP.

#include <string_view>

namespace jobq::detail {

/// @brief The page's Content-Security-Policy: its inline script and style, fetches to the
/// server itself, nothing else; never framed.
inline constexpr std::string_view dashboard_csp =
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// @brief The dashboard page.
inline constexpr std::string_view dashboard_html = R"JOBQ(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>jobq dashboard</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1d2433; background: #f7f8fa; }
  h1 { font-size: 1.4rem; margin: 0 0 .25rem; } h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
  table { border-collapse: collapse; background: #fff; min-width: 40rem; }
  th, td { padding: .35rem .7rem; border-bottom: 1px solid #e3e6eb; text-align: left; vertical-align: top; }
  #queues th, #queues td { padding: .35rem .45rem; } /* 15 columns: fit a 1280 px screen */
  #workers th, #workers td { white-space: nowrap; } #workers td[data-field="running"], #workers td[data-field="leased"] { white-space: normal; }
  th { background: #eef0f4; font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .err { color: #a32121; font-family: ui-monospace, monospace; font-size: 12px; max-width: 40rem; word-break: break-word; white-space: pre-wrap; }
  button { cursor: pointer; border: 1px solid #9aa4b5; background: #fff; border-radius: 4px; padding: .15rem .6rem; }
  button:hover { background: #eef0f4; } .muted { color: #6b7385; } .paused { color: #a36a00; font-weight: 600; }
  #chart { background: #fff; border: 1px solid #e3e6eb; } #status.bad { color: #a32121; }
  nav { margin: .25rem 0 .75rem; } nav a { margin-right: 1rem; } a { color: #2a56b8; }
  pre { background: #fff; border: 1px solid #e3e6eb; padding: .5rem; max-width: 60rem; overflow: auto; white-space: pre-wrap; word-break: break-word; }
  .tabs button.on { background: #3b6fd8; color: #fff; border-color: #3b6fd8; } dl { display: grid; grid-template-columns: 10rem auto; gap: .2rem .8rem; }
  dt { color: #6b7385; } dd { margin: 0; }
  svg.spark { display: block; background: #fbfcfd; } .spark .done { fill: #3b6fd8; } .spark .fail { fill: #c8332f; }
  .spark .depth { fill: none; stroke: #5b6475; stroke-width: 1.2; } .spark circle { fill: #5b6475; }
</style>
</head>
<body data-loaded="0">
<h1>jobq</h1>
<nav><a href="#/">overview</a><a href="#/workers">workers</a><a href="#/schedules">schedules</a>
<input id="search" size="28" placeholder="job id or unique key"> <button id="search-go">find</button>
<span id="search-status" class="muted"></span></nav>
<div id="status" class="muted">loading…</div>

<section id="view-queue" hidden>
<h2>Queue <span id="q-name"></span> <span id="q-paused" class="paused"></span></h2>
<div id="q-limits" class="muted"></div>
<div class="tabs" id="q-tabs"></div>
<p>name <input id="q-filter-name" size="16"> text in payload or error <input id="q-filter-text" size="24">
<button id="q-filter-go">filter</button> <button id="q-bulk" hidden></button> <span id="q-bulk-status" class="muted"></span></p>
<table id="q-jobs">
  <thead><tr><th>id</th><th>name</th><th>state</th><th>attempts</th><th>run at / finished</th><th>last error</th></tr></thead>
  <tbody></tbody>
</table>
<p><button id="q-newer">newer</button> <button id="q-older">older</button> <span id="q-page" class="muted"></span></p>
</section>

<section id="view-job" hidden>
<h2 id="j-title"></h2>
<p id="j-actions"></p>
<dl id="j-fields"></dl>
<h2>Payload</h2><pre id="j-payload"></pre>
<h2>Result</h2><pre id="j-result"></pre>
<h2>Attempts</h2>
<table id="j-errors"><thead><tr><th>attempt</th><th>at</th><th>error</th></tr></thead><tbody></tbody></table>
</section>

<section id="view-workers" hidden>
<h2>Workers <span class="muted">(live, from every process)</span></h2>
<table id="workers">
  <thead><tr><th>worker</th><th>host</th><th>pid</th><th>queues</th><th>concurrency</th><th title="jobs whose handler runs, and for how long">running</th>
  <th title="jobs leased ahead of a free handler thread, not started">leased ahead</th><th>started</th><th>last heartbeat</th>
  <th title="time since the last heartbeat">age</th></tr></thead>
  <tbody></tbody>
</table>
<div id="workers-none" class="muted"></div>
</section>

<section id="view-schedules" hidden>
<h2>Schedules</h2>
<table id="schedules">
  <thead><tr><th>name</th><th>cron</th><th>time zone</th><th>queue</th><th>job</th><th>next run</th></tr></thead>
  <tbody></tbody>
</table>
<div id="schedules-none" class="muted"></div>
</section>

<section id="view-overview">
<h2>Queues</h2>
<table id="queues">
  <thead><tr><th>queue</th><th>state</th><th>queued</th><th title="of the queued, not due yet">delayed</th><th>active</th><th>completed</th><th>dead</th>
  <th>cancelled</th><th>waiting</th><th>done / hour</th><th title="completed per minute, averaged over the last 5 full minutes">jobs/min</th>
  <th title="completed (blue) and failed attempts (red) per minute, last hour">done / failed</th>
  <th title="queued jobs (due and delayed) per minute, last hour, since the dashboard server started">depth</th>
  <th>oldest wait</th><th></th></tr></thead>
  <tbody></tbody>
</table>

<h2><a href="#/workers">Workers</a> <span class="muted">(live, from every process)</span></h2>
<div id="workers-summary"></div>

<h2>Throughput, last hour <span class="muted">(completed jobs per minute, all queues)</span></h2>
<svg id="chart" width="720" height="160" role="img" aria-label="completed jobs per minute"></svg>

<h2>Dead jobs</h2>
<table id="dead-jobs">
  <thead><tr><th>id</th><th>queue</th><th>name</th><th>attempts</th><th>last error</th><th></th></tr></thead>
  <tbody></tbody>
</table>
<div id="dead-more" class="muted"></div>

<h2>Failing, waiting to retry</h2>
<table id="retrying-jobs">
  <thead><tr><th>id</th><th>queue</th><th>name</th><th>attempts</th><th>last error</th><th></th></tr></thead>
  <tbody></tbody>
</table>
<div id="retrying-more" class="muted"></div>

<h2>Flow <span class="muted">(the members of a job's flow and what each runs after)</span></h2>
<div>job <input id="flow-job" type="number" min="1" size="10"> <button id="flow-show">show its flow</button>
<span id="flow-status" class="muted"></span></div>
<table id="flow" hidden>
  <thead><tr><th>id</th><th>queue</th><th>name</th><th>state</th><th>attempts</th><th>after</th><th>last error</th></tr></thead>
  <tbody></tbody>
</table>

</section>

<script>
"use strict";
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
};
const age = s => s == null ? "–" : s < 120 ? Math.round(s) + "s" : s < 7200 ? Math.round(s / 60) + "m" : Math.round(s / 3600) + "h";
let actions = true, refreshing = false;

async function api(path, options) {
  const r = await fetch(path, options);
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

async function act(path) {
  try {
    await api(path, { method: "POST", headers: { "X-Jobq-Action": "1" } });
  } catch (e) {
    setStatus("action failed: " + e.message, true);
  }
  await refresh();
}

function setStatus(text, bad) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.className = bad ? "bad" : "muted";
}

const svgNs = "http://www.w3.org/2000/svg";
const svgEl = (tag, attrs, text) => {
  const e = document.createElementNS(svgNs, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text != null) e.textContent = text;
  return e;
};
const sum = a => a.reduce((x, y) => x + y, 0);

function drawChart(series) {
  const svg = document.getElementById("chart");
  const W = 720, H = 160, pad = 24, n = series.length, max = Math.max(1, ...series);
  const bw = (W - 2 * pad) / n;
  svg.replaceChildren();
  series.forEach((v, i) => {
    const h = (H - 2 * pad) * v / max;
    const r = svgEl("rect", { x: pad + i * bw + 1, y: H - pad - h, width: Math.max(1, bw - 2), height: h,
                              fill: "#3b6fd8", "data-count": v });
    r.append(svgEl("title", {}, (n - 1 - i) + " min ago: " + v));
    svg.append(r);
  });
  const label = (x, y, text, anchor) =>
    svg.append(svgEl("text", { x, y, "font-size": "11", fill: "#6b7385", "text-anchor": anchor }, text));
  label(pad, H - 6, "-60 min", "start"); label(W - pad, H - 6, "now", "end"); label(pad, 14, "max " + max + "/min", "start");
  svg.setAttribute("data-total", sum(series));
}

const SW = 120, SH = 28;  // a sparkline: one minute is 2 px

// A queue's last hour: completed (blue) and failed attempts (red) per minute, stacked bars.
function throughputSpark(q) {
  const done = q.completed_per_minute, failed = q.failed_per_minute, bw = SW / done.length;
  const max = Math.max(1, ...done.map((c, i) => c + failed[i]));
  const svg = svgEl("svg", { width: SW, height: SH, class: "spark spark-throughput", role: "img",
                             "data-completed": sum(done), "data-failed": sum(failed) });
  const label = "last hour: " + sum(done) + " completed, " + sum(failed) + " failed attempts; busiest minute " + max;
  svg.append(svgEl("title", {}, label));
  svg.setAttribute("aria-label", label);
  done.forEach((c, i) => {
    const hc = (SH - 2) * c / max, hf = (SH - 2) * failed[i] / max, x = i * bw;
    if (c > 0) svg.append(svgEl("rect", { class: "done", x, y: SH - hc, width: bw - 0.4, height: hc }));
    if (failed[i] > 0) svg.append(svgEl("rect", { class: "fail", x, y: SH - hc - hf, width: bw - 0.4, height: hf }));
  });
  return svg;
}

// A queue's depth per minute as a line; minutes the server did not sample (before it started) are gaps.
function depthSpark(q) {
  const depth = q.depth_per_minute, bw = SW / depth.length, known = depth.filter(d => d != null);
  const max = Math.max(1, ...known), y = d => SH - 2 - (SH - 4) * d / max;
  const svg = svgEl("svg", { width: SW, height: SH, class: "spark spark-depth", role: "img",
                             "data-points": known.length, "data-last": known.length ? known[known.length - 1] : "" });
  const label = known.length ? "queued now " + known[known.length - 1] + ", at most " + Math.max(...known) +
    " in the last " + known.length + " sampled minutes" : "no depth sampled yet";
  svg.append(svgEl("title", {}, label));
  svg.setAttribute("aria-label", label);
  let run = [];
  const flush = () => {
    if (run.length > 1) svg.append(svgEl("polyline", { class: "depth", points: run.join(" ") }));
    run = [];
  };
  depth.forEach((d, i) => d == null ? flush() : run.push((i * bw + bw / 2) + "," + y(d)));
  flush();
  const last = depth.length - 1 - [...depth].reverse().findIndex(d => d != null);
  if (known.length) svg.append(svgEl("circle", { cx: last * bw + bw / 2, cy: y(depth[last]), r: 1.5 }));
  return svg;
}
const rate = r => r < 10 ? r.toFixed(1) : String(Math.round(r));

const lastError = j => j.errors.length ? j.errors[j.errors.length - 1].message : "";
const jobLink = id => el("a", { href: "#/job/" + encodeURIComponent(id) }, id);
const when = ms => ms == null ? "–" : new Date(ms).toISOString().replace("T", " ").slice(0, 19) + "Z";
const qs = o => Object.entries(o).filter(([, v]) => v !== "" && v != null).map(([k, v]) => k + "=" + encodeURIComponent(v)).join("&");

function jobRow(j, button) {
  const cell = el("td", {}, button);
  if (j.flow_id) {
    const f = el("button", { class: "flow" }, "flow");
    f.onclick = () => showFlow(j.id);
    cell.append(" ", f);
  }
  return el("tr", { "data-job-id": j.id },
    el("td", { class: "num" }, jobLink(j.id)), el("td", {}, j.queue), el("td", {}, j.name),
    el("td", { class: "num" }, j.attempts + "/" + j.max_attempts), el("td", { class: "err" }, lastError(j)),
    cell);
}

// The flow shown (a member's id), reloaded with every refresh so that its states move.
let flowJob = null;
const states = ["queued", "active", "completed", "dead", "cancelled", "waiting"];  // as jobq flow prints them

async function showFlow(id) {
  flowJob = id;
  document.getElementById("flow-job").value = id;
  await loadFlow();
}

async function loadFlow() {
  if (flowJob == null) return;
  const table = document.getElementById("flow"), status = document.getElementById("flow-status");
  try {
    const f = await api("/api/jobs/" + encodeURIComponent(flowJob) + "/flow");
    status.textContent = "flow " + f.id + ": " + f.size + " members, " +
      states.filter(s => f.counts[s] > 0).map(s => f.counts[s] + " " + s).join(", ") +
      (f.more ? " (the first " + f.members.length + " shown; the CLI: jobq flow " + flowJob + ")" : "");
    table.querySelector("tbody").replaceChildren(...f.members.map(m => el("tr", { "data-job-id": m.id, "data-state": m.state },
      el("td", { class: "num" }, m.id), el("td", {}, m.queue), el("td", {}, m.name),
      el("td", { "data-field": "state" }, m.state), el("td", { class: "num" }, m.attempts + "/" + m.max_attempts),
      el("td", { "data-field": "after" }, m.depends_on.join(", ")), el("td", { class: "err" }, lastError(m)))));
    table.hidden = false;
  } catch (e) {
    status.textContent = e.message;
    table.hidden = true;
  }
}

async function refreshOverview() {
  {
    const data = await api("/api/queues");
    actions = data.actions;
    const tbody = document.querySelector("#queues tbody");
    const rows = [], total = new Array(60).fill(0), dead = [], retrying = [];
    for (const q of data.queues) {
      const c = q.counts, hour = sum(q.completed_per_minute);
      q.completed_per_minute.forEach((v, i) => total[i] += v);
      const toggle = el("button", { class: q.paused ? "resume" : "pause" }, q.paused ? "resume" : "pause");
      // the name goes in the query: a browser resolves "." and ".." path segments, even as %2E
      toggle.onclick = () => act("/api/queues/" + (q.paused ? "resume" : "pause") + "?queue=" + encodeURIComponent(q.queue));
      toggle.disabled = !actions;
      const cell = (field, v) => el("td", { class: "num", "data-field": field }, v);
      rows.push(el("tr", { "data-queue": q.queue },
        el("td", {}, el("a", { href: "#/queue/" + encodeURIComponent(q.queue) }, q.queue)),
        el("td", { class: q.paused ? "paused" : "", "data-field": "paused" }, q.paused ? "paused" : "running"),
        cell("queued", c.queued), cell("delayed", c.delayed), cell("active", c.active), cell("completed", c.completed), cell("dead", c.dead),
        cell("cancelled", c.cancelled), cell("waiting", c.waiting), cell("hour", hour), cell("rate", rate(q.jobs_per_minute)),
        el("td", { "data-field": "throughput" }, throughputSpark(q)), el("td", { "data-field": "depth" }, depthSpark(q)),
        cell("oldest", age(q.oldest_waiting_seconds)), el("td", {}, toggle)));
      const enc = encodeURIComponent(q.queue);
      if (c.dead > 0) dead.push(api("/api/jobs?state=dead&queue=" + enc).then(p => ({ ...p, total: c.dead })));
      if (c.queued > 0) retrying.push(api("/api/jobs?state=queued&failed=1&queue=" + enc));
    }
    tbody.replaceChildren(...rows);
    drawChart(total);
    const w = (await api("/api/workers")).workers, n = w.length, sumOf = f => sum(w.map(f));
    document.getElementById("workers-summary").replaceChildren(n === 0 ? "no live worker" :
      el("a", { href: "#/workers" }, n + " live worker" + (n === 1 ? "" : "s")),
      n === 0 ? "" : ": " + sumOf(x => x.running.length) + " running, " + sumOf(x => x.leased.length) +
      " leased ahead, " + sumOf(x => x.concurrency) + " handler threads");
    // Lists are cut per queue: say how many more there are (dead: from the counts; retrying: unknown).
    const more = (id, pages) => {
      const parts = pages.filter(p => p.more).map(p =>
        p.total != null ? (p.total - p.jobs.length) + " more in " + p.queue : "more in " + p.queue);
      document.getElementById(id).textContent = parts.length ? parts.join(" · ") + " (the CLI: jobq jobs)" : "";
    };
    const deadPages = await Promise.all(dead), retryPages = await Promise.all(retrying);
    more("dead-more", deadPages);
    more("retrying-more", retryPages);
    const deadRows = [];
    for (const page of deadPages) {
      for (const j of page.jobs) {
        const b = el("button", { class: "redrive" }, "re-drive");
        b.onclick = () => act("/api/jobs/" + encodeURIComponent(j.id) + "/redrive");
        b.disabled = !actions;
        deadRows.push(jobRow(j, b));
      }
    }
    document.querySelector("#dead-jobs tbody").replaceChildren(...deadRows);
    const retryRows = [];
    for (const page of retryPages) {
      for (const j of page.jobs) {
        const b = el("button", { class: "cancel" }, "cancel");
        b.onclick = () => act("/api/jobs/" + encodeURIComponent(j.id) + "/cancel");
        b.disabled = !actions;
        retryRows.push(jobRow(j, b));
      }
    }
    document.querySelector("#retrying-jobs tbody").replaceChildren(...retryRows);
    await loadFlow();
    return data.now;
  }
}

// --- a queue: its jobs in one state, newest first, filtered, paged; bulk actions -------------
const queueStates = ["queued", "retrying", "active", "waiting", "completed", "dead", "cancelled"];
const qv = { name: null, state: "queued", offset: 0, limit: 50, filterName: "", filterText: "" };

function queueParams() {
  const retrying = qv.state === "retrying";
  return { queue: qv.name, state: retrying ? "queued" : qv.state, failed: retrying ? "1" : "",
           name: qv.filterName, text: qv.filterText };
}

async function refreshQueue() {
  const data = await api("/api/queues");
  actions = data.actions;
  const q = data.queues.find(x => x.queue === qv.name);
  document.getElementById("q-name").textContent = qv.name;
  document.getElementById("q-paused").textContent = q && q.paused ? "paused" : "";
  const l = q ? q.limits : null;
  document.getElementById("q-limits").textContent = !l ? "" :
    [l.rate ? "at most " + l.rate.max + " starts per " + age(l.rate.window_ms / 1000) : "no rate limit",
     l.group_concurrency ? l.group_concurrency + " active per group" : "no group limit"].join(" · ");
  document.getElementById("q-tabs").replaceChildren(...queueStates.map(st => {
    const b = el("button", { class: st === qv.state ? "on" : "", "data-state": st },
                 st + (q && st !== "retrying" ? " " + q.counts[st] : ""));
    b.onclick = () => { qv.state = st; qv.offset = 0; route(); };
    return b;
  }));
  const page = await api("/api/jobs?" + qs({ ...queueParams(), offset: qv.offset, limit: qv.limit, order: "desc" }));
  document.querySelector("#q-jobs tbody").replaceChildren(...page.jobs.map(j => el("tr", { "data-job-id": j.id },
    el("td", { class: "num" }, jobLink(j.id)), el("td", {}, j.name), el("td", {}, j.state),
    el("td", { class: "num" }, j.attempts + "/" + j.max_attempts),
    el("td", {}, when(j.finished_at != null ? j.finished_at : j.run_at)), el("td", { class: "err" }, lastError(j)))));
  document.getElementById("q-page").textContent = page.jobs.length ?
    "jobs " + (qv.offset + 1) + "–" + (qv.offset + page.jobs.length) + (page.more ? ", more older" : "") : "no jobs";
  document.getElementById("q-newer").disabled = qv.offset === 0;
  document.getElementById("q-older").disabled = !page.more;
  const bulk = document.getElementById("q-bulk");
  const verb = qv.state === "dead" ? "redrive" : ["queued", "retrying", "waiting", "active"].includes(qv.state) ? "cancel" : null;
  bulk.hidden = !verb || !actions;
  bulk.textContent = verb === "redrive" ? "re-drive all matching" : "cancel all matching";
  bulk.onclick = async () => {
    const status = document.getElementById("q-bulk-status");
    try {
      const c = await api("/api/jobs/count?" + qs(queueParams()));
      const what = (c.exact ? "" : "at least ") + c.count + " " + qv.state + " job" + (c.count === 1 ? "" : "s") + " of " + qv.name +
        (qv.filterName ? " named " + qv.filterName : "") + (qv.filterText ? " containing \u201c" + qv.filterText + "\u201d" : "");
      if (!confirm((verb === "redrive" ? "Re-drive " : "Cancel ") + what + "?")) return;
      const r = await api("/api/queues/bulk?" + qs({ ...queueParams(), action: verb }),
                          { method: "POST", headers: { "X-Jobq-Action": "1" } });
      status.textContent = (verb === "redrive" ? "re-drove " : "cancelled ") + r.done + (r.refused ? ", " + r.refused + " refused" : "");
    } catch (e) {
      status.textContent = "failed: " + e.message;
    }
    await route();
  };
  return data.now;
}
document.getElementById("q-filter-go").onclick = () => {
  qv.filterName = document.getElementById("q-filter-name").value.trim();
  qv.filterText = document.getElementById("q-filter-text").value;
  qv.offset = 0;
  route();
};
document.getElementById("q-newer").onclick = () => { qv.offset = Math.max(0, qv.offset - qv.limit); route(); };
document.getElementById("q-older").onclick = () => { qv.offset += qv.limit; route(); };

// --- a job: everything stored for it, its holder, its attempts; actions ---------------------
async function refreshJob(id) {
  const j = await api("/api/jobs/" + encodeURIComponent(id));
  document.getElementById("j-title").replaceChildren("job " + j.id + " " + j.name + " [",
    el("a", { href: "#/queue/" + encodeURIComponent(j.queue) }, j.queue), "] " + j.state);
  const now = Date.now();
  const can = { redrive: j.state === "dead", cancel: ["queued", "waiting", "active"].includes(j.state),
                run_now: j.state === "queued" && j.run_at > now, remove: ["completed", "dead", "cancelled"].includes(j.state) };
  const labels = { redrive: "re-drive", cancel: "cancel", run_now: "run now", remove: "delete" };
  document.getElementById("j-actions").replaceChildren(...Object.keys(labels).filter(a => can[a] && actions).map(a => {
    const b = el("button", { class: a, "data-action": a }, labels[a]);
    b.onclick = async () => {
      if (a === "remove" && !confirm("Delete job " + j.id + " for good?")) return;
      await act("/api/jobs/" + encodeURIComponent(j.id) + "/" + a);
      if (a === "remove") location.hash = "#/queue/" + encodeURIComponent(j.queue);
    };
    return b;
  }));
  const h = j.holder;
  const fields = [["priority", j.priority], ["attempts", j.attempts + " of " + j.max_attempts], ["created", when(j.created_at)],
    ["run at", when(j.run_at)], ["expires", j.expires_at ? when(j.expires_at) + " (not started by then: cancelled)" : "never"],
    ["finished", when(j.finished_at)], ["lease until", when(j.lease_until)],
    ["held by", h === undefined ? "–" : h === null ? "no live worker (its lease will run out)" :
      h.worker + " (" + h.host + ", pid " + h.pid + "), " + (h.running ? "running since " + when(h.started_at) : "leased ahead, not started")],
    ["backoff", j.backoff ? JSON.stringify(j.backoff) : "custom"], ["timeout", j.timeout_ms ? j.timeout_ms + " ms" : "none"],
    ["unique key", j.unique_key || "–"], ["group", j.group || "–"],
    ["progress", j.progress + "%" + (j.progress_message ? " " + j.progress_message : "")],
    ["flow", j.flow_id ? j.flow_id + (j.depends_on && j.depends_on.length ? ", after " + j.depends_on.join(", ") : "") : "–"]];
  document.getElementById("j-fields").replaceChildren(...fields.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-field": k }, v)]));
  document.getElementById("j-payload").textContent = JSON.stringify(j.payload, null, 2);
  document.getElementById("j-result").textContent = j.result == null ? "–" : JSON.stringify(j.result, null, 2);
  document.querySelector("#j-errors tbody").replaceChildren(...j.errors.map(e =>
    el("tr", {}, el("td", { class: "num" }, e.attempt), el("td", {}, when(e.at)), el("td", { class: "err" }, e.message))));
}

// --- workers: every live worker of every process, the jobs it runs and holds ----------------
const joined = (items, part) => items.flatMap((x, i) => i ? [", ", ...part(x)] : part(x));

async function refreshWorkers() {
  const w = await api("/api/workers");
  const since = ms => age((w.now - ms) / 1000);
  document.querySelector("#workers tbody").replaceChildren(...w.workers.map(x => el("tr", { "data-worker": x.id },
    el("td", { "data-field": "id" }, x.id), el("td", { "data-field": "host" }, x.host),
    el("td", { class: "num", "data-field": "pid" }, x.pid),
    el("td", { "data-field": "queues" }, ...joined(x.queues, q => [el("a", { href: "#/queue/" + encodeURIComponent(q) }, q)])),
    el("td", { class: "num", "data-field": "concurrency" }, x.concurrency),
    el("td", { "data-field": "running" }, ...joined(x.running, r => [jobLink(r.id), " (" + since(r.started_at) + ")"])),
    el("td", { "data-field": "leased" }, ...joined(x.leased, id => [jobLink(id)])),
    el("td", { "data-field": "started" }, when(x.started_at)), el("td", { "data-field": "heartbeat" }, when(x.heartbeat_at)),
    el("td", { class: "num", "data-field": "heartbeat-age" }, since(x.heartbeat_at)))));
  document.getElementById("workers-none").textContent = w.workers.length ? "" : "no live worker";
  return w.now;
}

async function refreshSchedules() {
  const data = await api("/api/schedules");
  document.querySelector("#schedules tbody").replaceChildren(...data.schedules.map(s => el("tr", { "data-schedule": s.name },
    el("td", {}, s.name), el("td", {}, s.cron), el("td", {}, s.tz || "UTC"),
    el("td", {}, el("a", { href: "#/queue/" + encodeURIComponent(s.queue) }, s.queue)), el("td", {}, s.job_name),
    el("td", {}, when(s.next_run)))));
  document.getElementById("schedules-none").textContent = data.schedules.length ? "" : "no schedules";
  return data.now;
}

// #/ (overview), #/queue/NAME, #/job/ID, #/workers, #/schedules
let again = false;  // a click during a refresh: refresh once more when it ends
async function route() {
  if (refreshing) {
    again = true;
    return;
  }
  refreshing = true;
  const [, view, arg] = (location.hash.match(/^#\/([a-z]+)\/?(.*)$/) || []);
  const show = id => { for (const v of ["overview", "queue", "job", "workers", "schedules"]) document.getElementById("view-" + v).hidden = v !== id; };
  try {
    let now = Date.now();
    if (view === "queue" && arg) {
      const name = decodeURIComponent(arg);
      if (qv.name !== name) Object.assign(qv, { name, state: "queued", offset: 0, filterName: "", filterText: "" });
      show("queue");
      now = await refreshQueue();
    } else if (view === "job" && arg) {
      show("job");
      await refreshJob(decodeURIComponent(arg));
    } else if (view === "workers") {
      show("workers");
      now = await refreshWorkers();
    } else if (view === "schedules") {
      show("schedules");
      now = await refreshSchedules();
    } else {
      show("overview");
      now = await refreshOverview();
    }
    setStatus("updated " + new Date(now).toISOString().replace("T", " ").slice(0, 19) + " UTC" +
              (actions ? "" : " · read-only"), false);
    document.body.dataset.loaded = String(Number(document.body.dataset.loaded) + 1);
  } catch (e) {
    setStatus("cannot load: " + e.message, true);
  } finally {
    refreshing = false;
    if (again) {
      again = false;
      route();
    }
  }
}
const refresh = route;

async function search() {
  const v = document.getElementById("search").value.trim(), status = document.getElementById("search-status");
  if (!v) return;
  try {
    const r = await api("/api/search?" + qs({ q: v }));
    if (r.jobs.length === 1) {
      status.textContent = "";
      location.hash = "#/job/" + r.jobs[0].id;
    } else {
      status.replaceChildren(r.jobs.length ? "several: " : "nothing found for " + v,
        ...r.jobs.flatMap(j => [jobLink(j.id), " (" + j.queue + ") "]));
    }
  } catch (e) {
    status.textContent = e.message;
  }
}
document.getElementById("search-go").onclick = search;
document.getElementById("search").onkeydown = e => { if (e.key === "Enter") search(); };
window.addEventListener("hashchange", () => route());
document.getElementById("flow-show").onclick = () => {
  const v = document.getElementById("flow-job").value;
  if (/^[0-9]+$/.test(v)) showFlow(Number(v));
};
route();
setInterval(route, 5000);
</script>
</body>
</html>
)JOBQ";

/// @brief The login page's policy: as the dashboard's, but its form may post to the server.
inline constexpr std::string_view login_csp =
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// @brief The login form (no script): the token is posted to /login, which sets the cookie.
inline constexpr std::string_view login_html = R"JOBQ(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>jobq dashboard: log in</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 3rem auto; max-width: 28rem; color: #1d2433; background: #f7f8fa; }
  input { width: 100%; padding: .4rem; margin: .5rem 0; box-sizing: border-box; } button { padding: .3rem 1rem; }
</style>
</head>
<body>
<h1>jobq</h1>
<form method="post" action="/login">
  <label for="token">Access token</label>
  <input id="token" name="token" type="password" autocomplete="current-password" autofocus required>
  <button type="submit">Log in</button>
</form>
</body>
</html>
)JOBQ";

}  // namespace jobq::detail
