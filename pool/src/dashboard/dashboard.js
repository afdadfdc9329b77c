// Quarry dashboard: polls the pool's JSON API and renders the summary, the
// worker table, the hashrate chart, a cluster's nodes and the found blocks.
// Also the helpers account.js uses, and the hash routes: `#/` (or none) is the
// pool overview, `#/account/NAME` the account page (account.js). No dependencies.
"use strict";

const POLL_MS = 3000;
const state = { workers: [], sort: "worker", asc: true, filter: "", scope: "pool", range: "1h" };

const $ = (selector) => document.querySelector(selector);

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function rate(hashes) {
  const units = ["H/s", "kH/s", "MH/s", "GH/s", "TH/s", "PH/s", "EH/s"];
  let value = hashes, unit = 0;
  while (value >= 1000 && unit < units.length - 1) { value /= 1000; unit++; }
  return `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

function duration(seconds) {
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

function number(value) {
  if (value === 0) return "0";
  if (Math.abs(value) >= 1e6 || Math.abs(value) < 1e-3) return value.toExponential(2);
  return value.toLocaleString(undefined, { maximumSignificantDigits: 4 });
}

function ago(time) {
  if (!time) return "never";
  const seconds = Math.max(0, (Date.now() - Date.parse(time)) / 1000);
  if (seconds < 60) return `${Math.round(seconds)}s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)}m ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)}h ago`;
  return `${Math.round(seconds / 86400)}d ago`;
}

// The JSON at `path`; an error response throws an Error carrying its status
// and the API's own message.
async function get(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    const error = new Error(`${path}: ${response.status}${body.error ? ` ${body.error}` : ""}`);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

// A link to `account`'s page, reading `text`.
function accountLink(account, text = account) {
  return el("a", { class: "account", href: `#/account/${encodeURIComponent(account)}`, title: `Account ${account}` }, text);
}

// The account named by the location's hash, or null on the overview.
function routedAccount() {
  const match = /^#\/account\/(.+)$/.exec(location.hash);
  if (!match) return null;
  try {
    return decodeURIComponent(match[1]);
  } catch {
    return match[1];
  }
}

function renderSummary(pool) {
  const counts = { online: 0, offline: 0, drop: 0 };
  for (const w of state.workers) if (w.status in counts) counts[w.status]++;
  // While the pool is younger than a span, its hashrate averages over what
  // there is; the label says so, as the chart's points do.
  const span = (label, seconds) =>
    pool.observed_seconds < seconds ? `${label} (over ${duration(pool.observed_seconds)})` : label;
  const cards = [
    [span("Hashrate 10m", 600), rate(pool.hashrate_10m), "hashrate"],
    [span("Hashrate 1h", 3600), rate(pool.hashrate_1h), "hashrate_1h"],
    ["Workers", `${pool.workers} (${counts.online} online)`, "workers"],
    ["Offline / drop", `${counts.offline} / ${counts.drop}`, "flagged"],
    ["Sessions", pool.sessions, "sessions"],
    ["Accepted", pool.accepted, "accepted"],
    ["Rejected", pool.rejected, "rejected"],
    ["Blocks", pool.blocks_found, "blocks"],
    ["Best share since block", number(pool.best_share_since_block), "best_share_since_block"],
    ["Height", pool.height, "height"],
    ["Network difficulty", number(pool.network_difficulty), "network_difficulty"],
  ];
  const section = $("#summary");
  section.replaceChildren(...cards.map(([label, value, key]) => {
    const card = el("div", { class: "card", "data-key": key });
    card.append(el("div", { class: "label" }, label), el("div", { class: "value" }, String(value)));
    return card;
  }));
}

function sortValue(worker, key) {
  if (key === "last_share") return worker.last_share ? Date.parse(worker.last_share) : 0;
  return worker[key];
}

