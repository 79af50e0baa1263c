// The gateway console: one ES module, no framework, no build step.
//
// Rules that the CSP and tests/test_console_static.py hold us to:
// - data reaches the DOM through textContent (or text nodes) only, never parsed as HTML;
// - no inline styles: looks are classes in style.css (uPlot sizes itself through the CSSOM,
//   which the CSP allows);
// - the admin key lives in sessionStorage only: gone when the tab closes, never a cookie.

const KEY_STORAGE = "gateway.adminKey";
const REFRESH_MS = 5000;
const CHART_HEIGHT = 280;
const LEDGER_MAX_ROWS = 500; // the CSV has them all; a table of thousands helps nobody
const CHART_MAX_SERIES = 8; // more lines than this are unreadable: the rest become "other"
const PALETTE = ["#2f6fde", "#e8743b", "#19a979", "#945ecf", "#ed4a7b", "#13a4b4", "#c9a227",
  "#6c8893", "#525df4", "#bf399e"];
// Relative to the page, so a gateway that mounts the console under a prefix still works.
const ADMIN_BASE = new URL("../admin/", document.baseURI);

// ---- The admin key ----------------------------------------------------------------------

function adminKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

function forgetKey() {
  sessionStorage.removeItem(KEY_STORAGE);
}

// ---- DOM helpers --------------------------------------------------------------------------

const byId = (id) => document.getElementById(id);
const $ = (root, selector) => root.querySelector(selector);

// Builds an element; strings among the children become text nodes, never markup.
function h(tag, { className, text, attrs } = {}, ...children) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined && text !== null) el.textContent = String(text);
  for (const [name, value] of Object.entries(attrs || {})) el.setAttribute(name, String(value));
  for (const child of children) {
    if (child !== undefined && child !== null) el.append(child);
  }
  return el;
}

function cell(text, className) {
  return h("td", { className, text: text ?? "–" });
}

function numCell(text) {
  return cell(text, "num");
}

function emptyRow(tbody, message) {
  const columns = tbody.closest("table").querySelectorAll("thead th").length;
  tbody.replaceChildren(h("tr", {}, h("td", { className: "empty", text: message,
    attrs: { colspan: columns } })));
}

function badge(text, tone) {
  return h("span", { className: `badge ${tone || ""}`.trim(), text });
}

function showMessage(el, message) {
  el.textContent = message || "";
  el.hidden = !message;
}

// ---- Formatting -----------------------------------------------------------------------------

const intFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const compactFormat = new Intl.NumberFormat(undefined, { notation: "compact",
  maximumFractionDigits: 1 });
const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

const isNumber = (n) => typeof n === "number" && Number.isFinite(n);
const fmtInt = (n) => (isNumber(n) ? intFormat.format(n) : "–");
const fmtCompact = (n) => (isNumber(n) ? compactFormat.format(n) : "–");

function fmtCost(n) {
  if (!isNumber(n)) return "–";
  // Small amounts matter here (a request costs fractions of a cent): keep their digits.
  const digits = Math.abs(n) >= 100 ? 0 : Math.abs(n) >= 1 || n === 0 ? 2 : 4;
  return new Intl.NumberFormat(undefined, { style: "currency", currency: "USD",
    minimumFractionDigits: digits, maximumFractionDigits: digits }).format(n);
}

function fmtPercent(ratio) {
  if (!isNumber(ratio)) return "–";
  const percent = ratio * 100;
  // A no-break space: "62.5 %" must not wrap between the number and its sign.
  return `${percent.toFixed(percent > 0 && percent < 0.1 ? 3 : percent < 10 ? 2 : 1)}\u00a0%`;
}

