// One payment's page in the operator console: asks the API for its trace
// (api/payments/<id>/trace, the merchant route's document for any merchant) and
// draws its path as an SVG timeline, where it stands, what it waits for, its rows
// and every line of its timeline. Plain JavaScript, no library and no build step.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
// Re-read while something is outstanding: a payment in requires_action moves on
// without anyone reloading the page.
const REFRESH_SECONDS = 5;
const STEPS = {
  committed: "commit",
  in_kafka: "in Kafka",
  fraud_decided: "fraud verdict",
  stripe_called: "Stripe called",
  stripe_answered: "Stripe answered",
  status_written: "status written",
  journal_posted: "journal",
  merchant_notified: "merchant notified",
};
// What each rule of paystream/domain/fraud.py means; a rule not listed shows its name only.
const RULES = {
  amount_limit: "over the single-payment limit for its currency",
  customer_velocity_count: "too many payments by the customer in the window",
  customer_velocity_amount: "too much spent by the customer in the window",
  payment_method_velocity_count: "too many payments with the payment method in the window",
  blocklisted_customer: "the customer is on the blocklist",
  blocklisted_payment_method: "the payment method is on the blocklist",
};
const TERMINAL_OK = new Set(["succeeded"]);
const TERMINAL_BAD = new Set(["failed", "canceled", "blocked"]);
const PATH = { width: 1280, height: 150, left: 90, right: 90, line: 62 };

// What the page shows, also read by the headless page test.
const state = { id: null, status: "loading", trace: null, problem: null, updated: null };
window.paystreamPayment = state;

function paymentId() {
  const last = window.location.pathname.split("/").filter(Boolean).pop() || "";
  return decodeURIComponent(last);
}

function el(tag, attrs, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4))
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== undefined && value !== null) {
      node.setAttribute(name, value);
    }
  }
  for (const child of children) {
    if (child !== undefined && child !== null) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

// --- formatting ----------------------------------------------------------------

// UTC, as the trace and `paystream trace` give it: the date once, then times of day.
function timeOf(iso) {
  return iso ? iso.slice(11, 23) : "–";
}

function dateOf(iso) {
  return iso ? iso.slice(0, 10) : "";
}

function duration(ms) {
  if (ms === null || ms === undefined) {
    return "";
  }
  const sign = ms < 0 ? "-" : "+";
  const abs = Math.abs(ms);
  if (abs < 1000) {
    return `${sign}${abs} ms`;
  }
  if (abs < 120000) {
    return `${sign}${(abs / 1000).toFixed(abs < 10000 ? 2 : 1)} s`;
  }
  return `${sign}${Math.floor(abs / 60000)}m ${Math.round((abs % 60000) / 1000)}s`;
}

function money(amount, currency) {
  // Minor units, as the API and `paystream trace` write them.
  return `${amount} ${currency}`;
}

function statusClass(status) {
  return TERMINAL_OK.has(status) ? "ok" : TERMINAL_BAD.has(status) ? "bad" : "wait";
}

function clip(text, chars) {
  return text.length > chars ? `${text.slice(0, chars - 1)}…` : text;
}

// --- the path ------------------------------------------------------------------

// Each step's kind: reached, waited for (the first one missing on a payment that
// is still moving), or not reached (not applicable, not read, not yet).
function stepKinds(trace) {
  const blocked = trace.status === "blocked";
  let waiting = !trace.terminal || trace.waiting_for.length > 0;
  return trace.path.map((leg) => {
    if (leg.at !== null) {
      return leg.step === "fraud_decided" && blocked ? "blocked" : "reached";
    }
    const applies = !leg.note.startsWith("not applicable") && leg.note !== "Kafka not read";
    if (waiting && applies) {
      waiting = false;
      return "waiting";
    }
    return "absent";
  });
}

function drawPath(trace) {
  const { width, height, left, right, line } = PATH;
  const legs = trace.path;
  const kinds = stepKinds(trace);
  const x = (i) => left + (i * (width - left - right)) / (legs.length - 1);
  const svg = el("svg:svg", { viewBox: `0 0 ${width} ${height}`, role: "img", id: "path-svg",
                              "aria-label": "The payment's path through the pipeline" });
  // The track: solid where the payment went (through a step not timed here, such as
  // Kafka, which the API does not read), dashed where it has not been yet.
  const reached = legs.map((leg) => leg.at !== null);
  for (let i = 0; i < legs.length - 1; i += 1) {
    const done = reached.slice(0, i + 1).includes(true) && reached.slice(i + 1).includes(true);
    svg.append(el("svg:line", { x1: x(i), x2: x(i + 1), y1: line, y2: line,
                                class: `track ${done ? "done" : "todo"}` }));
  }
  legs.forEach((leg, i) => {
    const group = el("svg:g", { class: `step ${kinds[i]}`, "data-step": leg.step,
                                "data-kind": kinds[i] });
    group.append(el("svg:title", {}, `${STEPS[leg.step] || leg.step}: ${leg.note}`));
    group.append(el("svg:text", { x: x(i), y: 22, "text-anchor": "middle", class: "label" },
                    STEPS[leg.step] || leg.step));
    group.append(el("svg:circle", { cx: x(i), cy: line, r: kinds[i] === "waiting" ? 11 : 9 }));
    group.append(el("svg:text", { x: x(i), y: line + 32, "text-anchor": "middle", class: "at" },
                    leg.at === null ? "–" : timeOf(leg.at)));
    group.append(el("svg:text", { x: x(i), y: line + 52, "text-anchor": "middle", class: "note" },
                    clip(leg.note, 24)));
    svg.append(group);
    // The time since the step reached before it, over the track leading here.
    if (leg.since_previous_ms !== null) {
      const from = legs.slice(0, i).map((l) => l.at !== null).lastIndexOf(true);
      svg.append(el("svg:text", { x: (x(from) + x(i)) / 2, y: line - 10, "text-anchor": "middle",
                                  class: "gap", "data-step": leg.step },
                    duration(leg.since_previous_ms)));
    }
  });
  return svg;
}

// --- the rows ------------------------------------------------------------------

function table(rows, columns, empty) {
  if (!rows || !rows.length) {
    return el("p", { class: "muted" }, empty);
  }
  const head = el("tr", {}, ...columns.map(([title]) => el("th", {}, title)));
  const body = rows.map((row) => el("tr", {}, ...columns.map(([, cell]) => {
    const value = cell(row);
    return el("td", {}, value === null || value === undefined || value === "" ? "–" : value);
  })));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...body));
}

