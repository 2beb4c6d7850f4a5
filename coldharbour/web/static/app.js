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
    closed: new Map(),    // entry_lot_id + "\u0000" + exit_order_id -> row
    heartbeatS: 30,
    alerts: new Map(),    // key -> one line: the health causes ("health:*") and this page's own troubles
    retries: new Map(),   // parent_id -> {timer, attempt}: a lot refetch that failed, retried
    lastBeat: null,       // performance.now() of the newest UI heartbeat
    connected: false,
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

  const POSITION_CELLS = ["symbol", "side", "qty", "avg_fill", "mkt_px", "profit_loss", "reach", "moved_flag"];
  const NUMERIC = new Set(["qty", "avg_fill", "mkt_px", "profit_loss"]);

  function newLotRow(parentId) {
    const tr = document.createElement("tr");
    tr.setAttribute("data-parent-id", parentId);
    for (const col of POSITION_CELLS) {
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

  function fillLotRow(tr, row) {
    if (!tr.cells_) {
      tr.cells_ = {};
      for (const td of tr.children) tr.cells_[td.getAttribute("data-col")] = td;
    }
    const cell = (col) => tr.cells_[col];
    setText(cell("symbol"), plain(row.symbol));
    setText(cell("side"), plain(row.side));
    setText(cell("qty"), plain(row.qty));
    setText(cell("avg_fill"), plain(row.avg_fill));
    setText(cell("mkt_px"), plain(row.mkt_px));
    setText(cell("profit_loss"), money(row.profit_loss));
    signClass(cell("profit_loss"), row.profit_loss);
    setText(cell("moved_flag"), plain(row.moved_flag));
    const reach = cell("reach");
    const fill = reach.querySelector(".fill");
    const pct = isNum(row.tp_sl_reach_pct) ? Math.max(-100, Math.min(100, row.tp_sl_reach_pct)) : 0;
    setClass(fill, "fill " + (pct >= 0 ? "pos" : "neg"));
    const width = Math.abs(pct) / 2 + "%";
    if (fill.style.width !== width) fill.style.width = width;
    const title = "SL " + plain(row.sl_px) + " · TP " + plain(row.tp_px) + " · reach " + plain(row.tp_sl_reach_pct) + " %";
    if (reach.title !== title) reach.title = title;
  }

  function upsertLot(row) {
    if (!row || typeof row.parent_id !== "string") return;
    const known = view.lots.get(row.parent_id);
    if (known && stamp(row.updated_at) < stamp(known.row.updated_at)) return; // an older push
    const tr = known ? known.tr : newLotRow(row.parent_id);
    fillLotRow(tr, row);
    if (!known) $("positions").appendChild(tr);
    view.lots.set(row.parent_id, { row: row, tr: tr });
    countLots();
  }

  function deleteLot(parentId) {
    const known = view.lots.get(parentId);
    if (!known) return;
    known.tr.remove();
    view.lots.delete(parentId);
    countLots();
  }

  function countLots() {
    setText($("positions-count"), "(" + view.lots.size + ")");
  }

  function resetLots(rows) {
    view.lots.clear();
    $("positions").replaceChildren();
    for (const row of rows || []) upsertLot(row);
    countLots();
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
      const li = el("li", key.startsWith("health:") ? "cause" : "trouble", line);
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

  function onMetrics(doc) {
    const box = $("kpis");
    box.replaceChildren();
    if (!doc || typeof doc !== "object") return;
    for (const [key, value] of Object.entries(doc)) {
      if (key === "as_of") continue;
      const card = el("div", "card");
      card.appendChild(el("div", "label", key));
      const val = el("div", "value", kpiText(key, value));
      val.setAttribute("data-kpi", key);
      signClass(val, /P\/L|RESULT|CASH|Expectancy/.test(key) ? value : null);
      card.appendChild(val);
      box.appendChild(card);
    }
    box.title = "as of " + plain(doc.as_of);
  }

  // ----- equity charts (inline SVG, drawn by hand) ------------------------------------------

  const SVG = "http://www.w3.org/2000/svg";

  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function drawCurve(svg, points, label) {
    svg.replaceChildren();
    const W = 600, H = 160, PAD = 14;
    const values = points.filter((p) => isNum(p.y));
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
    svg.setAttribute("data-points", String(values.length));
  }

  function onEquity(curves) {
    const daily = (curves && curves.daily) || [];
    const intraday = (curves && curves.intraday) || [];
    drawCurve($("chart-daily"), daily.map((r) => ({ y: isNum(r.cash_balance) && isNum(r.market_value) ? r.cash_balance + r.market_value : null })), money);
    drawCurve($("chart-intraday"), intraday.map((r) => ({ y: isNum(r.cumulative_return) ? 100 * r.cumulative_return : null })), (v) => v.toFixed(2) + " %");
  }

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