function renderWorkers() {
  const filter = state.filter.toLowerCase();
  const rows = state.workers
    .filter((w) => !filter || w.worker.toLowerCase().includes(filter) || w.status.includes(filter))
    .sort((a, b) => {
      const x = sortValue(a, state.sort), y = sortValue(b, state.sort);
      const order = x < y ? -1 : x > y ? 1 : 0;
      return state.asc ? order : -order;
    });
  $("#workers tbody").replaceChildren(...rows.map((w) => {
    const tr = el("tr", { "data-worker": w.worker });
    if (state.scope === `worker:${w.worker}`) tr.classList.add("selected");
    const account = el("td", { class: "account", "data-col": "account" });
    account.append(accountLink(w.account));
    const name = el("td", { class: "worker", "data-col": "worker", title: "Show this worker's chart" }, w.worker);
    name.addEventListener("click", () => selectScope(`worker:${w.worker}`));
    const reasons = Object.entries(w.rejected_by_reason).filter(([, n]) => n > 0)
      .map(([reason, n]) => `${reason.replace("_", " ")} ${n}`).join(", ");
    const rejected = el("td", { class: "num", "data-col": "rejected", "data-value": w.rejected }, String(w.rejected));
    if (reasons) rejected.append(el("div", { class: "reasons" }, reasons));
    const status = el("td", { "data-col": "status" });
    status.append(el("span", { class: `status ${w.status}` }, w.status));
    tr.append(
      account,
      name,
      el("td", { class: "num", "data-col": "hashrate_10m", "data-value": w.hashrate_10m }, rate(w.hashrate_10m)),
      el("td", { class: "num", "data-col": "hashrate_1h", "data-value": w.hashrate_1h }, rate(w.hashrate_1h)),
      el("td", { class: "num", "data-col": "accepted", "data-value": w.accepted }, String(w.accepted)),
      rejected,
      el("td", { class: "num", "data-col": "difficulty", "data-value": w.difficulty }, number(w.difficulty)),
      el("td", { class: "num", "data-col": "best_share_since_block", "data-value": w.best_share_since_block }, number(w.best_share_since_block)),
      el("td", { class: "num", "data-col": "best_share_difficulty", "data-value": w.best_share_difficulty }, number(w.best_share_difficulty)),
      el("td", { "data-col": "last_share", title: w.last_share || "" }, ago(w.last_share)),
      status,
    );
    return tr;
  }));
  for (const th of document.querySelectorAll("#workers th")) {
    th.classList.toggle("sorted", th.dataset.sort === state.sort);
    th.classList.toggle("asc", th.dataset.sort === state.sort && state.asc);
  }
}

function renderScopes() {
  const select = $("#chart-scope");
  const accounts = [...new Set(state.workers.map((w) => w.account))].sort();
  const options = [["pool", "Pool"]]
    .concat(accounts.map((a) => [`account:${a}`, `Account ${a}`]))
    .concat(state.workers.map((w) => [`worker:${w.worker}`, `Worker ${w.worker}`]));
  const wanted = options.map(([value]) => value).join("\n");
  if (select.dataset.options !== wanted) {
    select.replaceChildren(...options.map(([value, label]) => el("option", { value }, label)));
    select.dataset.options = wanted;
  }
  select.value = state.scope;
}

function historyPath() {
  const range = `range=${encodeURIComponent(state.range)}`;
  const [kind, ...rest] = state.scope.split(":");
  const name = encodeURIComponent(rest.join(":"));
  if (kind === "worker") return `/api/workers/${name}/history?${range}`;
  if (kind === "account") return `/api/accounts/${name}/history?${range}`;
  return `/api/pool/history?${range}`;
}

function renderChart(history) {
  const svg = $("#chart");
  const ns = "http://www.w3.org/2000/svg";
  const node = (tag, attrs) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    return n;
  };
  const [width, height, left, bottom, top] = [800, 240, 64, 20, 10];
  const points = history.points;
  const end = Date.now();
  const start = end - { "1h": 3600e3, "24h": 86400e3, "7d": 7 * 86400e3, "30d": 30 * 86400e3 }[state.range];
  const max = Math.max(1, ...points.map((p) => p.hashrate)) * 1.1;
  const x = (t) => left + ((t - start) / (end - start)) * (width - left);
  const y = (h) => top + (1 - h / max) * (height - top - bottom);
  const children = [];
  for (let i = 0; i <= 4; i++) {
    const h = (max * i) / 4;
    children.push(node("line", { class: "grid", x1: left, x2: width, y1: y(h), y2: y(h) }));
    const label = node("text", { class: "axis", x: 4, y: y(h) + 4 });
    label.textContent = i === 0 ? "0" : rate(h);
    children.push(label);
  }
  const drawn = points.filter((p) => p.t >= start);
  if (drawn.length > 0) {
    const coords = drawn.map((p) => `${x(p.t).toFixed(1)},${y(p.hashrate).toFixed(1)}`);
    children.push(node("path", {
      class: "area",
      d: `M${x(drawn[0].t).toFixed(1)},${y(0)} L${coords.join(" L")} L${x(drawn[drawn.length - 1].t).toFixed(1)},${y(0)} Z`,
    }));
    children.push(node("path", { class: "line", d: `M${coords.join(" L")}`, "data-points": drawn.length }));
    for (const p of drawn) {
      if (p.shares === 0) continue;
      // A point averages over the part of its bucket observed so far; a
      // partial one (the current bucket, or the first of a young pool) is hollow.
      const partial = p.seconds < history.step_seconds;
      const dot = node("circle", {
        class: partial ? "dot partial" : "dot", cx: x(p.t), cy: y(p.hashrate), r: 2.5,
        "data-shares": p.shares, "data-seconds": p.seconds,
      });
      const title = document.createElementNS(ns, "title");
      title.textContent = `${rate(p.hashrate)} over ${duration(p.seconds)}${partial ? " (partial)" : ""}, ${p.shares} shares`;
      dot.append(title);
      children.push(dot);
    }
  }
  svg.replaceChildren(...children);
  svg.dataset.points = drawn.length;
  svg.dataset.shares = drawn.reduce((sum, p) => sum + p.shares, 0);
  const [kind, ...rest] = state.scope.split(":");
  $("#chart-title").textContent = kind === "pool" ? "Pool hashrate" : `${kind === "worker" ? "Worker" : "Account"} ${rest.join(":")} hashrate`;
}