function facts(pairs) {
  const list = el("dl", { class: "facts" });
  for (const [name, value] of pairs) {
    list.append(el("dt", {}, name), el("dd", {}, value === null || value === "" ? "–" : value));
  }
  return list;
}

function card(title, id, ...children) {
  return el("section", { class: "card", id }, el("h2", {}, title), ...children);
}

// A table with many columns takes the whole width.
function wide(section) {
  section.classList.add("wide");
  return section;
}

function fraudCard(decision) {
  if (!decision) {
    return card("Fraud decision", "fraud", el("p", { class: "muted" }, "No decision yet."));
  }
  const verdict = el("span", { class: `badge ${decision.approved ? "ok" : "bad"}` },
                     decision.approved ? "approved" : "blocked");
  const reasons = el("ul", { class: "reasons" });
  for (const rule of decision.rules_hit) {
    reasons.append(el("li", { "data-rule": rule }, el("code", {}, rule),
                      RULES[rule] ? ` ${RULES[rule]}` : ""));
  }
  return card("Fraud decision", "fraud",
              facts([["verdict", verdict], ["score", String(decision.score)],
                     ["decided", `${dateOf(decision.decided_at)} ${timeOf(decision.decided_at)}`],
                     ["rules hit", decision.rules_hit.length ? reasons : "none"]]));
}

function journalsCard(journals) {
  if (!journals.length) {
    return card("Ledger journals", "journals", el("p", { class: "muted" }, "None."));
  }
  return card("Ledger journals", "journals", ...journals.map((j) => el(
    "div", { class: "journal", "data-journal": j.id },
    el("p", {}, el("code", {}, j.id), ` ${j.source_type} ${j.source_id}, posted ${timeOf(j.created_at)}`),
    table(j.entries, [["direction", (e) => e.direction], ["account", (e) => e.account],
                      ["amount", (e) => money(e.amount, e.currency)]], "no entries"))));
}

function rowsOf(trace) {
  const f = trace.facts;
  const p = f.payment;
  return [
    card("Payment row", "row", facts([
      ["id", p.id], ["merchant", p.merchant_id], ["amount", money(p.amount, p.currency)],
      ["refunded", money(p.amount_refunded, p.currency)], ["status", p.status],
      ["customer", p.customer], ["payment method", p.payment_method],
      ["PaymentIntent", p.stripe_payment_intent_id],
      ["failure", [p.failure_code, p.failure_message].filter(Boolean).join(": ")],
      ["created", `${dateOf(p.created_at)} ${timeOf(p.created_at)}`],
      ["updated", `${dateOf(p.updated_at)} ${timeOf(p.updated_at)}`],
      ["merchant webhook", p.merchant_has_webhook ? "yes" : "none"]])),
    fraudCard(f.fraud_decision),
    wide(card("Stripe submissions", "submissions", table(f.stripe_submissions, [
      ["object", (s) => `${s.object_type} ${s.object_id}`], ["attempts", (s) => s.attempts],
      ["Stripe id", (s) => s.stripe_id], ["last error", (s) => s.last_error],
      ["lease until", (s) => s.lease_until && timeOf(s.lease_until)],
      ["first call", (s) => timeOf(s.created_at)], ["updated", (s) => timeOf(s.updated_at)]],
      "Never sent to Stripe."))),
    journalsCard(f.journals),
    card("Stripe webhooks received", "webhooks", table(f.stripe_webhooks, [
      ["type", (e) => e.type], ["outcome", (e) => e.outcome || "in progress"],
      ["id", (e) => e.id], ["received", (e) => timeOf(e.received_at)]], "None.")),
    wide(card("Merchant notifications", "notifications", table(f.merchant_notifications, [
      ["event", (n) => n.event_type], ["object", (n) => n.object_id], ["status", (n) => n.status],
      ["attempts", (n) => n.attempts], ["last HTTP", (n) => n.last_status_code],
      ["last error", (n) => n.last_error], ["queued", (n) => timeOf(n.created_at)],
      ["delivered", (n) => n.delivered_at && timeOf(n.delivered_at)]],
      p.merchant_has_webhook ? "None queued yet." : "None: the merchant has no webhook URL."))),
    wide(card("Refunds", "refunds", table(f.refunds, [
      ["id", (r) => r.id], ["amount", (r) => money(r.amount, r.currency)],
      ["status", (r) => r.status], ["failure", (r) => r.failure_code],
      ["created", (r) => timeOf(r.created_at)], ["updated", (r) => timeOf(r.updated_at)]],
      "None."))),
  ];
}

