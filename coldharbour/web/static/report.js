"use strict";
// The report page: one account's tear sheet (docs/report.md). Served at /report?account=<slug>
// it reads /api/report and refreshes on the dashboard's pushes (equity, closed, metrics); in a
// file written by `chmgr report --html` the same script renders the embedded #report-data.
(() => {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const REFRESH_MS = 1000;
  const MONTHS = ["01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12"];
  let report = null;
  let inDollars = false;

  const fixed = (v, places) => (v === null || v === undefined ? "—" : Number(v).toLocaleString("en-US", {
    minimumFractionDigits: places, maximumFractionDigits: places,
  }));
  const pct = (v) => (v === null || v === undefined ? "—" : `${fixed(v, 2)} %`);
  const money = (v) => (v === null || v === undefined ? "—" : `${Number(v) < 0 ? "−" : ""}$${fixed(Math.abs(Number(v)), 2)}`);
  const fractionPct = (v) => (v === null || v === undefined ? "—" : pct(100 * Number(v)));
  const none = () => "—";
  const SIGNED = new Set([pct, money, fractionPct]);
  const ratio = (v) => fixed(v, 2);
  const count = (v) => (v === null || v === undefined ? "—" : String(v));
  const sign = (el, v) => { if (Number.isFinite(v) && v !== 0) el.classList.add(v > 0 ? "pos" : "neg"); };

  function card(parent, key, label, value, format, reason) {
    const el = document.createElement("div");
    el.className = "card";
    el.dataset.key = key;
    el.dataset.value = value === null || value === undefined ? "" : String(value);
    const name = document.createElement("div");
    name.className = "label";
    name.textContent = label;
    const shown = document.createElement("div");
    shown.className = "value";
    shown.textContent = format(value);
    if (SIGNED.has(format)) sign(shown, Number(value));
    el.append(name, shown);
    if (reason) {
      el.classList.add("withheld");
      el.title = reason;
      const why = document.createElement("div");
      why.className = "reason";
      why.textContent = reason;
      el.append(why);
    }
    parent.append(el);
  }

  function cells(row, values) {
    for (const [text, numeric, value] of values) {
      const td = document.createElement("td");
      td.textContent = text;
      if (numeric) { td.className = "num"; sign(td, value); }
      row.append(td);
    }
  }

  function summary(r) {
    const box = $("summary");
    box.replaceChildren();
    const w = r.withheld;
    const rows = [
      ["twr_pct", "Total return % (time-weighted)", pct],
      ["mwr_pct", "Money-weighted return %", pct],
      ["cagr_pct", "CAGR % (returns, ann.)", pct],
      ["sharpe", "Sharpe (returns, ann., full period)", ratio],
      ["smart_sharpe", "Smart Sharpe (returns, ann.)", ratio],
      ["sortino", "Sortino (returns, ann.)", ratio],
      ["volatility_pct", "Volatility % (returns, ann.)", pct],
      ["calmar", "Calmar (CAGR / max drawdown)", ratio],
      ["max_drawdown_pct", "Max drawdown %", pct],
      ["best_day_pct", "Best day %", pct],
      ["worst_day_pct", "Worst day %", pct],
      ["win_days_pct", "Winning days %", pct],
      ["payoff_ratio_returns", "Payoff ratio (returns: mean win day / mean loss day)", ratio],
      ["best_month_pct", "Best month %", pct],
      ["worst_month_pct", "Worst month %", pct],
      ["win_months_pct", "Winning months %", pct],
      ["var_95_pct", "Daily VaR 95 % (historical)", pct],
      ["cvar_95_pct", "Expected shortfall 95 %", pct],
      ["skew", "Skew", ratio],
      ["kurtosis", "Excess kurtosis", ratio],
      ["tail_ratio", "Tail ratio (95th / 5th pct)", ratio],
      ["sessions", "Sessions with a return", count],
    ];
    for (const [key, label, format] of rows) card(box, key, label, r[key], format, w[key]);
    for (const key of ["3M", "6M", "1Y", "all"]) {
      card(box, `trailing.${key}`, `Return % ${key === "all" ? "all time" : `trailing ${key}`}`, r.trailing[key], pct,
        w[`trailing.${key}`]);
    }
    if (r.wipe_out) card(box, "wipe_out", "Wiped out on", r.wipe_out.date, (d) => d, w.after_wipe_out);
  }

  function line(svg, points, cls, area) {
    svg.replaceChildren();
    if (points.length === 0) return;
    const ys = points.map((p) => p[1]);
    let lo = Math.min(0, ...ys);
    let hi = Math.max(0, ...ys);
    if (hi === lo) { hi += 1; lo -= 1; }
    const x = (i) => (points.length === 1 ? 300 : (i / (points.length - 1)) * 600);
    const y = (v) => 155 - ((v - lo) / (hi - lo)) * 150;
    const zero = document.createElementNS(SVG, "line");
    zero.setAttribute("class", "zero");
    zero.setAttribute("x1", "0"); zero.setAttribute("x2", "600");
    zero.setAttribute("y1", String(y(0))); zero.setAttribute("y2", String(y(0)));
    const path = document.createElementNS(SVG, "path");
    let d = points.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(2)},${y(p[1]).toFixed(2)}`).join("");
    if (area) d += `L${x(points.length - 1).toFixed(2)},${y(0).toFixed(2)}L0,${y(0).toFixed(2)}Z`;
    path.setAttribute("d", d);
    path.setAttribute("class", cls);
    const label = document.createElementNS(SVG, "text");
    label.setAttribute("x", "4"); label.setAttribute("y", "12");
    label.textContent = `${fixed(hi, 2)} … ${fixed(lo, 2)}`;
    svg.append(zero, path, label);
  }

  function charts(r) {
    const source = inDollars ? r.equity : r.cumulative_pct;
    line($("chart-equity"), Object.entries(source).map(([d, v]) => [d, Number(v)]), "curve", false);
    line($("chart-underwater"), Object.entries(r.underwater_pct), "area", true);
    const defined = (series) => Object.entries(series).filter(([, v]) => v !== null);
    line($("chart-rolling-sharpe"), defined(r.rolling.sharpe), "curve", false);
    line($("chart-rolling-volatility"), defined(r.rolling.volatility_pct), "curve", false);
    $("rolling-window").textContent = String(r.rolling.window);
    $("equity-unit").textContent = inDollars ? "($ equity, deposits included)" : "(cumulative return %)";
    $("equity-toggle").textContent = inDollars ? "show %" : "show $";
  }

  function heat(td, v) {
    if (typeof v !== "number" || v === 0) return;
    const strength = Math.min(1, Math.abs(v) / 10);
    td.style.backgroundColor = v > 0 ? `rgba(63, 185, 80, ${0.25 + 0.75 * strength})` : `rgba(248, 81, 73, ${0.25 + 0.75 * strength})`;
    td.classList.add("heat");
  }

  function monthly(r) {
    const body = $("monthly");
    body.replaceChildren();
    for (const year of Object.keys(r.yearly_returns).sort()) {
      const row = document.createElement("tr");
      row.dataset.year = year;
      cells(row, [[year, false, null]]);
      for (const month of MONTHS) {
        const v = r.monthly_returns[`${year}-${month}`];
        const td = document.createElement("td");
        td.className = "num";
        td.dataset.month = `${year}-${month}`;
        td.textContent = v === undefined ? "" : fixed(v, 2);
        heat(td, v);
        row.append(td);
      }
      const total = document.createElement("td");
      total.className = "num";
      total.dataset.month = year;
      total.textContent = fixed(r.yearly_returns[year], 2);
      sign(total, r.yearly_returns[year]);
      row.append(total);
      body.append(row);
    }
  }

  function drawdowns(r) {
    const body = $("drawdowns");
    body.replaceChildren();
    for (const d of r.drawdowns) {
      const row = document.createElement("tr");
      row.dataset.valley = d.valley;
      cells(row, [
        [d.peak ?? "opening", false, null], [d.valley, false, null], [d.recovery ?? "not yet", false, null],
        [fixed(d.depth_pct, 2), true, d.depth_pct], [String(d.days), true, null],
      ]);
      body.append(row);
    }
  }

  function benchmark(r) {
    const box = $("benchmark");
    box.replaceChildren();
    const b = r.benchmark;
    $("benchmark-symbol").textContent = b ? b.symbol : "";
    if (!b) {
      card(box, "benchmark", "Benchmark", null, none, r.withheld.benchmark || "not available");
      return;
    }
    card(box, "benchmark.return_pct", `${b.symbol} return % (same sessions)`, b.return_pct, pct);
    card(box, "benchmark.alpha", "Alpha % (ann.)", b.alpha, fractionPct);
    card(box, "benchmark.beta", "Beta", b.beta, ratio);
    card(box, "benchmark.correlation", "Correlation", b.correlation, ratio);
    card(box, "benchmark.r2", "R²", b.r2, ratio);
    card(box, "benchmark.information_ratio", "Information ratio (daily)", b.information_ratio, ratio);
  }

  function trades(r) {
    const box = $("trades");
    box.replaceChildren();
    const t = r.trades;
    const rows = [
      ["count", "Closed trades", t.count, count], ["wins", "Winning trades", t.wins, count],
      ["losses", "Losing trades", t.losses, count], ["breakeven", "Breakeven trades", t.breakeven, count],
      ["largest_win", "Largest win ($)", t.largest_win, money], ["largest_loss", "Largest loss ($)", t.largest_loss, money],
      ["gross_profit", "Gross profit ($)", t.gross_profit, money], ["gross_loss", "Gross loss ($)", t.gross_loss, money],
      ["max_consecutive_wins", "Consecutive winning trades", t.max_consecutive_wins, count],
      ["max_consecutive_losses", "Consecutive losing trades", t.max_consecutive_losses, count],
      ["median_holding_days", "Median holding (days)", t.median_holding_days, ratio],
    ];
    for (const [key, label, value, format] of rows) card(box, `trades.${key}`, label, value, format);
    const body = $("by-symbol");
    body.replaceChildren();
    for (const [symbol, s] of Object.entries(t.by_symbol)) {
      const row = document.createElement("tr");
      row.dataset.symbol = symbol;
      cells(row, [[symbol, false, null], [String(s.trades), true, null], [String(s.wins), true, null],
        [String(s.losses), true, null], [fixed(s.pnl, 2), true, s.pnl]]);
      body.append(row);
    }
  }

  function withheld(r) {
    const list = $("withheld");
    list.replaceChildren();
    for (const [key, reason] of Object.entries(r.withheld)) {
      const item = document.createElement("li");
      item.dataset.key = key;
      const name = document.createElement("code");
      name.textContent = key;
      item.append(name, `: ${reason}`);
      list.append(item);
    }
  }

  function render(r, account) {
    report = r;
    $("account-name").textContent = account;
    $("period").textContent = r.first_date ? `${r.first_date} … ${r.last_date}` : "no sessions yet";
    summary(r); charts(r); monthly(r); drawdowns(r); benchmark(r); trades(r); withheld(r);
    $("report").dataset.state = "ready";
  }

  async function load(account) {
    const response = await fetch(`/api/report?account=${encodeURIComponent(account)}`);
    if (!response.ok) throw new Error(`/api/report: ${response.status}`);
    render(await response.json(), account);
  }

  function live(account) {
    let timer = null;
    const later = () => {
      if (timer === null) timer = setTimeout(() => { timer = null; load(account).catch(console.warn); }, REFRESH_MS);
    };
    const source = new EventSource(`/api/stream?account=${encodeURIComponent(account)}`);
    for (const event of ["equity", "closed", "metrics"]) source.addEventListener(event, later);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("equity-toggle").addEventListener("click", () => { inDollars = !inDollars; if (report) charts(report); });
    const embedded = $("report-data");
    if (embedded) {
      const data = JSON.parse(embedded.textContent);
      render(data.report, data.account);
      return;
    }
    const account = new URLSearchParams(location.search).get("account") || "";  // "": the first account
    $("dashboard-link").href = `/?account=${encodeURIComponent(account)}`;
    load(account).then(() => live(account)).catch((e) => {
      $("report").dataset.state = "error";
      $("period").textContent = String(e.message || e);
    });
  });
})();
