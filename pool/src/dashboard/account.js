// Quarry dashboard, the account page (`#/account/NAME`): what an account was
// paid block by block, what it is owed, its workers, and its line in the split
// of the job being mined now. Uses dashboard.js's helpers, which routes here.
// An API error is shown in the section it belongs to.
"use strict";

// Sats as BTC with 8 decimals, in integer arithmetic (nothing is rounded).
function btc(sats) {
  const whole = Math.floor(Math.abs(sats) / 1e8);
  const fraction = String(Math.abs(sats) % 1e8).padStart(8, "0");
  return `${sats < 0 ? "-" : ""}${whole}.${fraction} BTC`;
}

function satsText(sats) {
  return `${sats.toLocaleString("en-US")} sats`;
}

// A table cell with an amount in BTC; its sats in the title and `data-sats`.
function amountCell(sats, col) {
  return el("td", { class: "num", "data-col": col, "data-sats": sats, title: satsText(sats) }, btc(sats));
}

// A card: a label, a value, and a smaller line beneath.
function card(key, label, value, sub, attrs = {}) {
  const node = el("div", { class: "card", "data-key": key });
  node.append(el("div", { class: "label" }, label), el("div", { class: "value", ...attrs }, value));
  if (sub) node.append(el("div", { class: "sub" }, sub));
  return node;
}

function amountCard(key, label, sats) {
  return card(key, label, btc(sats), satsText(sats), { "data-sats": sats });
}

function showError(selector, reason) {
  const node = $(selector);
  node.hidden = !reason;
  node.textContent = reason ? `Could not load: ${reason.message}` : "";
}

function renderTotals(earnings, account) {
  const cards = [];
  if (earnings.status === "fulfilled") {
    const e = earnings.value;
    cards.push(
      amountCard("paid_mature", "Paid, mature", e.paid_mature),
      amountCard("paid_immature", "Paid, immature", e.paid_immature),
      amountCard("owed", "Owed", e.owed),
      card("payout_address", "Paid to", e.payout_address || "no address: carried as owed"),
    );
  } else {
    cards.push(card("earnings", "Earnings", "unavailable", earnings.reason.message));
  }
  // No account view means no worker of it has been seen since the pool started.
  const view = account.status === "fulfilled" ? account.value.account : null;
  cards.push(
    card("hashrate", "Hashrate 10m", view ? rate(view.hashrate_10m) : "-"),
    card("workers", "Workers", view ? String(view.workers) : "0"),
    card("accepted", "Accepted shares", view ? String(view.accepted) : "0"),
  );
  $("#account-totals").replaceChildren(...cards);
}

function renderAccountWorkers(account) {
  const section = $("#account-workers");
  if (account.status === "rejected") {
    const reason = account.reason;
    section.replaceChildren(reason.status === 404
      ? el("p", { class: "empty" }, "No worker of this account has been seen since the pool started.")
      : el("p", { class: "error" }, `Could not load: ${reason.message}`));
    return;
  }
  const table = el("table");
  const head = el("tr");
  for (const [label, num] of [["Worker"], ["Hashrate 10m", 1], ["Accepted", 1], ["Rejected", 1], ["Best (ever)", 1], ["Last share"], ["Status"]]) {
    head.append(el("th", num ? { class: "num" } : {}, label));
  }
  const thead = el("thead");
  thead.append(head);
  const tbody = el("tbody");
  tbody.append(...account.value.workers.map((w) => {
    const tr = el("tr", { "data-worker": w.worker });
    const status = el("td");
    status.append(el("span", { class: `status ${w.status}` }, w.status));
    tr.append(el("td", {}, w.worker), el("td", { class: "num" }, rate(w.hashrate_10m)),
      el("td", { class: "num" }, String(w.accepted)), el("td", { class: "num" }, String(w.rejected)),
      el("td", { class: "num" }, number(w.best_share_difficulty)),
      el("td", { title: w.last_share || "" }, ago(w.last_share)), status);
    return tr;
  }));
  table.append(thead, tbody);
  const scroll = el("div", { class: "scroll" });
  scroll.append(table);
  section.replaceChildren(scroll);
}

function renderEarnings(earnings) {
  const ok = earnings.status === "fulfilled";
  showError("#earnings-error", ok ? null : earnings.reason);
  const blocks = ok ? earnings.value.blocks : [];
  $("#earnings-empty").hidden = !ok || blocks.length > 0;
  $("#earnings").hidden = blocks.length === 0;
  $("#earnings tbody").replaceChildren(...blocks.map((b) => {
    const tr = el("tr", { "data-hash": b.hash, "data-height": b.height });
    const hash = el("td", { class: "hash" });
    hash.append(blockLink(b.hash));
    const status = el("td", { "data-col": "status" });
    status.append(el("span", { class: `status ${b.status}` }, b.status));
    tr.append(el("td", { class: "num" }, String(b.height)), hash, el("td", { title: b.time }, ago(b.time)),
      status, el("td", { class: "num", "data-col": "credit", "data-value": b.credit }, number(b.credit)),
      amountCell(b.earned, "earned"), amountCell(b.paid, "paid"), amountCell(b.owed_after, "owed_after"));
    return tr;
  }));
}

// A payee's name: a link to its account page, or "operator".
function payeeCell(to) {
  const td = el("td", { class: "hash" });
  if (to === "operator") td.append(el("span", { class: "muted" }, "operator"));
  else td.append(accountLink(to));
  return td;
}