function fmtMs(ms) {
  if (!isNumber(ms)) return "–";
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function fmtRate(perSecond) {
  if (!isNumber(perSecond)) return "–";
  return perSecond < 10 ? perSecond.toFixed(2) : fmtInt(perSecond);
}

// Times come as ISO strings (spend, keys) or Unix seconds (the request log's outcome records).
function toDate(value) {
  if (value === null || value === undefined || value === "") return null;
  const date = isNumber(value) ? new Date(value > 1e12 ? value : value * 1000) : new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

function fmtTime(value) {
  const date = toDate(value);
  if (!date) return value ? String(value) : "–";
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

function fmtClock(value) {
  const date = toDate(value);
  if (!date) return "–";
  const today = date.toDateString() === new Date().toDateString();
  return today ? date.toLocaleTimeString() : fmtTime(date);
}

function fmtRelative(value) {
  const date = toDate(value);
  if (!date) return "–";
  const seconds = Math.round((date.getTime() - Date.now()) / 1000);
  const steps = [[60, "second"], [3600, "minute"], [86400, "hour"], [Infinity, "day"]];
  let unit = 1;
  for (const [limit, name] of steps) {
    if (Math.abs(seconds) < limit) return relativeFormat.format(Math.round(seconds / unit), name);
    unit = limit;
  }
  return fmtTime(date);
}

// A date input's value (YYYY-MM-DD, read as UTC) moved by some days.
function utcDay(offsetDays = 0, from = new Date()) {
  const day = new Date(Date.UTC(from.getUTCFullYear(), from.getUTCMonth(), from.getUTCDate()));
  day.setUTCDate(day.getUTCDate() + offsetDays);
  return day.toISOString().slice(0, 10);
}

const isoSeconds = (date) => date.toISOString().replace(/\.\d{3}Z$/, "Z");

// ---- The admin API --------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, { method = "GET", body, key = adminKey() } = {}) {
  const headers = { Authorization: `Bearer ${key}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(new URL(path, ADMIN_BASE), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit", // the key is the only credential: never send cookies along
    });
  } catch {
    throw new ApiError(0, "The gateway did not answer. Is it running?");
  }
  if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
  return response;
}

// The gateway's errors are {"error": {"message", "type", "param", "code"}}.
async function errorMessage(response) {
  const fallback = `${response.status} ${response.statusText}`.trim();
  try {
    const { error } = await response.json();
    if (!error?.message) return fallback;
    return error.param ? `${error.message} (${error.param})` : error.message;
  } catch {
    return fallback;
  }
}

async function getJson(path) {
  return (await api(path)).json();
}

// ---- Routing --------------------------------------------------------------------------------

const VIEWS = {
  overview: renderOverview,
  spend: renderSpend,
  keys: renderKeys,
  deployments: renderDeployments,
  requests: renderRequests,
};

// The view on screen: alive until the next route; cleanups stop its timers and charts.
let current = null;

function viewName() {
  return location.hash.replace(/^#\/?/, "").split("?")[0];
}

function go(name) {
  if (viewName() === name) route();
  else location.hash = `#/${name}`;
}

function stopCurrent() {
  if (!current) return;
  current.alive = false;
  for (const cleanup of current.cleanups) cleanup();
  current = null;
}

function route() {
  stopCurrent();
  const name = viewName();
  if (!adminKey()) {
    showLogin(name in VIEWS ? name : "overview");
    return;
  }
  if (!(name in VIEWS)) {
    go("overview");
    return;
  }
  byId("topbar").hidden = false;
  for (const link of document.querySelectorAll(".nav a")) {
    if (link.dataset.view === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${name[0].toUpperCase()}${name.slice(1)} · Gateway console`;
  current = { name, alive: true, cleanups: [], loads: 0 };
  VIEWS[name](current, mount(`view-${name}`));
}

function mount(templateId) {
  const view = byId(templateId).content.firstElementChild.cloneNode(true);
  byId("main").replaceChildren(view);
  return view;
}

// A refused key mid-session (rotated, or a typo that got through): back to the login.
function loggedOut(message) {
  const next = current?.name || "overview";
  stopCurrent();
  for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
  forgetKey();
  showLogin(next, `The gateway refused the admin key: ${message}`);
}

// Runs a view's load and shows its failure in the view's error box. Only the latest load of
// a live view may draw: a slow answer must not overwrite a newer one.
async function guarded(ctx, view, work) {
  const box = $(view, '[data-role="error"]');
  const mine = ++ctx.loads;
  const isLatest = () => ctx.alive && ctx.loads === mine;
  try {
    await work(isLatest);
    if (isLatest()) showMessage(box, "");
  } catch (error) {
    if (!isLatest()) return;
    if (error.status === 401) loggedOut(error.message);
    else showMessage(box, error.message);
  }
}

// Runs a user's action (revoke, download): a failure shows in the view's error box, and
// unlike guarded() it does not count as a load, so a load in flight still draws.
async function attempt(view, work) {
  try {
    await work();
    return true;
  } catch (error) {
    if (error.status === 401) loggedOut(error.message);
    else showMessage($(view, '[data-role="error"]'), error.message);
    return false;
  }
}

// ---- Login ----------------------------------------------------------------------------------

function showLogin(next, message) {
  byId("topbar").hidden = true;
  document.title = "Log in · Gateway console";
  const view = mount("view-login");
  const form = $(view, "#login-form");
  const box = $(view, "#login-error");
  const button = $(form, "button[type=submit]");
  showMessage(box, message);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = form.elements.key.value.trim();
    button.disabled = true;
    try {
      await api("overview?window=1h", { key }); // any admin call tells whether the key is good
      sessionStorage.setItem(KEY_STORAGE, key);
      go(next);
    } catch (error) {
      const refused = error.status === 401 || error.status === 403;
      showMessage(box, refused ? `The gateway refused this key: ${error.message}` : error.message);
      button.disabled = false;
      form.elements.key.select();
    }
  });
  form.elements.key.focus();
}

// ---- Charts (uPlot) -------------------------------------------------------------------------

function chartWidth(container) {
  return Math.max(280, Math.floor(container.clientWidth));
}

// Draws a uPlot chart into a container, replacing the one there; resizes with the container.
function drawChart(ctx, container, options, data) {
  container.replaceChildren();
  const UPlot = window.uPlot;
  if (!UPlot) {
    container.append(h("p", { className: "chart-empty", text: "The chart library did not load." }));
    return;
  }
  const chart = new UPlot({ ...options, width: chartWidth(container), height: CHART_HEIGHT },
    data, container);
  let width = chartWidth(container);
  const observer = new ResizeObserver(() => {
    if (chartWidth(container) === width) return; // only the width: a height change would loop
    width = chartWidth(container);
    chart.setSize({ width, height: CHART_HEIGHT });
  });
  observer.observe(container);
  const destroy = () => {
    observer.disconnect();
    chart.destroy();
  };
  container.destroyChart?.();
  container.destroyChart = destroy;
  ctx.cleanups.push(destroy);
}

function chartEmpty(container, message) {
  container.destroyChart?.();
  container.destroyChart = null;
  container.replaceChildren(h("p", { className: "chart-empty", text: message }));
}

const fromZero = (u, min, max) => [0, max > 0 ? max * 1.1 : 1];

// A bar's label cut to the room its bar has, so that neighbours never overlap.
function fitLabel(u, labels, i) {
  const label = labels[i] ?? "";
  const room = u.bbox.width / (window.devicePixelRatio || 1) / labels.length;
  const chars = Math.max(3, Math.floor(room / 7.5) - 1); // about 7 px a character at 12 px
  return label.length > chars ? `${label.slice(0, chars - 1)}…` : label;
}

// One bar per label, its value written above it (no hover needed to read it).
function barChart(ctx, container, labels, values, seriesLabel, format) {
  if (!labels.length) return chartEmpty(container, "No data in this window.");
  const xs = labels.map((_, i) => i);
  const writeValues = (u) => {
    const c = u.ctx;
    const ratio = window.devicePixelRatio || 1;
    c.save();
    c.font = `${12 * ratio}px system-ui, sans-serif`;
    c.fillStyle = "#1c2230";
    c.textAlign = "center";
    values.forEach((value, i) => {
      c.fillText(format(value), u.valToPos(i, "x", true), u.valToPos(value, "y", true) - 6 * ratio);
    });
    c.restore();
  };
  drawChart(ctx, container, {
    legend: { show: false },
    cursor: { drag: { x: false, y: false }, points: { show: false } },
    scales: { x: { time: false, range: [-0.5, labels.length - 0.5] }, y: { range: fromZero } },
    axes: [
      { splits: () => xs, values: (u, splits) => splits.map((i) => fitLabel(u, labels, i)),
        grid: { show: false } },
      { values: (u, splits) => splits.map(format), size: 64 },
    ],
    series: [{}, { label: seriesLabel, stroke: PALETTE[0], fill: `${PALETTE[0]}cc`, width: 1,
      paths: window.uPlot.paths.bars({ size: [0.6, 90] }), points: { show: false } }],
    hooks: { draw: [writeValues] },
  }, [xs, values]);
}

const DAY = 86400;
const dayLabel = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric",
  timeZone: "UTC" });

// The time axis: uPlot's own ticks for hours; for days, ticks on whole days labelled as dates
// (its hourly ticks in between would suggest data the ledger does not have).
function timeAxis(granularity) {
  if (granularity !== "day") return {};
  return {
    incrs: [DAY, 2 * DAY, 7 * DAY, 14 * DAY, 28 * DAY],
    values: (u, splits) => splits.map((ts) => dayLabel.format(new Date(ts * 1000))),
    space: 60,
  };
}

// Lines over UTC time: xs in Unix seconds, one series per {label, values}.
function timeChart(ctx, container, xs, series, format, granularity) {
  if (!xs.length) return chartEmpty(container, "No spend in this range.");
  drawChart(ctx, container, {
    tzDate: (ts) => window.uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
    scales: { y: { range: fromZero } },
    axes: [timeAxis(granularity), { values: (u, splits) => splits.map(format), size: 72 }],
    series: [
      { value: (u, ts) => (ts === null ? "–" : fmtPeriod(ts)) },
      ...series.map((s, i) => ({
        label: s.label,
        stroke: PALETTE[i % PALETTE.length],
        width: 2,
        value: (u, v) => (v === null ? "–" : format(v)),
        points: { show: xs.length <= 40 },
      })),
    ],
  }, [xs, ...series.map((s) => s.values)]);
}

// ---- Overview -------------------------------------------------------------------------------

let overviewWindow = "1h"; // kept across visits to the view

function renderOverview(ctx, view) {
  const buttons = view.querySelectorAll("[data-window]");
  const load = () => {
    for (const b of buttons) b.setAttribute("aria-pressed", String(b.dataset.window === overviewWindow));
    return guarded(ctx, view, async (isLatest) => {
      const data = await getJson(`overview?window=${overviewWindow}`);
      if (isLatest()) fillOverview(ctx, view, data);
    });
  };
  for (const b of buttons) {
    b.addEventListener("click", () => {
      overviewWindow = b.dataset.window;
      load();
    });
  }
  load();
}

function setStat(view, name, text, raw) {
  const el = $(view, `[data-stat="${name}"]`);
  el.textContent = text;
  if (raw !== undefined) el.dataset.value = String(raw);
}

function fillOverview(ctx, view, data) {
  const tokens = (data.prompt_tokens || 0) + (data.completion_tokens || 0);
  setStat(view, "requests", fmtInt(data.requests), data.requests);
  setStat(view, "rps", `${fmtRate(data.requests_per_second)} per second`, data.requests_per_second);
  setStat(view, "error_rate", fmtPercent(data.error_rate), data.error_rate);
  setStat(view, "errors", `${fmtInt(data.errors)} errors`, data.errors);
  setStat(view, "latency_p50", fmtMs(data.latency_ms?.p50), data.latency_ms?.p50);
  setStat(view, "latency_p95", `p95 ${fmtMs(data.latency_ms?.p95)}`, data.latency_ms?.p95);
  setStat(view, "ttfb_p50", fmtMs(data.ttfb_ms?.p50), data.ttfb_ms?.p50);
  setStat(view, "ttfb_p95", `p95 ${fmtMs(data.ttfb_ms?.p95)}`, data.ttfb_ms?.p95);
  setStat(view, "tokens", fmtCompact(tokens), tokens);
  setStat(view, "tokens_split",
    `${fmtCompact(data.prompt_tokens)} in · ${fmtCompact(data.completion_tokens)} out`);
  setStat(view, "cost", fmtCost(data.cost), data.cost);
  setStat(view, "cost_per_request",
    data.requests ? `${fmtCost(data.cost / data.requests)} per request` : "");

  const models = [...(data.by_model || [])].sort((a, b) => b.requests - a.requests);
  const tbody = $(view, '[data-role="rows"]');
  if (!models.length) emptyRow(tbody, "No requests in this window.");
  else tbody.replaceChildren(...models.map(modelRow));
  barChart(ctx, $(view, '[data-role="chart"]'), models.map((m) => m.model),
    models.map((m) => m.requests), "Requests", fmtCompact);
}

function modelRow(m) {
  return h("tr", {},
    cell(m.model),
    numCell(fmtInt(m.requests)),
    numCell(fmtInt(m.errors)),
    numCell(fmtPercent(m.requests ? m.errors / m.requests : 0)),
    numCell(fmtInt(m.prompt_tokens)),
    numCell(fmtInt(m.completion_tokens)),
    numCell(fmtCost(m.cost)));
}

// ---- Spend ----------------------------------------------------------------------------------

function renderSpend(ctx, view) {
  const form = $(view, '[data-role="filters"]');
  const csv = $(view, '[data-role="csv"]');
  form.elements.from.value = utcDay(-6);
  form.elements.to.value = utcDay(0);

  const load = () => guarded(ctx, view, async (isLatest) => {
    const data = await getJson(`spend?${spendParams(form)}`);
    if (isLatest()) fillSpend(ctx, view, data);
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  for (const name of ["group_by", "granularity"]) form.elements[name].addEventListener("change", load);
  csv.addEventListener("click", (event) => {
    event.preventDefault();
    attempt(view, () => downloadCsv(form));
  });
  load();
}

// The query for the chosen range: the "to" day is included, so the range ends the day after.
function spendParams(form) {
  const { group_by: groupBy, from, to, granularity } = form.elements;
  if (!from.value || !to.value) throw new Error("Choose a start and an end date.");
  if (from.value > to.value) throw new Error("The start date is after the end date.");
  const end = new Date(`${utcDay(1, new Date(`${to.value}T00:00:00Z`))}T00:00:00Z`);
  return new URLSearchParams({
    group_by: groupBy.value,
    from: `${from.value}T00:00:00Z`,
    to: isoSeconds(end),
    granularity: granularity.value,
  });
}

// The CSV needs the auth header, so a plain link cannot fetch it: fetch, then save a Blob.
async function downloadCsv(form) {
  const params = spendParams(form);
  params.set("format", "csv");
  const blob = await (await api(`spend?${params}`)).blob();
  const url = URL.createObjectURL(blob);
  const name = `spend-by-${params.get("group_by")}-${form.elements.from.value}-to-${form.elements.to.value}.csv`;
  const link = h("a", { attrs: { href: url, download: name } });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30_000);
}

const SPEND_SUMS = ["requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens",
  "cost"];

function spendTotals(rows) {
  const totals = new Map();
  for (const row of rows) {
    const total = totals.get(row.group) || Object.fromEntries(SPEND_SUMS.map((f) => [f, 0]));
    for (const field of SPEND_SUMS) total[field] += row[field] || 0;
    totals.set(row.group, total);
  }
  return [...totals.entries()].sort((a, b) => b[1].cost - a[1].cost);
}

function fillSpend(ctx, view, data) {
  const rows = data.rows || [];
  const totals = spendTotals(rows);
  $(view, '[data-role="group-head"]').textContent =
    `${data.group_by[0].toUpperCase()}${data.group_by.slice(1)}`;
  drawSpendChart(ctx, view, data, totals.map(([group]) => group));
  fillSpendTotals($(view, '[data-role="totals"]'), totals);
  fillLedger(view, rows);
}

// Cost per period and group; the groups past the top CHART_MAX_SERIES add up as "other".
function drawSpendChart(ctx, view, { rows = [], granularity }, groupsByCost) {
  const top = groupsByCost.slice(0, CHART_MAX_SERIES);
  const others = groupsByCost.length - top.length;
  const periods = [...new Set(rows.map((r) => r.period))].sort();
  const index = new Map(periods.map((p, i) => [p, i]));
  const labels = others ? [...top, `other (${others})`] : top;
  const values = labels.map(() => periods.map(() => 0));
  for (const row of rows) {
    const at = top.indexOf(row.group);
    values[at === -1 ? top.length : at][index.get(row.period)] += row.cost || 0;
  }
  const xs = periods.map((p) => toDate(p).getTime() / 1000);
  const series = labels.map((label, i) => ({ label, values: values[i] }));
  timeChart(ctx, $(view, '[data-role="chart"]'), xs, series, fmtCost, granularity);
  const note = $(view, '[data-role="chart-note"]');
  showMessage(note, others ? `The ${others} smallest groups are summed as "other".` : "");
}

function fillSpendTotals(tbody, totals) {
  if (!totals.length) return emptyRow(tbody, "No spend in this range.");
  const grand = Object.fromEntries(SPEND_SUMS.map((f) => [f, 0]));
  for (const [, total] of totals) for (const f of SPEND_SUMS) grand[f] += total[f];
  const row = (name, t, className) => h("tr", { className },
    cell(name), numCell(fmtInt(t.requests)), numCell(fmtInt(t.errors)),
    numCell(fmtInt(t.prompt_tokens)), numCell(fmtInt(t.completion_tokens)),
    numCell(fmtInt(t.cached_tokens)), numCell(fmtCost(t.cost)));
  tbody.replaceChildren(...totals.map(([group, t]) => row(group, t)), row("Total", grand, "total"));
}

function fillLedger(view, rows) {
  const tbody = $(view, '[data-role="rows"]');
  const note = $(view, '[data-role="ledger-note"]');
  const shown = rows.slice(0, LEDGER_MAX_ROWS);
  showMessage(note, rows.length > shown.length
    ? `Showing the first ${fmtInt(shown.length)} of ${fmtInt(rows.length)} rows: download the CSV for all.`
    : "");
  if (!rows.length) return emptyRow(tbody, "No spend in this range.");
  tbody.replaceChildren(...shown.map((r) => h("tr", {},
    cell(fmtPeriod(r.period)), cell(r.group), numCell(fmtInt(r.requests)),
    numCell(fmtInt(r.errors)), numCell(fmtInt(r.prompt_tokens)),
    numCell(fmtInt(r.completion_tokens)), numCell(fmtInt(r.cached_tokens)),
    numCell(fmtCost(r.cost)))));
}

// Periods are UTC buckets: shown as UTC, the way the date inputs choose them.
function fmtPeriod(period) {
  const date = toDate(period);
  if (!date) return String(period);
  const iso = date.toISOString();
  return iso.slice(11, 16) === "00:00" ? iso.slice(0, 10) : `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
}

// ---- Keys -----------------------------------------------------------------------------------

function renderKeys(ctx, view) {
  const load = () => guarded(ctx, view, async (isLatest) => {
    const { data } = await getJson("keys");
    if (isLatest()) fillKeys(ctx, view, data, load);
  });
  $(view, '[data-role="create"]').addEventListener("click", () => openKeyForm(null, load));
  load();
}

function fillKeys(ctx, view, keys, reload) {
  const tbody = $(view, '[data-role="rows"]');
  if (!keys.length) return emptyRow(tbody, "No keys yet.");
  // The live keys first; revoked ones sink to the bottom.
  const sorted = [...keys].sort((a, b) => Number(a.revoked) - Number(b.revoked)
    || String(a.id).localeCompare(String(b.id)));
  tbody.replaceChildren(...sorted.map((key) => keyRow(view, key, reload)));
}

function keyState(key) {
  if (key.revoked) return ["revoked", "bad"];
  if (key.disabled) return ["disabled", "warn"];
  const expires = toDate(key.expires);
  if (expires && expires < new Date()) return ["expired", "warn"];
  return ["active", "ok"];
}

function keyRow(view, key, reload) {
  const [state, tone] = keyState(key);
  const who = [key.owner, key.team && `team ${key.team}`].filter(Boolean).join(" · ");
  const edit = h("button", { className: "button secondary small", text: "Edit",
    attrs: { type: "button" } });
  const revoke = h("button", { className: "button secondary small", text: "Revoke",
    attrs: { type: "button", "data-revoke": key.id } });
  edit.disabled = revoke.disabled = Boolean(key.revoked);
  edit.addEventListener("click", () => openKeyForm(key, reload));
  revoke.addEventListener("click", () => revokeKey(view, key, reload));
  const lastUsed = cell(key.last_used ? fmtRelative(key.last_used) : "never");
  if (key.last_used) lastUsed.title = fmtTime(key.last_used);
  return h("tr", { className: key.revoked ? "revoked" : "", attrs: { "data-key": key.id } },
    h("td", {}, h("strong", { text: key.id }),
      who ? h("span", { className: "sub wrap", text: who }) : null),
    h("td", {}, badge(state, tone)),
    h("td", {}, ...(key.models?.length
      ? key.models.map((model) => h("span", { className: "line", text: model }))
      : [h("span", { className: "muted", text: "all" })])),
    h("td", {}, ...limitLines(key)),
    h("td", {}, budgetBar(key)),
    lastUsed,
    cell(key.expires ? fmtTime(key.expires) : "never"),
    h("td", {}, h("div", { className: "row-actions" }, edit, revoke)));
}

function limitLines(key) {
  const limits = [
    [key.rpm, "requests / min"],
    [key.tpm, "tokens / min"],
    [key.max_parallel, "in parallel"],
  ].filter(([value]) => isNumber(value));
  if (!limits.length) return [h("span", { className: "muted", text: "none" })];
  return limits.map(([value, unit]) => h("span", { className: "sub", text: `${fmtInt(value)} ${unit}` }));
}

function budgetBar(key) {
  const spent = key.spent || 0;
  if (!key.budget) {
    return h("div", { className: "budget" }, h("span", { text: `${fmtCost(spent)} spent` }),
      h("span", { className: "sub", text: "no budget" }));
  }
  const { amount, period } = key.budget;
  const ratio = amount > 0 ? spent / amount : 1;
  const level = ratio >= 1 ? "over" : ratio >= 0.8 ? "high" : "";
  const bar = h("progress", { attrs: { "aria-label": `Spend against the ${period} budget` } });
  bar.max = amount > 0 ? amount : 1;
  bar.value = Math.min(spent, bar.max);
  return h("div", { className: `budget ${level}`.trim() }, bar,
    h("span", { text: `${fmtCost(spent)} of ${fmtCost(amount)}` }),
    h("span", { className: "sub", text: `${period} · ${fmtPercent(ratio)}` }));
}

async function revokeKey(view, key, reload) {
  const sure = await confirmAction(`Revoke the key “${key.id}”? Every client using it is refused `
    + "from now on. This cannot be undone.");
  if (!sure) return;
  const path = `keys/${encodeURIComponent(key.id)}/revoke`;
  if (await attempt(view, () => api(path, { method: "POST" }))) reload();
}

// ---- The key form (create and edit) ---------------------------------------------------------

// The key being edited (null for a new one) and what to do once saved: the form's one submit
// listener reads them, so opening the dialog again adds no listener.
let keyForm = { key: null, onSaved: () => {} };

function openKeyForm(key, onSaved) {
  const form = byId("key-form");
  form.reset();
  showMessage(byId("key-form-error"), "");
  keyForm = { key, onSaved };
  byId("key-dialog-title").textContent = key ? `Edit key ${key.id}` : "New key";
  byId("key-form-submit").textContent = key ? "Save" : "Create key";
  const f = form.elements;
  f.id.disabled = Boolean(key); // an id cannot change
  if (key) {
    f.id.value = key.id;
    f.owner.value = key.owner ?? "";
    f.team.value = key.team ?? "";
    f.models.value = (key.models || []).join(", ");
    for (const name of ["rpm", "tpm", "max_parallel"]) f[name].value = key[name] ?? "";
    f.expires.value = toDate(key.expires)?.toISOString().slice(0, 10) ?? "";
    f.budget_amount.value = key.budget?.amount ?? "";
    f.budget_period.value = key.budget?.period ?? "monthly";
  }
  byId("key-dialog").showModal();
  (key ? f.owner : f.id).focus();
}

// The form's fields in the API's terms; an empty field is null (no limit, no budget).
function readKeyForm(form) {
  const f = form.elements;
  const text = (name) => f[name].value.trim() || null;
  const positive = (name, label) => {
    const value = text(name);
    if (value === null) return null;
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) throw new Error(`${label} must be a whole number above 0.`);
    return n;
  };
  const amount = text("budget_amount");
  if (amount !== null && !(Number(amount) >= 0)) throw new Error("The budget must be 0 or more.");
  return {
    owner: text("owner"),
    team: text("team"),
    models: (text("models") || "").split(/[\s,]+/).filter(Boolean),
    rpm: positive("rpm", "Requests / min"),
    tpm: positive("tpm", "Tokens / min"),
    max_parallel: positive("max_parallel", "Max parallel"),
    budget: amount === null ? null : { amount: Number(amount), period: f.budget_period.value },
    expires: text("expires") && `${text("expires")}T23:59:59Z`,
  };
}

// A PATCH sends only what changed, so fields the form does not show are left alone.
function changedFields(key, fields) {
  const before = {
    ...key,
    models: key.models || [],
    budget: key.budget ? { amount: key.budget.amount, period: key.budget.period } : null,
  };
  const sameDay = (a, b) => (toDate(a)?.toISOString().slice(0, 10) ?? null)
    === (toDate(b)?.toISOString().slice(0, 10) ?? null);
  return Object.fromEntries(Object.entries(fields).filter(([name, value]) => (name === "expires"
    ? !sameDay(before.expires, value)
    : JSON.stringify(before[name] ?? null) !== JSON.stringify(value))));
}

// A new key sends only the fields that were filled in: the gateway's defaults do the rest.
function newKeyBody(form, fields) {
  const body = { id: form.elements.id.value.trim() };
  for (const [name, value] of Object.entries(fields)) {
    if (value !== null && !(Array.isArray(value) && !value.length)) body[name] = value;
  }
  return body;
}

async function submitKeyForm(event) {
  event.preventDefault();
  const form = event.target;
  const box = byId("key-form-error");
  const button = byId("key-form-submit");
  const { key, onSaved } = keyForm;
  button.disabled = true;
  try {
    const fields = readKeyForm(form);
    if (key) {
      const patch = changedFields(key, fields);
      if (Object.keys(patch).length) {
        await api(`keys/${encodeURIComponent(key.id)}`, { method: "PATCH", body: patch });
      }
      byId("key-dialog").close();
    } else {
      const created = await (await api("keys", { method: "POST", body: newKeyBody(form, fields) })).json();
      byId("key-dialog").close();
      showSecret(created);
    }
    onSaved();
  } catch (error) {
    if (error.status === 401) loggedOut(error.message);
    else showMessage(box, error.message);
  } finally {
    button.disabled = false;
  }
}

// ---- Dialogs: the once-shown secret, the confirmation ------------------------------------

function showSecret(created) {
  byId("secret-key-id").textContent = created.id;
  byId("secret-value").value = created.secret || "";
  showMessage(byId("secret-copied"), "");
  byId("secret-dialog").showModal();
  byId("secret-value").select();
}

async function copySecret() {
  const input = byId("secret-value");
  const status = byId("secret-copied");
  try {
    await navigator.clipboard.writeText(input.value);
    showMessage(status, "Copied to the clipboard.");
  } catch {
    // No clipboard access (an insecure origin, a denied permission): leave it selected.
    input.select();
    showMessage(status, "Copying was not allowed here: the secret is selected, press Ctrl+C.");
  }
}

function confirmAction(message) {
  const dialog = byId("confirm-dialog");
  byId("confirm-text").textContent = message;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
  });
}

function setUpDialogs() {
  for (const button of document.querySelectorAll("dialog [data-close]")) {
    button.addEventListener("click", () => button.closest("dialog").close());
  }
  byId("key-form").addEventListener("submit", submitKeyForm);
  byId("secret-copy").addEventListener("click", copySecret);
  const secretDialog = byId("secret-dialog");
  // Escape must not lose the secret by accident: only the explicit button closes this one.
  secretDialog.addEventListener("cancel", (event) => event.preventDefault());
  // Once closed the secret is gone from the page too, as the warning says.
  secretDialog.addEventListener("close", () => {
    byId("secret-value").value = "";
  });
}

// ---- Deployments ----------------------------------------------------------------------------

function renderDeployments(ctx, view) {
  const load = () => guarded(ctx, view, async (isLatest) => {
    const { data } = await getJson("deployments");
    if (isLatest()) fillDeployments(view, data);
  });
  $(view, '[data-role="refresh"]').addEventListener("click", load);
  load();
}

function deploymentState(d) {
  if (d.healthy) return ["healthy", "ok"];
  return d.cooling_until ? ["cooling", "warn"] : ["unhealthy", "bad"];
}

function fillDeployments(view, deployments) {
  const tbody = $(view, '[data-role="rows"]');
  if (!deployments.length) return emptyRow(tbody, "No deployments configured.");
  tbody.replaceChildren(...deployments.map((d) => {
    const [state, tone] = deploymentState(d);
    const until = h("td");
    if (d.cooling_until) {
      until.append(h("span", { text: fmtClock(d.cooling_until) }),
        h("span", { className: "sub", text: fmtRelative(d.cooling_until) }));
    } else {
      until.textContent = "–";
    }
    return h("tr", { attrs: { "data-deployment": d.deployment } },
      cell(d.model), cell(d.deployment), cell(d.provider), h("td", {}, badge(state, tone)),
      cell(d.reason || (d.healthy ? "" : "–"), "wrap"), until,
      numCell(fmtInt(d.requests_1m)), numCell(fmtInt(d.errors_1m)));
  }));
}

// ---- Requests -------------------------------------------------------------------------------

const knownKeys = new Set();
const knownModels = new Set();

function renderRequests(ctx, view) {
  const form = $(view, '[data-role="filters"]');
  let timer = null;
  const stopTimer = () => {
    clearTimeout(timer);
    timer = null;
  };
  // The next refresh is planned when a load ends, so slow answers never pile up.
  const load = async () => {
    stopTimer();
    await guarded(ctx, view, async (isLatest) => {
      const { data } = await getJson(`requests?${requestParams(form)}`);
      if (isLatest()) fillRequests(view, data);
    });
    if (ctx.alive && form.elements.auto.checked) timer = setTimeout(load, REFRESH_MS);
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  form.elements.auto.addEventListener("change", () => (form.elements.auto.checked ? load() : stopTimer()));
  form.elements.limit.addEventListener("change", load);
  ctx.cleanups.push(stopTimer);
  load();
}

function requestParams(form) {
  const params = new URLSearchParams({ limit: form.elements.limit.value });
  for (const name of ["key", "model", "status"]) {
    const value = form.elements[name].value.trim();
    if (value) params.set(name, value);
  }
  return params;
}

function statusTone(status) {
  if (status >= 200 && status < 300) return "ok";
  return status >= 400 && status < 500 && status !== 499 ? "warn" : "bad";
}

function fillRequests(view, records) {
  $(view, '[data-role="updated"]').textContent = `Updated ${new Date().toLocaleTimeString()}`;
  remember(records);
  const tbody = $(view, '[data-role="rows"]');
  if (!records.length) return emptyRow(tbody, "No requests match.");
  tbody.replaceChildren(...records.map(requestRow));
}

// Keys and models seen so far become suggestions in the filter inputs.
function remember(records) {
  for (const r of records) {
    if (r.key) knownKeys.add(r.key);
    if (r.model) knownModels.add(r.model);
  }
  const options = (values) => [...values].sort().map((value) => h("option", { attrs: { value } }));
  byId("known-keys").replaceChildren(...options(knownKeys));
  byId("known-models").replaceChildren(...options(knownModels));
}

function requestRow(r) {
  const usage = r.usage || null;
  const tokens = numCell(usage ? fmtInt(usage.total_tokens
    ?? (usage.prompt_tokens || 0) + (usage.completion_tokens || 0)) : "–");
  if (usage) tokens.title = `${fmtInt(usage.prompt_tokens)} in, ${fmtInt(usage.completion_tokens)} out`;
  const time = cell(fmtClock(r.time));
  time.title = fmtTime(r.time);
  return h("tr", {},
    time,
    cell(r.key),
    cell(r.model),
    h("td", {}, h("span", { text: r.endpoint || "–" }), h("span", { className: "sub",
      text: `${r.method || ""} ${r.path || ""}`.trim() })),
    h("td", {}, badge(String(r.status ?? "–"), statusTone(r.status))),
    h("td", {}, h("span", { text: r.outcome || "–" }),
      r.error_code ? h("span", { className: "sub", text: r.error_code }) : null),
    numCell(fmtMs(r.duration_ms)),
    numCell(fmtMs(r.ttfb_ms)),
    tokens,
    numCell(fmtCost(r.cost)),
    cell(r.deployment),
    cell(r.request_id, "mono small"));
}

// ---- Start ----------------------------------------------------------------------------------

function start() {
  setUpDialogs();
  byId("logout").addEventListener("click", () => {
    stopCurrent();
    forgetKey();
    go("login");
  });
  window.addEventListener("hashchange", route);
  route();
}

start();
