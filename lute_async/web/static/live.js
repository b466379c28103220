// lute-async dashboard: keeps the pages live from server-sent events.
// Everything a task sent is put in the page with textContent, never as markup.
"use strict";

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function when(ts) {
  if (!ts) return "";
  const d = new Date(ts * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function duration(run) {
  // A running run's is its time so far, as of its last update (the page keeps no clock).
  if (!run.started_at) return "";
  const s = (run.ended_at || Date.now() / 1000) - run.started_at;
  return s < 120 ? `${s.toFixed(1)} s` : `${(s / 60).toFixed(1)} min`;
}

function setBar(bar, fraction) {
  const known = typeof fraction === "number";
  const value = known ? Math.max(0, Math.min(1, fraction)) : 0;
  bar.style.width = `${(value * 100).toFixed(1)}%`;
  bar.dataset.fraction = known ? String(value) : "";
}

function statusBadge(status) {
  return el("span", status, `status s-${status}`);
}

function runLink(run, cls) {
  const link = el("a", run.name, cls);
  link.href = `/runs/${encodeURIComponent(run.id)}`;
  return link;
}

// -- the runs page: one row per run the executor has shown, newest first ----------------------
function runRow(run) {
  const row = el("tr");
  row.dataset.run = run.id;
  const name = el("td");
  name.append(runLink(run));
  if (run.graph) {
    const graph = el("a", "graph", "graph-link");
    graph.href = `/graphs/${encodeURIComponent(run.graph)}`;
    name.append(" ", graph);
  }
  const status = el("td");
  status.append(statusBadge(run.status));
  status.className = "cell-status";
  const progress = el("td", null, "cell-progress");
  const track = el("div", null, "progress");
  const bar = el("div", null, "bar");
  track.append(bar);
  progress.append(track, el("span", run.message, "message"));
  setBar(bar, run.fraction);
  row.append(name, status, progress, el("td", duration(run), "cell-duration"),
    el("td", run.host), el("td", run.job || run.pid || "", "cell-job"),
    el("td", when(run.started_at), "cell-started"));
  return row;
}

function startRunsPage() {
  if (document.body.dataset.live !== "1") return;
  const body = document.querySelector("#live-runs tbody");
  const empty = document.getElementById("live-empty");
  const source = new EventSource("/stream/runs");
  source.addEventListener("runs", (message) => {
    const update = JSON.parse(message.data);
    if (update.snapshot) body.replaceChildren();
    for (const run of update.runs) {
      const fresh = runRow(run);
      const old = body.querySelector(`tr[data-run="${CSS.escape(run.id)}"]`);
      if (old) old.replaceWith(fresh);
      else body.prepend(fresh);
    }
    empty.hidden = body.children.length > 0;
  });
}

// -- a run page: status, progress, timeline and log lines as they come --------------------------
function startRunPage() {
  const page = document.body.dataset;
  const bar = document.getElementById("bar");
  const initial = bar.dataset.fraction;
  setBar(bar, initial === "" ? undefined : Number(initial));
  if (page.follow !== "1") return;
  const log = document.getElementById("log");
  const events = document.querySelector("#events tbody");
  const followLogs = page.followLogs === "1";
  const url = `/stream/runs/${encodeURIComponent(page.run)}` +
    `?log=${encodeURIComponent(page.logNext)}&event=${encodeURIComponent(page.eventNext)}`;
  const source = new EventSource(url);
  source.addEventListener("run", (message) => {
    const update = JSON.parse(message.data);
    const run = update.summary;
    document.getElementById("status").replaceWith(
      Object.assign(statusBadge(run.status), { id: "status" }));
    setBar(bar, run.fraction);
    document.getElementById("progress-message").textContent = run.message;
    document.getElementById("pid").textContent = run.pid || "";
    document.getElementById("started").textContent = when(run.started_at);
    document.getElementById("ended").textContent = when(run.ended_at);
    if (followLogs) {
      if (update.skipped) log.append(el("span", `[${update.skipped} line(s) skipped]\n`, "line skipped"));
      for (const line of update.logs) {
        const span = el("span", `${line.text}\n`, `line ${line.stream}`);
        span.dataset.n = line.n;
        log.append(span);
      }
    }
    for (const event of update.events) {
      const row = el("tr");
      const data = el("td");
      data.append(el("code", event.data));
      row.append(el("td", when(event.ts)), el("td", event.name),
        el("td", event.rank === null ? "" : event.rank), data);
      events.append(row);
    }
    if (!run.live) {
      const form = document.getElementById("cancel-form");
      if (form) form.remove();
      const note = document.getElementById("reload-note");
      if (note) note.hidden = false;
    }
  });
  source.addEventListener("end", () => source.close());
}

// -- a graph page: each node's state ----------------------------------------------------------
function startGraphPage() {
  if (document.body.dataset.live !== "1") return;
  const tag = `graph:${document.body.dataset.graph}`;
  const source = new EventSource("/stream/runs");
  source.addEventListener("runs", (message) => {
    for (const run of JSON.parse(message.data).runs) {
      if (!run.tags.includes(tag)) continue;
      for (const node of document.querySelectorAll(`[data-node="${CSS.escape(run.name)}"]`)) {
        if (node.tagName.toLowerCase() === "g") {
          node.setAttribute("class", `node s-${run.status}`);
          node.querySelector(".node-status").textContent = run.status;
        } else {
          node.querySelector(".node-state").textContent = run.status;
          const name = node.querySelector(".node-link");
          if (name.tagName.toLowerCase() !== "a") name.replaceWith(runLink(run, "node-link"));
        }
      }
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const kind = document.body.dataset.page;
  if (kind === "runs") startRunsPage();
  else if (kind === "run") startRunPage();
  else if (kind === "graph") startGraphPage();
});
