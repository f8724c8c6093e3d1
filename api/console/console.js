// The operator console: reads panels.json, asks Prometheus through the API's
// read-only proxy (api/v1/...) and draws each panel as an SVG line chart.
// Plain JavaScript, no library and no build step.
"use strict";

const PROMETHEUS = "api/v1/";
const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#58a6ff", "#3fb950", "#d29922", "#f85149", "#bc8cff", "#39c5cf",
                "#ff7b72", "#e3b341", "#79c0ff", "#56d364"];
const CHART = { width: 600, height: 210, left: 64, right: 10, top: 10, bottom: 24 };

// Everything the page shows, also read by the headless page test.
const state = { config: null, panels: {}, stats: {}, alerts: [], updated: null, problem: null };
window.paystreamConsole = state;

// The session expired or its operator was revoked: back to the login form, then here.
async function get(url) {
  const resp = await fetch(url);
  if (resp.status === 401) {
    window.location.assign("login?" + new URLSearchParams({ next: window.location.pathname }));
    throw new Error("logged out");
  }
  return resp;
}

async function prometheus(endpoint, params) {
  const resp = await get(PROMETHEUS + endpoint + "?" + new URLSearchParams(params || {}));
  const body = await resp.json();
  if (body.status !== "success") {
    throw new Error(body.error || resp.statusText);
  }
  return body.data;
}

function legend(template, metric) {
  return template.replace(/\{\{\s*(\w+)\s*\}\}/g, (_, name) => metric[name] || "");
}

// --- formatting ----------------------------------------------------------------

function formatValue(value, unit) {
  if (!Number.isFinite(value)) {
    return "–";
  }
  switch (unit) {
    case "seconds":
      if (value !== 0 && Math.abs(value) < 1) {
        return `${(value * 1000).toPrecision(3)} ms`;
      }
      if (value >= 120) {
        return `${Math.floor(value / 60)}m ${Math.round(value % 60)}s`;
      }
      return `${+value.toPrecision(3)} s`;
    case "bytes": {
      const units = ["B", "KiB", "MiB", "GiB", "TiB"];
      let i = 0;
      while (Math.abs(value) >= 1024 && i < units.length - 1) {
        value /= 1024;
        i += 1;
      }
      return `${+value.toPrecision(3)} ${units[i]}`;
    }
    case "per_second":
      return `${+value.toPrecision(3)}/s`;
    case "ratio":
      return `${+(value * 100).toPrecision(3)}%`;
    case "breaker":
      return value > 0 ? "open" : "closed";
    default:
      return Math.abs(value) >= 1000 ? `${+(value / 1000).toPrecision(3)}k`
        : `${+value.toPrecision(3)}`;
  }
}

function clock(seconds) {
  return new Date(seconds * 1000).toTimeString().slice(0, 5);
}

function el(tag, attrs, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4))
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    node.setAttribute(name, value);
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

// --- stats ---------------------------------------------------------------------

async function refreshStat(stat) {
  const data = await prometheus("query", { query: stat.expr });
  const value = data.result.length ? parseFloat(data.result[0].value[1]) : NaN;
  state.stats[stat.id] = value;
  const card = document.getElementById(`stat-${stat.id}`);
  const warn = (stat.warn_above !== undefined && value > stat.warn_above)
    || (stat.warn_below !== undefined && value < stat.warn_below);
  card.className = `stat ${Number.isFinite(value) ? (warn ? "warn" : "ok") : ""}`;
  card.querySelector(".value").textContent = formatValue(value, stat.unit);
}

// --- charts --------------------------------------------------------------------

async function refreshPanel(panel, start, end, step) {
  const answers = await Promise.all(panel.queries.map(
    (q) => prometheus("query_range", { query: q.expr, start, end, step })));
  const series = [];
  answers.forEach((data, i) => {
    for (const result of data.result) {
      const points = result.values.map(([t, v]) => [t, parseFloat(v)])
        .filter(([, v]) => Number.isFinite(v));
      series.push({ name: legend(panel.queries[i].legend, result.metric), points });
    }
  });
  series.sort((a, b) => a.name.localeCompare(b.name));
  state.panels[panel.id] = { series, points: series.reduce((n, s) => n + s.points.length, 0) };
  draw(panel, series, start, end, step);
}