function renderSplitSummary(split) {
  const facts = [
    ["scheme", "Scheme", split.scheme],
    ["job", "Job", `${split.job_id} at height ${split.height}`],
    ["coinbase_value", "Coinbase value", `${btc(split.coinbase_value)} (${satsText(split.coinbase_value)})`],
    ["fee", "Fee", `${(split.fee_bps / 100).toFixed(2)}% (${split.fee_bps} bps)`],
    ["operator_amount", "Operator's output", btc(split.operator_amount)],
    ["window", "Window", split.scheme === "pplns" ? `${number(split.window)} credited difficulty` : "-"],
    ["network_difficulty", "Network difficulty", number(split.network_difficulty)],
  ];
  $("#split-summary").replaceChildren(...facts.flatMap(([key, term, value]) =>
    [el("dt", {}, term), el("dd", { "data-key": key }, value)]));
}

// The account's own line, as cards: its share of the window's credit and what
// this job's coinbase would pay it.
function renderSplitLine(split, name, total) {
  const section = $("#split-line");
  if (split.scheme === "operator") {
    section.replaceChildren(el("p", { class: "empty", "data-state": "operator" },
      "This pool pays every block to its operator (scheme operator): no account is paid in the coinbase."));
    return;
  }
  const line = split.payees.find((p) => p.payee === name);
  if (!line) {
    section.replaceChildren(el("p", { class: "empty", "data-state": "absent" },
      "This account has no credit in the current window: this job's coinbase pays it nothing."));
    return;
  }
  const share = total > 0 ? (100 * line.credit) / total : 0;
  const cards = el("div", {
    class: "cards mine", "data-state": "line", "data-credit": line.credit, "data-earned": line.earned,
    "data-owed-before": line.owed_before, "data-paid": line.paid, "data-owed-after": line.owed_after,
  });
  cards.append(
    card("share", "Share of credit", `${share.toFixed(2)}%`, `${number(line.credit)} of ${number(total)}`),
    amountCard("paid", "This coinbase pays it", line.paid),
    amountCard("earned", "Earned in this window", line.earned),
    amountCard("owed_before", "Owed before", line.owed_before),
    amountCard("owed_after", "Owed after", line.owed_after),
  );
  section.replaceChildren(cards);
}

function renderSplit(result, name) {
  const ok = result.status === "fulfilled";
  showError("#split-error", ok ? null : result.reason);
  const split = ok ? result.value : { outputs: [], payees: [] };
  const total = split.payees.reduce((sum, p) => sum + p.credit, 0);
  if (ok) {
    renderSplitSummary(split);
    renderSplitLine(split, name, total);
  } else {
    $("#split-summary").replaceChildren();
    $("#split-line").replaceChildren();
  }
  $("#split-outputs tbody").replaceChildren(...split.outputs.map((o, i) => {
    const tr = el("tr", { "data-to": o.to, "data-sats": o.amount });
    if (o.to === name) tr.classList.add("mine");
    tr.append(el("td", { class: "num" }, String(i)), payeeCell(o.to),
      el("td", { class: "num" }, btc(o.amount)), el("td", { class: "num" }, o.amount.toLocaleString("en-US")),
      el("td", { class: "hash script", title: o.script }, o.script));
    return tr;
  }));
  $("#split-payees-empty").hidden = !ok || split.payees.length > 0;
  $("#split-payees").hidden = split.payees.length === 0;
  $("#split-payees tbody").replaceChildren(...split.payees.map((p) => {
    const tr = el("tr", { "data-payee": p.payee });
    if (p.payee === name) tr.classList.add("mine");
    const share = total > 0 ? `${((100 * p.credit) / total).toFixed(2)}%` : "-";
    tr.append(payeeCell(p.payee), el("td", { class: "num" }, number(p.credit)), el("td", { class: "num" }, share),
      amountCell(p.earned, "earned"), amountCell(p.owed_before, "owed_before"), amountCell(p.paid, "paid"),
      amountCell(p.owed_after, "owed_after"));
    return tr;
  }));
}

// Loads and shows `name`'s page; what arrives after the page moved on is dropped.
async function refreshAccount(name) {
  const view = $("#account-view");
  if (view.dataset.account !== name) {
    // Another account's numbers never show under this one's name.
    for (const selector of ["#account-totals", "#account-workers", "#split-summary", "#split-line",
      "#earnings tbody", "#split-outputs tbody", "#split-payees tbody"]) {
      $(selector).replaceChildren();
    }
    delete view.dataset.refreshes;
    view.dataset.account = name;
    $("#account-name").textContent = name;
    document.title = `Account ${name} · Quarry pool`;
  }
  const path = `/api/accounts/${encodeURIComponent(name)}`;
  const [account, earnings, split] = await Promise.allSettled([
    get(path), get(`${path}/earnings`), get(`/api/payouts/current?account=${encodeURIComponent(name)}`),
  ]);
  if (routedAccount() !== name) return;
  renderTotals(earnings, account);
  renderAccountWorkers(account);
  renderEarnings(earnings);
  renderSplit(split, name);
  // An account no worker of has been seen answers 404: that is no failure.
  const failed = earnings.status === "rejected" || split.status === "rejected" ||
    (account.status === "rejected" && account.reason.status !== 404);
  $("#updated").textContent = failed ? "update failed: see below" : `updated ${new Date().toLocaleTimeString()}`;
  view.dataset.refreshes = String(Number(view.dataset.refreshes || 0) + 1);
}
