// Cold Harbour dashboard: one page per account, fed by /api/stream (Server-Sent Events).
// Every value from the server is written with textContent or setAttribute (never parsed as
// HTML); the page loads nothing but /static/app.js and /static/app.css (CSP: 'self' only).
"use strict";

(function () {
  const CLOSED_LIMIT = 100;
  const params = new URLSearchParams(window.location.search);
  const view = {
    account: params.get("account") || "",
    lots: new Map(),      // parent_id -> {row, tr}
    symbols: new Map(),   // symbol -> {tr, head}: its summary row and its lots' header row
    expanded: new Set(),  // symbols whose lots are shown
    closed: new Map(),    // entry_lot_id + "\u0000" + exit_order_id -> row
    heartbeatS: 30,
    alerts: new Map(),    // key -> one line: the health causes ("health:*") and this page's own troubles
    retries: new Map(),   // parent_id -> {timer, attempt}: a lot refetch that failed, retried
    lastBeat: null,       // performance.now() of the newest UI heartbeat
    connected: false,
    dailyUnit: "pct",     // the daily chart: "pct" (cumulative return, net of flows) or "usd" (equity)
  };
  const $ = (id) => document.getElementById(id);

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // Write only what changed: an unchanged cell keeps its text node (no relayout for it).
  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }
  function setClass(node, cls) {
    if (node.className !== cls) node.className = cls;
  }

  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const plain = (v) => (v === null || v === undefined ? "—" : String(v));
  function money(v) {
    return isNum(v) ? v.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 }) : "—";
  }
  function signClass(node, v) {
    node.classList.toggle("pos", isNum(v) && v > 0);
    node.classList.toggle("neg", isNum(v) && v < 0);
  }
  // Times are UTC in the database and the API; the page shows them in the market's zone, labelled.
  const NY = new Intl.DateTimeFormat("en-CA", {
    timeZone: "America/New_York", year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
  });
  function time(v) {
    const at = v ? new Date(v) : null;
    if (!at || Number.isNaN(at.getTime())) return "—";
    const p = Object.fromEntries(NY.formatToParts(at).map((x) => [x.type, x.value]));
    return p.year + "-" + p.month + "-" + p.day + " " + p.hour + ":" + p.minute + ":" + p.second;
  }
  const stamp = (v) => (v ? Date.parse(v) : NaN);

  // ----- open positions ---------------------------------------------------------------------

  // One row per symbol (tr[data-symbol]: qty = the sum of its lots, the broker's average, one
  // mark, P&L = qty x (mark - broker average)); a click shows its lots (tr[data-parent-id]),
  // whose P&L is measured against each lot's own entry, under a header that says so. One mark
  // per symbol per render: the newest lot's mkt_px, used for the symbol and every one of its lots.
  const POSITION_CELLS = ["symbol", "side", "qty", "avg_fill", "mkt_px", "profit_loss", "reach", "moved_flag"];
  const SYMBOL_CELLS = ["symbol", "side", "qty", "avg_px", "mkt_px", "pnl", "reach", "moved_flag"];
  const LOT_HEAD = ["lot", "side", "qty", "lot entry", "mark", "P&L vs lot entry", "SL \u25c2 reach \u25b8 TP", "moved"];
  const NUMERIC = new Set(["qty", "avg_fill", "avg_px", "mkt_px", "profit_loss", "pnl"]);
  let positionsDue = false;

  const num = (v) => (isNum(v) ? v : typeof v === "string" && v !== "" && Number.isFinite(Number(v)) ? Number(v) : null);
  const sideSign = (side) => (String(side).toLowerCase() === "short" ? -1 : 1);
  const cents = (v) => Math.round(v * 100) / 100;

  function cellsOf(tr) {
    if (!tr.cells_) {
      tr.cells_ = {};
      for (const td of tr.children) tr.cells_[td.getAttribute("data-col")] = td;
    }
    return tr.cells_;
  }

  function newRow(cols, attr, id, cls) {
    const tr = document.createElement("tr");
    tr.setAttribute(attr, id);
    if (cls) tr.className = cls;
    for (const col of cols) {
      const td = el("td", NUMERIC.has(col) ? "num" : "");
      td.setAttribute("data-col", col);
      if (col === "reach") {
        const bar = el("div", "reach");
        bar.appendChild(el("div", "mid"));
        bar.appendChild(el("div", "fill"));
        td.appendChild(bar);
      }
      tr.appendChild(td);
    }
    return tr;
  }

  function fillReach(reach, row) {
    const bar = reach.querySelector(".reach");
    const fill = reach.querySelector(".fill");
    const pct = isNum(row.tp_sl_reach_pct) ? Math.max(-100, Math.min(100, row.tp_sl_reach_pct)) : 0;
    setClass(fill, "fill " + (pct >= 0 ? "pos" : "neg"));
    const width = Math.abs(pct) / 2 + "%";
    if (fill.style.width !== width) fill.style.width = width;
    const title = "SL " + plain(row.sl_px) + " \u00b7 TP " + plain(row.tp_px) + " \u00b7 reach " + plain(row.tp_sl_reach_pct) + " %";
    if (bar.title !== title) bar.title = title;
  }

  function fillLotRow(tr, row, mark) {
    const cell = cellsOf(tr);
    setText(cell.symbol, plain(row.symbol));
    const filled = "filled " + time(row.filled_at) + " New York";
    if (cell.symbol.title !== filled) cell.symbol.title = filled;
    setText(cell.side, plain(row.side));
    setText(cell.qty, plain(row.qty));
    setText(cell.avg_fill, plain(row.avg_fill));
    setText(cell.mkt_px, plain(mark === null ? row.mkt_px : mark));
    const qty = num(row.qty), entry = num(row.avg_fill);
    // Against this lot's own entry (the row's profit_loss_lot when it was computed at this mark).
    const pnl = qty !== null && entry !== null && mark !== null ? cents(sideSign(row.side) * qty * (mark - entry))
      : num(row.profit_loss_lot);
    setText(cell.profit_loss, money(pnl));
    signClass(cell.profit_loss, pnl);
    setText(cell.moved_flag, plain(row.moved_flag));
    fillReach(cell.reach, row);
  }

  function fillSymbolRow(tr, symbol, lots, mark, open) {
    const cell = cellsOf(tr);
    const first = lots[0].row;
    setText(cell.symbol, (open ? "\u25be " : "\u25b8 ") + symbol + " (" + lots.length + (lots.length === 1 ? " lot)" : " lots)"));
    const sides = new Set(lots.map((l) => String(l.row.side)));
    setText(cell.side, sides.size === 1 ? plain(first.side) : "mixed");
    let qty = 0;
    let signed = 0;
    for (const l of lots) {
      const q = num(l.row.qty) || 0;
      qty += q;
      signed += sideSign(l.row.side) * q;
    }
    setText(cell.qty, String(Number(qty.toFixed(9))));
    const newest = lots.reduce((a, b) => (stamp(b.row.updated_at) > stamp(a.row.updated_at) ? b : a)).row;
    const avg = num(newest.avg_px_symbol);
    setText(cell.avg_px, plain(avg === null ? null : newest.avg_px_symbol));
    setText(cell.mkt_px, plain(mark));
    const pnl = avg !== null && mark !== null ? cents(signed * (mark - avg)) : null;
    setText(cell.pnl, money(pnl));
    signClass(cell.pnl, pnl);
    const moved = new Set(lots.map((l) => plain(l.row.moved_flag)));
    setText(cell.moved_flag, moved.size === 1 ? Array.from(moved)[0] : "mixed");
    tr.setAttribute("aria-expanded", open ? "true" : "false");
  }

  function symbolOf(row) {
    return typeof row.symbol === "string" ? row.symbol : String(row.symbol);
  }

  function renderPositions() {
    positionsDue = false;
    const groups = new Map();
    for (const known of view.lots.values()) {
      const symbol = symbolOf(known.row);
      if (!groups.has(symbol)) groups.set(symbol, []);
      groups.get(symbol).push(known);
    }
    for (const [symbol, known] of view.symbols) {
      if (!groups.has(symbol)) {
        known.tr.remove();
        known.head.remove();
        view.symbols.delete(symbol);
      }
    }
    const body = $("positions");
    for (const symbol of Array.from(groups.keys()).sort()) {
      const lots = groups.get(symbol).sort((a, b) => stamp(a.row.filled_at) - stamp(b.row.filled_at) ||
        String(a.row.parent_id).localeCompare(String(b.row.parent_id)));
      let group = view.symbols.get(symbol);
      if (!group) {
        const tr = newRow(SYMBOL_CELLS, "data-symbol", symbol, "symbol-row");
        tr.addEventListener("click", () => toggleSymbol(symbol));
        const head = document.createElement("tr");
        head.className = "lot-head";
        head.setAttribute("data-lots-of", symbol);
        for (const text of LOT_HEAD) head.appendChild(el("th", "", text));
        group = { tr: tr, head: head };
        view.symbols.set(symbol, group);
      }
      const open = view.expanded.has(symbol);
      const newest = lots.reduce((a, b) => (stamp(b.row.updated_at) > stamp(a.row.updated_at) ? b : a)).row;
      const mark = num(newest.mkt_px);
      fillSymbolRow(group.tr, symbol, lots, mark, open);
      body.appendChild(group.tr);
      group.head.hidden = !open;
      body.appendChild(group.head);
      for (const l of lots) {
        fillLotRow(l.tr, l.row, mark);
        l.tr.hidden = !open;
        body.appendChild(l.tr);
      }
    }
    countLots(groups.size);
  }

  function schedulePositions() {
    if (positionsDue) return;
    positionsDue = true;
    requestAnimationFrame(renderPositions);
  }

  function toggleSymbol(symbol) {
    if (view.expanded.has(symbol)) view.expanded.delete(symbol);
    else view.expanded.add(symbol);
    renderPositions();
  }

  function upsertLot(row) {
    if (!row || typeof row.parent_id !== "string") return;
    const known = view.lots.get(row.parent_id);
    if (known && stamp(row.updated_at) < stamp(known.row.updated_at)) return; // an older push
    const tr = known ? known.tr : newRow(POSITION_CELLS, "data-parent-id", row.parent_id, "lot-row");
    tr.setAttribute("data-lot-of", symbolOf(row));
    view.lots.set(row.parent_id, { row: row, tr: tr });
    schedulePositions();
  }

  function deleteLot(parentId) {
    const known = view.lots.get(parentId);
    if (!known) return;
    known.tr.remove();
    view.lots.delete(parentId);
    schedulePositions();
  }

  function countLots(symbols) {
    const lots = view.lots.size;
    setText($("positions-count"), "(" + symbols + (symbols === 1 ? " symbol, " : " symbols, ") + lots + (lots === 1 ? " lot)" : " lots)"));
    syncOpenCount();
  }

  // The open-lots card counts the rows the positions table shows (the same state, at once),
  // not the KPI document's count, which follows them a metrics run later.
  function syncOpenCount() {
    const card = document.querySelector('[data-kpi="Open Trades (n)"]');
    if (!card) return;
    setClass(card, "value");
    setText(card, String(view.lots.size));
    card.setAttribute("data-source", "positions");
    if (card.title !== "the open lots the positions table shows") card.title = "the open lots the positions table shows";
  }

  function resetLots(rows) {
    view.lots.clear();
    view.symbols.clear();
    $("positions").replaceChildren();
    for (const row of rows || []) upsertLot(row);
    renderPositions();
  }

  const RETRY_MIN_MS = 500, RETRY_MAX_MS = 8000;

  // A failed refetch is said in the alerts banner and retried (doubling the wait) until it
  // succeeds or a new snapshot replaces every lot: the row is never silently left stale.
  function refetchLot(parentId) {
    const pending = view.retries.get(parentId);
    if (pending) clearTimeout(pending.timer);
    const attempt = pending ? pending.attempt : 0;
    const account = view.account;
    const url = "/api/positions?account=" + encodeURIComponent(account) + "&parent_id=" + encodeURIComponent(parentId);
    fetch(url, { credentials: "same-origin" })
      .then((r) => (r.ok ? r.json() : Promise.reject(new Error("HTTP " + r.status))))
      .then((rows) => {
        if (account !== view.account || !Array.isArray(rows)) return;
        view.retries.delete(parentId);
        setAlert("refetch:" + parentId, null);
        return rows.length ? upsertLot(rows[0]) : deleteLot(parentId);
      })
      .catch((err) => {
        if (account !== view.account) return;
        const wait = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** attempt);
        setAlert("refetch:" + parentId, "position " + parentId + " could not be refreshed (" +
          (err && err.message ? err.message : "network error") + "): retrying in " + (wait / 1000).toFixed(1) + " s");
        const timer = setTimeout(() => refetchLot(parentId), wait);
        view.retries.set(parentId, { timer: timer, attempt: attempt + 1 });
      });
  }

  function dropRetries() {
    for (const [parentId, pending] of view.retries) {
      clearTimeout(pending.timer);
      setAlert("refetch:" + parentId, null);
    }
    view.retries.clear();
  }

  // ----- alerts banner ([data-testid=alerts]) -----------------------------------------------

  function setAlert(key, line) {
    if (line) view.alerts.set(key, line);
    else if (!view.alerts.delete(key)) return;
    renderAlerts();
  }

  function renderAlerts() {
    const box = $("alerts");
    box.replaceChildren();
    for (const [key, line] of view.alerts) {
      const cause = key.startsWith("health:") && !line.startsWith("waiting: ");
      const li = el("li", cause ? "cause" : "trouble", line);
      li.setAttribute("data-alert", key);
      box.appendChild(li);
    }
    box.hidden = view.alerts.size === 0;
  }

  function onPositions(payload) {
    if (payload.row) return upsertLot(payload.row);
    switch (payload.op) {
      case "delete": return deleteLot(payload.parent_id);
      case "batch":
        for (const row of payload.rows || []) upsertLot(row);
        for (const id of payload.deletes || []) deleteLot(id);
        return;
      case "refetch": return refetchLot(payload.parent_id);
      case "heartbeat": view.lastBeat = performance.now(); return indicator();
    }
  }

  // ----- account header ([data-testid=account-summary]) -------------------------------------

  function onAccountFigures(doc) {
    const box = $("account-summary");
    if (!doc || !isNum(doc.equity)) return;
    const field = (name) => box.querySelector('[data-field="' + name + '"]');
    setText(field("equity"), money(doc.equity));
    setText(field("cash"), money(doc.cash));
    setText(field("buying_power"), isNum(doc.buying_power) ? money(doc.buying_power) : "not reported");
    const day = field("day_pl");
    if (isNum(doc.day_pl)) {
      const sign = doc.day_pl > 0 ? "+" : "";
      const pct = isNum(doc.day_pl_pct) ? " (" + sign + doc.day_pl_pct.toFixed(2) + " %)" : "";
      setText(day, sign + money(doc.day_pl) + pct);
    } else {
      setText(day, "needs the previous close");
    }
    signClass(day, doc.day_pl);
    setText(field("as_of"), "broker account as of " + time(doc.as_of) + " New York");
    box.setAttribute("data-state", "live");
  }

  // ----- closed trades ----------------------------------------------------------------------

  const closedKey = (row) => row.entry_lot_id + "\u0000" + row.exit_order_id;

  function renderClosed() {
    const rows = Array.from(view.closed.values()).sort((a, b) => stamp(b.exit_time) - stamp(a.exit_time));
    const keep = rows.slice(0, CLOSED_LIMIT);
    view.closed = new Map(keep.map((row) => [closedKey(row), row]));
    const body = $("closed");
    body.replaceChildren();
    for (const row of keep) {
      const tr = document.createElement("tr");
      tr.setAttribute("data-entry-lot-id", String(row.entry_lot_id));
      tr.setAttribute("data-exit-order-id", String(row.exit_order_id));
      const cells = [
        ["exit_time", time(row.exit_time), ""], ["symbol", plain(row.symbol), ""], ["side", plain(row.side), ""],
        ["qty", plain(row.qty), "num"], ["entry_price", plain(row.entry_price), "num"],
        ["exit_price", plain(row.exit_price), "num"], ["exit_type", plain(row.exit_type), ""],
        ["pnl_cash", money(row.pnl_cash), "num"], ["return_pct", isNum(row.return_pct) ? row.return_pct.toFixed(2) : "—", "num"],
      ];
      for (const [col, text, cls] of cells) {
        const td = el("td", cls, text);
        td.setAttribute("data-col", col);
        if (col === "pnl_cash") signClass(td, row.pnl_cash);
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
  }

  function onClosed(payload, reset) {
    if (reset) view.closed.clear();
    for (const row of payload.rows || []) view.closed.set(closedKey(row), row);
    renderClosed();
  }

  // ----- KPIs -------------------------------------------------------------------------------

  function kpiText(key, v) {
    if (!isNum(v)) return plain(v);
    if (/\(n\)$/.test(key)) return v.toLocaleString("en-US", { maximumFractionDigits: 0 }); // counts
    return v.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  }

  // Cards grouped (account, trades, risk). A card with no value yet says what it waits for.
  const KPI_GROUPS = [
    ["account", "Account", ["TOTAL ACCOUNT RESULT (Equity)", "Total Return %", "Unrealized P/L (Open)", "Current Open Value",
      "NET REALIZED CASH (FIFO)", "Net Dividends", "Net Interest", "Total Fees", "Total Buy Volume", "Total Sell Volume",
      "MTD %", "YTD %", "Exposure %"]],
    ["trades", "Trades", ["Closed Trades (n)", "Open Trades (n)", "Realized P/L (Broker/FIFO)", "Realized P/L (Strategy Only)",
      "Win Rate %", "Breakeven %", "Risk-Reward Ratio", "Expectancy ($)", "Profit Factor", "Mean Take ($)", "Mean Stop ($)",
      "Mean Holding Take (Days)", "Mean Holding Stop (Days)"]],
    ["risk", "Risk (daily returns)", ["Max Drawdown %", "Max Drawdown Duration (Days)", "Longest Drawdown (Days)",
      "Sharpe 10d", "Sharpe 21d", "Sharpe 63d", "Sharpe 126d", "Sharpe 252d", "Sortino", "Smart Sharpe", "Calmar",
      "CAGR %", "Volatility (ann.) %", "Best Day %", "Worst Day %", "Win Days %", "Avg Win ($)", "Avg Loss ($)",
      "Payoff Ratio", "Max Consecutive Wins", "Max Consecutive Losses"]],
  ];
  const KPI_LABELS = { "Closed Trades (n)": "Closed trades (lots)", "Open Trades (n)": "Open trades (lots)" };
  const ANNUALISED = new Set(["CAGR %", "Volatility (ann.) %", "Sortino", "Smart Sharpe", "Calmar"]);
  const NEEDS_LOSS = new Set(["Mean Stop ($)", "Mean Holding Stop (Days)", "Profit Factor", "Risk-Reward Ratio", "Breakeven %"]);
  const NEEDS_MARKS = new Set(["TOTAL ACCOUNT RESULT (Equity)", "Unrealized P/L (Open)", "Current Open Value"]);

  function waitsFor(key) {
    const sharpe = /^Sharpe (\d+)d$/.exec(key);
    if (sharpe) return "needs " + sharpe[1] + " sessions";
    if (ANNUALISED.has(key)) return "needs 20 sessions";
    if (NEEDS_LOSS.has(key)) return "needs a losing trade";
    if (NEEDS_MARKS.has(key)) return "needs a mark for every open lot";
    if (key === "Avg Loss ($)") return "needs a losing day";
    if (key === "Avg Win ($)") return "needs a winning day";
    if (key === "Payoff Ratio") return "needs a winning and a losing day";
    if (key === "Total Return %" || key === "MTD %" || key === "YTD %") return "needs the first equity point";
    if (/Trades|Take|Win Rate|Expectancy|Realized/.test(key)) return "needs a closed trade";
    return "needs the first session close";
  }

  function kpiCard(key, value) {
    const card = el("div", "card");
    card.appendChild(el("div", "label", KPI_LABELS[key] || key));
    const missing = value === null || value === undefined;
    const val = el("div", missing ? "value waiting" : "value", missing ? waitsFor(key) : kpiText(key, value));
    val.setAttribute("data-kpi", key);
    if (!missing) signClass(val, /P\/L|RESULT|CASH|Expectancy|Return|MTD|YTD/.test(key) ? value : null);
    card.appendChild(val);
    return card;
  }

  function onMetrics(doc) {
    const box = $("kpis");
    box.replaceChildren();
    if (!doc || typeof doc !== "object") return;
    const placed = new Set(["as_of"]);
    for (const [id, title, keys] of KPI_GROUPS) {
      const present = keys.filter((key) => key in doc);
      if (!present.length) continue;
      const group = el("div", "kpi-group");
      group.setAttribute("data-kpi-group", id);
      group.appendChild(el("h3", "", title));
      const cards = el("div", "cards");
      for (const key of present) {
        cards.appendChild(kpiCard(key, doc[key]));
        placed.add(key);
      }
      group.appendChild(cards);
      box.appendChild(group);
    }
    const rest = Object.keys(doc).filter((key) => !placed.has(key));
    if (rest.length) {
      const group = el("div", "kpi-group");
      group.setAttribute("data-kpi-group", "other");
      group.appendChild(el("h3", "", "Other"));
      const cards = el("div", "cards");
      for (const key of rest) cards.appendChild(kpiCard(key, doc[key]));
      group.appendChild(cards);
      box.appendChild(group);
    }
    box.title = "as of " + time(doc.as_of) + " New York";
    syncOpenCount();
  }

  // ----- equity charts (inline SVG, drawn by hand) ------------------------------------------

  const SVG = "http://www.w3.org/2000/svg";

  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // points: [{y, tip}] (y null: not drawn). The drawn values are kept in data-values (one per
  // point, space-separated) and each point has a hover band whose <title> is its tooltip.
  function drawCurve(svg, points, label, places) {
    svg.replaceChildren();
    const W = 600, H = 160, PAD = 14;
    const values = points.filter((p) => isNum(p.y));
    svg.setAttribute("data-points", String(values.length));
    svg.setAttribute("data-values", values.map((p) => p.y.toFixed(places)).join(" "));
    if (values.length === 0) {
      svg.appendChild(svgEl("text", { x: 10, y: H / 2 }, "no data yet"));
      return;
    }
    let lo = Math.min(...values.map((p) => p.y)), hi = Math.max(...values.map((p) => p.y));
    if (hi === lo) { hi += 1; lo -= 1; }
    const x = (i) => (values.length === 1 ? W / 2 : (i / (values.length - 1)) * W);
    const y = (v) => PAD + (1 - (v - lo) / (hi - lo)) * (H - 2 * PAD);
    if (lo < 0 && hi > 0) svg.appendChild(svgEl("line", { class: "zero", x1: 0, x2: W, y1: y(0), y2: y(0) }));
    const path = values.map((p, i) => x(i).toFixed(1) + "," + y(p.y).toFixed(1)).join(" ");
    svg.appendChild(svgEl("polyline", { class: "curve", points: path }));
    if (values.length === 1) svg.appendChild(svgEl("circle", { class: "dot", cx: x(0), cy: y(values[0].y), r: 3 }));
    svg.appendChild(svgEl("text", { x: 4, y: 12 }, label(hi)));
    svg.appendChild(svgEl("text", { x: 4, y: H - 3 }, label(lo)));
    const half = values.length === 1 ? W / 2 : W / (values.length - 1) / 2;
    values.forEach((p, i) => {
      if (!p.tip) return;
      const band = svgEl("rect", { class: "hover", x: Math.max(0, x(i) - half), y: 0, width: 2 * half, height: H });
      band.appendChild(svgEl("title", {}, p.tip));
      svg.appendChild(band);
    });
  }

  // The daily chart is the cumulative time-weighted return in % (net of deposits and
  // withdrawals: the report's series, computed by the server), with the equity in $ in each
  // point's tooltip and on the toggle. A deposit moves the dollars, never the %.
  const signedPct = (v) => (v > 0 ? "+" : "") + v.toFixed(2) + " %";
  const pctLabel = (v) => v.toFixed(2) + " %";
  let lastCurves = null;

  function dailyTip(day, pct, equity, flows) {
    const parts = [String(day), isNum(pct) ? signedPct(pct) : "no return", "$" + money(equity)];
    if (isNum(flows) && flows !== 0) parts.push((flows > 0 ? "deposit $" : "withdrawal $") + money(Math.abs(flows)));
    return parts.join(" \u00b7 ");
  }

  function onEquity(curves) {
    lastCurves = curves;
    const daily = (curves && curves.daily) || [];
    const intraday = (curves && curves.intraday) || [];
    const dollars = view.dailyUnit === "usd";
    const firstDay = daily.length === 0 && intraday.length > 0;
    const chart = $("chart-daily");
    chart.setAttribute("data-curve", firstDay ? "intraday" : "daily");
    chart.setAttribute("data-unit", dollars ? "usd" : "pct");
    setText($("equity-daily-toggle"), dollars ? "show %" : "show $");
    const unit = dollars ? "$ equity, deposits and withdrawals included" : "cumulative return %, net of deposits and withdrawals";
    setText($("chart-daily-caption"), firstDay
      ? "Equity: first session, today's curve (" + unit + ") until the first close"
      : "Equity (daily, " + unit + ")");
    const points = firstDay
      ? intraday.map((r) => {
          const pct = isNum(r.cumulative_return) ? 100 * r.cumulative_return : null;
          return { y: dollars ? r.deposit : pct, tip: time(r.ts) + " New York \u00b7 " + (isNum(pct) ? signedPct(pct) : "—") + " \u00b7 $" + money(r.deposit) };
        })
      : daily.map((r) => ({ y: dollars ? r.equity : r.cumulative_pct, tip: dailyTip(r.date, r.cumulative_pct, r.equity, r.net_flows) }));
    drawCurve(chart, points, dollars ? money : pctLabel, 2);
    drawCurve($("chart-intraday"), intraday.map((r) => ({ y: isNum(r.cumulative_return) ? 100 * r.cumulative_return : null })), pctLabel, 4);
  }

  $("equity-daily-toggle").addEventListener("click", () => {
    view.dailyUnit = view.dailyUnit === "usd" ? "pct" : "usd";
    onEquity(lastCurves);
  });

  // ----- backend indicator, programs, market phase ------------------------------------------

  function indicator() {
    const fresh = view.lastBeat !== null && performance.now() - view.lastBeat <= 2 * view.heartbeatS * 1000;
    const live = view.connected && fresh;
    const badge = $("backend");
    const text = live ? "live" : "stale";
    setText(badge, text);
    setClass(badge, "badge " + text);
  }

  // The stack's causes, in `chmgr status`'s words (the health model's lines), lead the banner.
  function onHealth(lines) {
    for (const key of Array.from(view.alerts.keys())) if (key.startsWith("health:")) view.alerts.delete(key);
    const fresh = new Map();
    (lines || []).forEach((line, i) => fresh.set("health:" + i, String(line)));
    view.alerts = new Map([...fresh, ...view.alerts]);
    renderAlerts();
  }

  function onStatus(status) {
    if (!status) return;
    onHealth(status.alerts);
    const phase = $("phase");
    phase.textContent = status.phase ? "market " + status.phase : "market —";
    const list = $("programs");
    list.replaceChildren();
    for (const p of status.programs || []) {
      const li = el("li", p.healthy ? "ok" : "bad", p.name);
      li.setAttribute("data-program", String(p.name));
      const beat = isNum(p.heartbeat_age_s) ? " · hb " + p.heartbeat_age_s.toFixed(1) + " s ago" : "";
      li.appendChild(el("span", "detail", String(p.state).toLowerCase() + beat));
      list.appendChild(li);
    }
    if (status.error) list.appendChild(el("li", "bad", status.error));
    onCorporatePending((status.corporate_pending || {})[view.account] || []);
  }

  // Corporate actions `snapshot` holds for this account (symbol, type, effective date, what it waits for).
  function onCorporatePending(items) {
    const body = $("corporate-pending");
    body.replaceChildren();
    for (const item of items) {
      const tr = document.createElement("tr");
      tr.setAttribute("data-symbol", String(item.symbol));
      for (const col of ["symbol", "type", "effective", "waits_for"]) {
        const td = el("td", "", String(item[col] || ""));
        td.setAttribute("data-col", col);
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
    $("corporate-pending-section").hidden = items.length === 0;
  }

  // ----- accounts and the stream ------------------------------------------------------------

  function onAccounts(accounts, current) {
    const select = $("account");
    select.replaceChildren();
    for (const a of accounts || []) {
      const option = el("option", "", a.name);
      option.value = a.slug;
      option.selected = a.slug === current;
      select.appendChild(option);
    }
    select.parentElement.hidden = (accounts || []).length < 2;
    const me = (accounts || []).find((a) => a.slug === current);
    $("account-name").textContent = me ? me.name : "";
    $("report-link").setAttribute("href", "/report?account=" + encodeURIComponent(current));
  }

  function onSnapshot(snap) {
    view.account = snap.account;
    dropRetries();
    view.heartbeatS = isNum(snap.heartbeat_s) ? snap.heartbeat_s : 30;
    view.lastBeat = isNum(snap.heartbeat_age_s) ? performance.now() - snap.heartbeat_age_s * 1000 : null;
    onAccounts(snap.accounts, snap.account);
    resetLots(snap.positions);
    onClosed({ rows: snap.closed }, true);
    onEquity(snap.equity);
    onMetrics(snap.metrics);
    onAccountFigures(snap.account_figures);
    onStatus(snap.status);
    view.connected = true;
    indicator();
  }

  function parse(handler) {
    return (event) => {
      let data;
      try { data = JSON.parse(event.data); } catch (e) { return; }
      handler(data);
    };
  }

  function connect() {
    const url = "/api/stream" + (view.account ? "?account=" + encodeURIComponent(view.account) : "");
    const source = new EventSource(url);
    source.addEventListener("snapshot", parse(onSnapshot));
    source.addEventListener("pos", parse(onPositions));
    source.addEventListener("closed", parse((p) => onClosed(p, false)));
    source.addEventListener("metrics", parse(onMetrics));
    source.addEventListener("equity", parse(onEquity));
    source.addEventListener("status", parse(onStatus));
    source.addEventListener("account", parse(onAccountFigures));
    source.onerror = () => { view.connected = false; indicator(); };
  }

  $("account").addEventListener("change", (event) => {
    const next = new URLSearchParams(window.location.search);
    next.set("account", event.target.value);
    window.location.search = next.toString();
  });
  setInterval(indicator, 250);
  connect();
})();