function timelineOf(trace) {
  return card(`Timeline (UTC, ${dateOf(trace.start)})`, "timeline", table(trace.timeline, [
    ["at", (h) => timeOf(h.at)], ["since start", (h) => duration(h.since_start_ms)],
    ["since previous", (h) => duration(h.since_previous_ms)],
    ["source", (h) => el("span", { class: `source ${h.source}` }, h.source)],
    ["what", (h) => h.what], ["detail", (h) => h.detail]], "Nothing yet."));
}

// --- the page ------------------------------------------------------------------

function summaryOf(trace) {
  const p = trace.facts.payment;
  const head = el("div", { class: "summary-head" },
                  el("h2", {}, el("code", {}, trace.payment_id)),
                  el("span", { class: `badge ${statusClass(trace.status)}`, id: "status" },
                     trace.status),
                  el("span", { class: "amount" }, money(p.amount, p.currency)),
                  el("span", { class: "muted" }, `merchant ${p.merchant_id}`));
  const where = el("p", { id: "where", class: "where" }, el("strong", {}, "Now: "), trace.where);
  const waits = el("div", { id: "waiting", class: trace.waiting_for.length ? "waiting" : "done" });
  if (trace.waiting_for.length) {
    waits.append(el("strong", {}, "Waiting for"),
                 el("ul", {}, ...trace.waiting_for.map((w) => el("li", {}, w))));
  } else {
    waits.append(el("span", {}, "Waiting for nothing: settled, booked and told."));
  }
  return el("section", { class: "card summary", id: "summary" }, head, where, waits,
            el("div", { class: "path" }, drawPath(trace)));
}

function draw(trace) {
  document.title = `PayStream console: ${trace.payment_id} (${trace.status})`;
  document.getElementById("payment").replaceChildren(
    summaryOf(trace), el("div", { class: "rows" }, ...rowsOf(trace)), timelineOf(trace));
}

function missing(id) {
  document.title = "PayStream console: no such payment";
  document.getElementById("payment").replaceChildren(el(
    "section", { class: "card missing", id: "missing", role: "alert" },
    el("h2", {}, "No such payment"),
    el("p", {}, "No payment has the id ", el("code", {}, id || "(none)"),
       ". Ids look like pay_ followed by 24 letters and digits; any merchant's payment is found here.")));
}

async function load() {
  const url = `../api/payments/${encodeURIComponent(state.id)}/trace`;
  const resp = await fetch(url, { headers: { Accept: "application/json" } });
  if (resp.status === 401) {
    // The session expired or its operator was revoked: log in again, then back here.
    window.location.assign("../login?" + new URLSearchParams({ next: window.location.pathname }));
    return false;
  }
  if (resp.status === 404) {
    state.status = "missing";
    state.trace = null;
    missing(state.id);
    return false;
  }
  const body = await resp.json();
  if (!resp.ok) {
    throw new Error((body.error && body.error.message) || resp.statusText);
  }
  state.trace = body;
  state.status = "ok";
  draw(body);
  return !body.terminal || body.waiting_for.length > 0;
}

async function main() {
  state.id = paymentId();
  document.getElementById("cli-id").textContent = state.id;
  document.getElementById("json").href = `../api/payments/${encodeURIComponent(state.id)}/trace`;
  document.querySelector(".search input[name=id]").value = state.id;
  const problem = document.getElementById("problem");
  for (;;) {
    let again = true;
    try {
      again = await load();
      state.problem = null;
    } catch (err) {
      state.problem = String(err.message || err);
    }
    problem.hidden = state.problem === null;
    problem.textContent = state.problem === null ? "" : `Could not read the trace: ${state.problem}`;
    state.updated = Date.now() / 1000;
    document.getElementById("updated").textContent =
      `updated ${new Date().toTimeString().slice(0, 8)}${again ? `, every ${REFRESH_SECONDS} s` : ""}`;
    if (!again) {
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, REFRESH_SECONDS * 1000));
  }
}

main();