function draw(panel, series, start, end, step) {
  const card = document.getElementById(`panel-${panel.id}`);
  const { width, height, left, right, top, bottom } = CHART;
  const svg = el("svg:svg", { viewBox: `0 0 ${width} ${height}`, role: "img",
                              "aria-label": panel.title });
  const values = series.flatMap((s) => s.points.map(([, v]) => v));
  card.dataset.points = String(values.length);
  if (!values.length) {
    svg.append(el("svg:text", { x: width / 2, y: height / 2, "text-anchor": "middle",
                                class: "empty" }, "no data yet"));
  } else {
    let low = Math.min(0, ...values);
    let high = Math.max(...values);
    if (high <= low) {
      high = low + 1;
    }
    high += (high - low) * 0.08;
    const x = (t) => left + ((t - start) / (end - start)) * (width - left - right);
    const y = (v) => top + (1 - (v - low) / (high - low)) * (height - top - bottom);
    for (let i = 0; i <= 4; i += 1) {
      const v = low + ((high - low) * i) / 4;
      svg.append(el("svg:line", { x1: left, x2: width - right, y1: y(v), y2: y(v), class: "grid" }));
      svg.append(el("svg:text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" },
                    formatValue(v, panel.unit)));
    }
    for (const t of [start, (start + end) / 2, end]) {
      svg.append(el("svg:text", { x: x(t), y: height - 6, class: "axis",
                                  "text-anchor": t === start ? "start" : t === end ? "end" : "middle" },
                    clock(t)));
    }
    series.forEach((s, i) => {
      // A gap of more than two steps is missing data: the line breaks there.
      let d = "";
      let previous = null;
      for (const [t, v] of s.points) {
        d += `${previous === null || t - previous > 2 * step ? "M" : "L"}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
        previous = t;
      }
      svg.append(el("svg:path", { d, class: "series", stroke: COLORS[i % COLORS.length] }));
    });
  }
  const keys = el("ul", { class: "legend" });
  series.forEach((s, i) => {
    const item = el("li");
    item.append(el("span", { class: "swatch", style: `background:${COLORS[i % COLORS.length]}` }));
    item.append(document.createTextNode(s.name || "value"));
    const last = s.points.length ? s.points[s.points.length - 1][1] : NaN;
    item.append(el("span", { class: "last" }, formatValue(last, panel.unit)));
    keys.append(item);
  });
  card.querySelector("svg").replaceWith(svg);
  card.querySelector(".legend").replaceWith(keys);
}

// --- alerts --------------------------------------------------------------------

async function refreshAlerts() {
  const data = await prometheus("alerts");
  const alerts = data.alerts.filter((a) => a.state === "firing" || a.state === "pending");
  alerts.sort((a, b) => (a.state === b.state ? 0 : a.state === "firing" ? -1 : 1)
    || (a.labels.alertname || "").localeCompare(b.labels.alertname || ""));
  state.alerts = alerts.map((a) => ({ name: a.labels.alertname, state: a.state,
                                      severity: a.labels.severity }));
  const list = document.getElementById("alerts");
  list.replaceChildren();
  if (!alerts.length) {
    list.append(el("li", { class: "none" }, "No alerts firing."));
    return;
  }
  for (const alert of alerts) {
    const item = el("li");
    const kind = alert.state === "firing" ? alert.labels.severity || "warning" : "pending";
    item.append(el("span", { class: `badge ${kind}` }, alert.state === "firing" ? kind : "pending"));
    item.append(el("span", { class: "name" }, alert.labels.alertname));
    item.append(el("span", {}, (alert.annotations && alert.annotations.summary) || ""));
    item.append(el("span", { class: "since" }, `since ${clock(Date.parse(alert.activeAt) / 1000)}`));
    list.append(item);
  }
}

// --- the page ------------------------------------------------------------------

function build(config) {
  document.getElementById("range").textContent = config.range_minutes;
  document.getElementById("refresh").textContent = config.refresh_seconds;
  const stats = document.getElementById("stats");
  for (const stat of config.stats) {
    const card = el("div", { class: "stat", id: `stat-${stat.id}` });
    card.append(el("div", { class: "label" }, stat.title), el("div", { class: "value" }, "–"));
    stats.append(card);
  }
  const panels = document.getElementById("panels");
  for (const panel of config.panels) {
    const card = el("section", { class: "panel", id: `panel-${panel.id}`, "data-points": "0" });
    card.append(el("h2", {}, panel.title), el("svg:svg"), el("ul", { class: "legend" }));
    panels.append(card);
  }
}

async function refresh() {
  const config = state.config;
  const end = Math.floor(Date.now() / 1000);
  const start = end - config.range_minutes * 60;
  const jobs = [refreshAlerts(), ...config.stats.map(refreshStat),
                ...config.panels.map((p) => refreshPanel(p, start, end, config.step_seconds))];
  const failed = (await Promise.allSettled(jobs)).filter((r) => r.status === "rejected");
  const problem = document.getElementById("problem");
  state.problem = failed.length ? String(failed[0].reason.message || failed[0].reason) : null;
  problem.hidden = !failed.length;
  problem.textContent = failed.length ? `Prometheus: ${state.problem}` : "";
  state.updated = end;
  document.getElementById("updated").textContent = `updated ${new Date().toTimeString().slice(0, 8)}`;
}

async function main() {
  state.config = await (await get("panels.json")).json();
  build(state.config);
  for (;;) {
    await refresh();
    await new Promise((resolve) => setTimeout(resolve, state.config.refresh_seconds * 1000));
  }
}

main();