// A block's hash, shortened, linking to its raw bytes.
function blockLink(hash) {
  return el("a", { href: `/api/blocks/${hash}/raw`, title: `${hash}: raw block (hex)` }, `${hash.slice(0, 16)}…`);
}

function renderBlocks(blocks) {
  $("#blocks tbody").replaceChildren(...blocks.map((b) => {
    const tr = el("tr", { "data-hash": b.hash });
    const hash = el("td", { class: "hash" });
    hash.append(blockLink(b.hash));
    const worker = el("td");
    worker.append(accountLink(b.worker.split(".")[0], b.worker));
    tr.append(el("td", { class: "num" }, String(b.height)), hash, worker,
      el("td", { title: b.time }, ago(b.time)), el("td", {}, b.status));
    return tr;
  }));
}

function renderNodes(cluster) {
  $("#nodes-panel").hidden = !cluster.cluster;
  if (!cluster.cluster) return;
  const counts = { ok: 0, lagging: 0, dead: 0 };
  for (const n of cluster.nodes) counts[n.status]++;
  $("#nodes-summary").textContent =
    `this is node ${cluster.node}; ${counts.ok} ok, ${counts.lagging} lagging, ${counts.dead} dead`;
  $("#nodes tbody").replaceChildren(...cluster.nodes.map((n) => {
    const tr = el("tr", { "data-node": n.id, "data-status": n.status });
    if (n.id === cluster.node) tr.classList.add("selected");
    const status = el("td");
    status.append(el("span", { class: `status ${n.status}` }, n.status));
    tr.append(el("td", { class: "num" }, String(n.id)), status, el("td", {}, n.address),
      el("td", { class: "num" }, n.job_height === null ? "-" : String(n.job_height)),
      el("td", { class: "num" }, String(n.sessions)), el("td", { class: "num" }, rate(n.hashrate)),
      el("td", { title: n.last_heartbeat }, `${duration(n.heartbeat_age_ms / 1000)} ago`),
      el("td", {}, n.version));
    return tr;
  }));
}

function selectScope(scope) {
  state.scope = scope;
  refresh();
}

async function refresh() {
  try {
    const [pool, workers, blocks, history, nodes] = await Promise.all([
      get("/api/pool"), get("/api/workers"), get("/api/blocks?limit=20"), get(historyPath()),
      get("/api/nodes"),
    ]);
    state.workers = workers.workers;
    renderSummary(pool);
    renderWorkers();
    renderScopes();
    renderChart(history);
    renderNodes(nodes);
    renderBlocks(blocks.blocks);
    $("#updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
  } catch (err) {
    $("#updated").textContent = `update failed: ${err.message}`;
  }
}

for (const th of document.querySelectorAll("#workers th")) {
  th.addEventListener("click", () => {
    state.asc = state.sort === th.dataset.sort ? !state.asc : true;
    state.sort = th.dataset.sort;
    renderWorkers();
  });
}
$("#filter").addEventListener("input", (e) => { state.filter = e.target.value; renderWorkers(); });
$("#chart-scope").addEventListener("change", (e) => selectScope(e.target.value));
$("#chart-range").addEventListener("change", (e) => { state.range = e.target.value; refresh(); });

// Shows the view the hash routes to, and polls what it shows.
function tick() {
  const account = routedAccount();
  $("#overview").hidden = account !== null;
  $("#account-view").hidden = account === null;
  if (account === null) {
    document.title = "Quarry pool";
    refresh();
  } else {
    refreshAccount(account);
  }
}

// Once account.js has loaded too.
document.addEventListener("DOMContentLoaded", () => {
  window.addEventListener("hashchange", tick);
  tick();
  setInterval(tick, POLL_MS);
});
