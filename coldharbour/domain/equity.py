"""The daily equity curve (ledger replay by NY session date) and the intraday curve.

Daily curve. Each session date replays that day's executions (positions and cash), its cash
flows (income and fees change cash; external flows change cash and are the day's ``net_flows``;
fill rows are skipped because the executions already carry the trade cash) and marks the
positions at the day's closes (the latest known price when a symbol has no close that day).
Then, with ``prev`` the previous deposit and ``F`` the day's net flows:

    daily_return      = (deposit − prev − F) / (prev + F), 0 when prev + F ≤ 0
    cumulative_return = Π(1 + daily_return) − 1
    drawdown          = index / max(1, running max of index) − 1, index = 1 + cumulative_return

Flows count at the start of the day, so a deposit is never a gain and a withdrawal never a loss,
neither in the return nor in the drawdown (docs/defects.md D10). Only ``external`` flows are flows; every other
non-trade category (income, interest, fee, tax, corporate, other, unclassified: docs/spec.md §8) is
profit or loss. An ``Opening`` (the broker's own equity before the first replayed session, or
``EQUITY_INIT_CASH``) starts the replay from a known balance instead of 0 (D11).

Equity ≤ 0 after a day that started with capital has no meaningful return: that row and every later
one carry ``daily_return``/``cumulative_return``/``drawdown``/Sharpe None, never an inverted
compounding. A split (``DayInputs.splits``, ratio r = new shares per old, effective at the start
of the session) multiplies the held quantity by r and divides the previous close by r, so the
action's day has no artificial return (docs/spec.md §8).
Activities are bucketed by NY calendar date (D13); weekends and holidays roll forward to the
next session. ``sharpe_W``/``smart_sharpe_W`` follow ``metrics.rolling_sharpe``.

``extend_daily_curve(curve, days)`` continues a curve with later days; it equals a rebuild over
the same inputs, so the worker rebuilds at session start and extends in between (D46).

Intraday curve: see ``compute_intraday``.

Pure: no I/O, no clock, no logging. Money and returns are Decimal; Sharpe values are floats.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Final

import msgspec

from coldharbour.domain.cashflows import CashFlow, Category, Execution
from coldharbour.domain.corporate import CorporateAction
from coldharbour.domain.metrics import SHARPE_WINDOWS, DailySummary, Side, rolling_sharpe
from coldharbour.domain.money import ONE, ZERO
from coldharbour.domain.schedule import Session, ny_date, session_date_on_or_after

# Only the last 252 returns feed any window; the curve keeps no longer history for Sharpe.
_RETURN_HISTORY: Final = max(SHARPE_WINDOWS)
_MINUTE: Final = timedelta(minutes=1)


class Opening(msgspec.Struct, frozen=True, kw_only=True):
    """The account at the close of ``as_of``, before the first replayed session (D11).

    ``closes`` must price every position; the opening equity is ``cash + Σ qty·close``.
    """

    as_of: date
    cash: Decimal
    positions: dict[str, Decimal] = msgspec.field(default_factory=dict)
    closes: dict[str, Decimal] = msgspec.field(default_factory=dict)


class DayInputs(msgspec.Struct, frozen=True, kw_only=True):
    """Everything that happened on one NY session date, and that day's closes."""

    session_date: date
    flows: tuple[CashFlow, ...] = ()
    executions: tuple[Execution, ...] = ()
    closes: dict[str, Decimal] = msgspec.field(default_factory=dict)
    splits: dict[str, Decimal] = msgspec.field(default_factory=dict)


class DailyRow(msgspec.Struct, frozen=True, kw_only=True):
    """One ``account_equity_full`` row (field names are the column names)."""

    date: date
    deposit: Decimal
    cash_balance: Decimal
    market_value: Decimal
    net_flows: Decimal
    daily_return: Decimal | None
    cumulative_return: Decimal | None
    drawdown: Decimal | None
    sharpe_10: float | None = None
    sharpe_21: float | None = None
    sharpe_63: float | None = None
    sharpe_126: float | None = None
    sharpe_252: float | None = None
    smart_sharpe_10: float | None = None
    smart_sharpe_21: float | None = None
    smart_sharpe_63: float | None = None
    smart_sharpe_126: float | None = None
    smart_sharpe_252: float | None = None
    broker_equity: Decimal | None = None
    equity_diff: Decimal | None = None

    def sharpe_by_window(self) -> dict[int, float | None]:
        """Return ``{W: sharpe_W}``."""
        return {
            10: self.sharpe_10,
            21: self.sharpe_21,
            63: self.sharpe_63,
            126: self.sharpe_126,
            252: self.sharpe_252,
        }


class Book(msgspec.Struct, frozen=True, kw_only=True):
    """Replay state after the last row: cash, positions, last prices, the return index peak.

    ``cumulative_return`` is None once equity has been ≤ 0 (no later return is meaningful).
    """

    last_date: date | None
    cash: Decimal
    positions: dict[str, Decimal]
    last_price: dict[str, Decimal]
    deposit: Decimal
    cumulative_return: Decimal | None
    peak_index: Decimal


class DailyCurve(msgspec.Struct, frozen=True, kw_only=True):
    """Daily rows so far and the book to continue from.

    ``prior``: the book before the last row (its session's anchor: holdings and closes at the
    previous close), None when unknown (a curve resumed from stored rows). ``books``: the book
    before each row (one per row, so ``rewind_curve`` can continue from any day), empty when
    unknown (a curve resumed from stored rows).
    """

    rows: tuple[DailyRow, ...]
    book: Book
    prior: Book | None = None
    books: tuple[Book, ...] = ()


def daily_summary(row: DailyRow) -> DailySummary:
    """Return what the KPI accumulator reads from a daily row."""
    return DailySummary(
        date=row.date,
        cumulative_return=row.cumulative_return,
        drawdown=row.drawdown,
        sharpe=row.sharpe_by_window(),
        daily_return=row.daily_return,
        deposit=row.deposit,
        market_value=row.market_value,
        net_flows=row.net_flows,
    )


def _market_value(positions: Mapping[str, Decimal], prices: Mapping[str, Decimal]) -> Decimal:
    return sum((qty * prices[symbol] for symbol, qty in positions.items()), ZERO)


def start_curve(opening: Opening | None = None) -> DailyCurve:
    """Return an empty curve starting from ``opening`` (or from zero: the first deposit)."""
    if opening is None:
        book = Book(
            last_date=None,
            cash=ZERO,
            positions={},
            last_price={},
            deposit=ZERO,
            cumulative_return=ZERO,
            peak_index=ONE,
        )
        return DailyCurve(rows=(), book=book)
    missing = sorted(s for s in opening.positions if s not in opening.closes)
    if missing:
        raise ValueError(f"opening: no close for positions {', '.join(missing)}")
    positions = {s: q for s, q in opening.positions.items() if q != 0}
    book = Book(
        last_date=opening.as_of,
        cash=opening.cash,
        positions=positions,
        last_price=dict(opening.closes),
        deposit=opening.cash + _market_value(positions, opening.closes),
        cumulative_return=ZERO,
        peak_index=ONE,
    )
    return DailyCurve(rows=(), book=book)


def resume_curve(
    rows: Sequence[DailyRow], positions: Mapping[str, Decimal], last_price: Mapping[str, Decimal]
) -> DailyCurve:
    """Return a curve continuing from stored ``rows`` (all of them, oldest first).

    ``positions`` and ``last_price`` are the holdings and marks after the last row's date.
    """
    if not rows:
        raise ValueError("rows: expected at least one stored row to resume from")
    last = rows[-1]
    peak = max([ONE, *(ONE + row.cumulative_return for row in rows if row.cumulative_return is not None)])
    book = Book(
        last_date=last.date,
        cash=last.cash_balance,
        positions={s: q for s, q in positions.items() if q != 0},
        last_price=dict(last_price),
        deposit=last.deposit,
        cumulative_return=last.cumulative_return,
        peak_index=peak,
    )
    return DailyCurve(rows=tuple(rows), book=book)


def _apply_day(book: Book, day: DayInputs) -> tuple[Decimal, dict[str, Decimal], dict[str, Decimal], Decimal]:
    """Replay one day: return (cash, positions, last prices, net external flows)."""
    cash = book.cash
    positions = dict(book.positions)
    prices = dict(book.last_price)
    for symbol, ratio in day.splits.items():
        if ratio <= 0:
            raise ValueError(f"splits: ratio for {symbol} must be positive, found {ratio}")
        if symbol in positions:
            positions[symbol] *= ratio
        if symbol in prices:
            prices[symbol] /= ratio
    for execution in sorted(day.executions, key=lambda e: (e.ts, e.id)):
        held = positions.get(execution.symbol, ZERO) + execution.qty
        if held == 0:
            positions.pop(execution.symbol, None)
        else:
            positions[execution.symbol] = held
        cash -= execution.qty * execution.price
        prices[execution.symbol] = execution.price
    net_flows = ZERO
    for flow in day.flows:
        if flow.category is Category.TRADE:
            continue  # the execution carries the trade's cash
        cash += flow.amount
        if flow.category is Category.EXTERNAL:
            net_flows += flow.amount
    prices.update(day.closes)
    return cash, positions, prices, net_flows


def _next_row(book: Book, day: DayInputs, history: list[Decimal]) -> tuple[DailyRow, Book]:
    cash, positions, prices, net_flows = _apply_day(book, day)
    market_value = _market_value(positions, prices)
    deposit = cash + market_value
    base = book.deposit + net_flows
    daily_return: Decimal | None
    cumulative_return: Decimal | None
    drawdown: Decimal | None
    peak = book.peak_index
    # Ruined: the day started with capital and ended with none (a loss of 100 % or more).
    ruined = book.cumulative_return is None or (deposit <= 0 < base)
    if ruined or book.cumulative_return is None:
        daily_return = cumulative_return = drawdown = None  # equity ≤ 0: no return from here on
        ratio: dict[int, tuple[float | None, float | None]] = {w: (None, None) for w in SHARPE_WINDOWS}
    else:
        daily_return = (deposit - base) / base if base > 0 else ZERO  # 0: no capital yet
        # The index is carried as the stored cumulative return (1 + R), rounded exactly as the
        # table holds it, so a curve resumed from stored rows continues identically.
        cumulative_return = (ONE + book.cumulative_return) * (ONE + daily_return) - ONE
        index = ONE + cumulative_return
        peak = max(book.peak_index, index)
        drawdown = index / peak - ONE
        history.append(daily_return)
        del history[:-_RETURN_HISTORY]
        ratio = {window: rolling_sharpe(history, window) for window in SHARPE_WINDOWS}
    row = DailyRow(
        date=day.session_date,
        deposit=deposit,
        cash_balance=cash,
        market_value=market_value,
        net_flows=net_flows,
        daily_return=daily_return,
        cumulative_return=cumulative_return,
        drawdown=drawdown,
        sharpe_10=ratio[10][0],
        sharpe_21=ratio[21][0],
        sharpe_63=ratio[63][0],
        sharpe_126=ratio[126][0],
        sharpe_252=ratio[252][0],
        smart_sharpe_10=ratio[10][1],
        smart_sharpe_21=ratio[21][1],
        smart_sharpe_63=ratio[63][1],
        smart_sharpe_126=ratio[126][1],
        smart_sharpe_252=ratio[252][1],
    )
    new_book = Book(
        last_date=day.session_date,
        cash=cash,
        positions=positions,
        last_price=prices,
        deposit=deposit,
        cumulative_return=cumulative_return,
        peak_index=peak,
    )
    return row, new_book


def extend_daily_curve(curve: DailyCurve, days: Sequence[DayInputs]) -> DailyCurve:
    """Return ``curve`` continued with ``days`` (strictly increasing, after the last row)."""
    book = curve.book
    prior = curve.prior
    history = [row.daily_return for row in curve.rows[-_RETURN_HISTORY:] if row.daily_return is not None]
    rows = list(curve.rows)
    books = list(curve.books) if len(curve.books) == len(curve.rows) else None  # None: not known for every row
    for day in days:
        if book.last_date is not None and day.session_date <= book.last_date:
            raise ValueError(f"days: {day.session_date} is not after the curve's last date {book.last_date}")
        prior = book
        if books is not None:
            books.append(book)
        row, book = _next_row(book, day, history)
        rows.append(row)
    return DailyCurve(rows=tuple(rows), book=book, prior=prior, books=() if books is None else tuple(books))


def rewind_curve(curve: DailyCurve, day: date) -> DailyCurve | None:
    """Return ``curve`` without its rows dated on or after ``day``, ready to be extended again from there.

    A flow or fill stored late for ``day`` changes that day's row and every later one (cash and
    holdings carry forward) and no earlier one: the rows before it and the book they end in are
    kept, so extending the rewound curve with the same days equals a rebuild. Return None when
    the curve cannot be rewound there (a curve resumed from stored rows, or ``day`` on or before
    the curve's opening: the opening itself may move): the caller rebuilds.
    """
    if len(curve.books) != len(curve.rows):
        return None
    kept = sum(1 for row in curve.rows if row.date < day)
    start = curve.books[0] if curve.books else curve.book
    if start.last_date is None or day <= start.last_date:
        return None
    if kept == len(curve.rows):
        return curve
    return DailyCurve(
        rows=curve.rows[:kept],
        book=curve.books[kept],
        prior=curve.books[kept - 1] if kept else None,
        books=curve.books[:kept],
    )


def build_daily_curve(days: Sequence[DayInputs], opening: Opening | None = None) -> DailyCurve:
    """Return the full daily curve of ``days`` from ``opening`` (a rebuild)."""
    return extend_daily_curve(start_curve(opening), days)


def splits_by_session_date(actions: Iterable[CorporateAction]) -> dict[date, dict[str, Decimal]]:
    """Return the split ratios (new shares per old) by the New York date they take effect (docs/spec.md §8).

    Only splits and reverse splits keep their symbol; the other actions are left to the ledger.
    Two splits of one symbol on one date compound.
    """
    found: dict[date, dict[str, Decimal]] = {}
    for action in actions:
        if action.type == "split" and action.ratio > 0:
            # + 1 µs: an action re-timed to the start of its ex-date is stamped just before that
            # day's midnight (corporate.effective_instant); its day is the ex-date
            day = ny_date(datetime.fromtimestamp((action.ts + 1_000) / 1e9, tz=UTC))
            by_symbol = found.setdefault(day, {})
            by_symbol[action.symbol] = by_symbol.get(action.symbol, ONE) * action.ratio
    return found


def bucket_by_session(
    session_dates: Iterable[date],
    flows: Iterable[CashFlow],
    executions: Iterable[Execution],
    closes_by_date: Mapping[date, Mapping[str, Decimal]],
    *,
    after: date | None = None,
    splits_by_date: Mapping[date, Mapping[str, Decimal]] | None = None,
) -> list[DayInputs]:
    """Group activities into one ``DayInputs`` per session date, oldest first.

    Each flow and execution goes to the first session date on or after its NY calendar date.
    Session dates run from the first one holding an activity (or the first after ``after``,
    the opening date, when given) to the last one passed. Activities dated on or before
    ``after`` are already in the opening and are dropped; activities after the last session
    date belong to a later call and are dropped too. ``splits_by_date``: the split ratios
    effective at the start of each session (the corporate-actions hook).
    """
    splits = splits_by_date or {}
    dates = sorted(set(session_dates))
    flows_by: dict[date, list[CashFlow]] = {}
    executions_by: dict[date, list[Execution]] = {}
    for flow in flows:
        bucket = session_date_on_or_after(dates, ny_date(flow.ts))
        if bucket is not None and (after is None or bucket > after):
            flows_by.setdefault(bucket, []).append(flow)
    for execution in executions:
        bucket = session_date_on_or_after(dates, ny_date(execution.ts))
        if bucket is not None and (after is None or bucket > after):
            executions_by.setdefault(bucket, []).append(execution)
    if after is not None:
        first: date | None = session_date_on_or_after(dates, date.fromordinal(after.toordinal() + 1))
    else:
        first = min([*flows_by, *executions_by], default=None)
    if first is None:
        return []
    return [
        DayInputs(
            session_date=d,
            flows=tuple(sorted(flows_by.get(d, []), key=lambda f: f.id)),
            executions=tuple(sorted(executions_by.get(d, []), key=lambda e: (e.ts, e.id))),
            closes=dict(closes_by_date.get(d, {})),
            splits=dict(splits.get(d, {})),
        )
        for d in dates
        if d >= first
    ]


# The daily proof against the broker's portfolio history (docs/spec.md §8 "Equity anchor").

CENT: Final = Decimal("0.01")
# Flow categories whose booking the broker may time or value differently from us (docs/spec.md §8: an
# unknown activity code is ``unclassified``); their amounts widen a day's tolerance.
UNEXPLAINED_CATEGORIES: Final = frozenset({"unclassified"})


class Proof(msgspec.Struct, frozen=True, kw_only=True):
    """One day's comparison: our ``deposit`` against the broker's end-of-day equity."""

    date: date
    deposit: Decimal
    broker_equity: Decimal | None
    equity_diff: Decimal | None
    tolerance: Decimal

    @property
    def mismatched(self) -> bool:
        """True when the broker has the day and we differ by more than the tolerance."""
        return self.equity_diff is not None and abs(self.equity_diff) > self.tolerance


def unexplained_flows(days: Iterable[DayInputs]) -> dict[date, Decimal]:
    """Return per session date Σ|amount| of its flows in ``UNEXPLAINED_CATEGORIES``."""
    result: dict[date, Decimal] = {}
    for day in days:
        total = sum((abs(f.amount) for f in day.flows if str(f.category) in UNEXPLAINED_CATEGORIES), ZERO)
        if total:
            result[day.session_date] = total
    return result


def prove_rows(
    rows: Sequence[DailyRow], broker: Mapping[date, Decimal], unexplained: Mapping[date, Decimal]
) -> tuple[tuple[DailyRow, ...], list[Proof]]:
    """Return ``rows`` with ``broker_equity``/``equity_diff`` (= deposit − broker) and each day's proof.

    A day the broker has no point for keeps both None. The tolerance is one cent plus the day's
    unexplained flows.
    """
    proven: list[DailyRow] = []
    proofs: list[Proof] = []
    for row in rows:
        equity = broker.get(row.date)
        diff = None if equity is None else row.deposit - equity
        proven.append(msgspec.structs.replace(row, broker_equity=equity, equity_diff=diff))
        tolerance = CENT + unexplained.get(row.date, ZERO)
        proofs.append(
            Proof(date=row.date, deposit=row.deposit, broker_equity=equity, equity_diff=diff, tolerance=tolerance)
        )
    return tuple(proven), proofs


class IntradayLot(msgspec.Struct, frozen=True, kw_only=True):
    """An open lot (no exit) or a slice closed today, for the intraday mark-to-market.

    ``entry_price`` is the lot's average fill (the price its cash moved at), not the broker WAC.
    """

    symbol: str
    side: Side
    qty: Decimal
    entry_price: Decimal
    entry_time: datetime
    exit_price: Decimal | None = None
    exit_time: datetime | None = None


class Anchor(msgspec.Struct, frozen=True, kw_only=True):
    """The previous session's close: deposit ``E0``, cumulative return ``R0``, closes ``P0``.

    ``peak_index`` is the daily curve's running peak of ``1 + cumulative_return``, so intraday
    drawdown continues the lifetime one; None starts the peak at ``1 + R0``. ``positions``: the
    holdings at that close (signed quantities), when known: then the day's P&L is measured
    per share from ``P0`` for the carried shares and from the fill price for shares filled
    today (a lot filled across two sessions included); else from the lots. ``R0`` None: the
    equity has been ≤ 0, so no intraday return either.
    """

    session_date: date
    deposit: Decimal
    cumulative_return: Decimal | None
    closes: dict[str, Decimal] = msgspec.field(default_factory=dict)
    peak_index: Decimal | None = None
    positions: dict[str, Decimal] | None = None


class Bar(msgspec.Struct, frozen=True, kw_only=True):
    """One 1-minute bar's close; ``ts`` is the start of the minute it covers."""

    ts: datetime
    close: Decimal


class IntradayPoint(msgspec.Struct, frozen=True, kw_only=True):
    """One ``account_equity_intraday`` row; returns are None without a positive anchor (D9)."""

    ts: datetime
    deposit: Decimal
    cumulative_return: Decimal | None
    drawdown: Decimal | None
    realised_return: Decimal | None


def anchor_from_curve(curve: DailyCurve, *, before_last_row: bool = False) -> Anchor | None:
    """Return the anchor at the end of ``curve``: its last row, else its opening (the broker's
    previous close before the first replayed session); None for a curve with neither.

    ``before_last_row``: the anchor of the last row's own session (the book before it: a curve
    rebuilt after today's close still measures today from yesterday's close), None if unknown.
    """
    book = curve.prior if before_last_row else curve.book
    if book is None or book.last_date is None:
        return None
    return Anchor(
        session_date=book.last_date,
        deposit=book.deposit,
        cumulative_return=book.cumulative_return,
        closes=dict(book.last_price),
        peak_index=book.peak_index,
        positions=dict(book.positions),
    )


def _floor_minute(instant: datetime) -> datetime:
    return instant.replace(second=0, microsecond=0)


def minute_grid(session: Session, until: datetime, step: timedelta = _MINUTE) -> list[datetime]:
    """Return the point times: from pre-open by ``step`` to the last whole minute before ``until``.

    A point at ``t`` carries the close of the bar that starts at ``t``, which is final once
    ``until`` has reached ``t + 1 min``; no point is at or after post-close.
    """
    if step <= timedelta(0):
        raise ValueError(f"step: expected a positive duration, found {step}")
    last = min(_floor_minute(until) - _MINUTE, session.post_close_utc - _MINUTE)
    points: list[datetime] = []
    at = session.pre_open_utc
    while at <= last:
        points.append(at)
        at += step
    return points


def _price_paths(grid: Sequence[datetime], bars: Mapping[str, Sequence[Bar]]) -> dict[str, list[Decimal | None]]:
    """Per symbol, the last close at or before each grid point (None before the first bar)."""
    paths: dict[str, list[Decimal | None]] = {}
    for symbol, series in bars.items():
        ordered = sorted(series, key=lambda b: b.ts)
        path: list[Decimal | None] = []
        position = 0
        price: Decimal | None = None
        for at in grid:
            while position < len(ordered) and ordered[position].ts <= at:
                price = ordered[position].close
                position += 1
            path.append(price)
        paths[symbol] = path
    return paths


def _reference(lot: IntradayLot, carried: bool, anchor: Anchor | None, bars: Mapping[str, Sequence[Bar]]) -> Decimal:
    """The price the day's P&L of a lot is measured from.

    A lot carried from an earlier session is in ``E0`` at the previous close ``P0``; without
    one, its first bar today (then it adds nothing until the price moves), else its entry.
    A lot opened today is measured from its entry price (its cash left at that price).
    """
    if not carried:
        return lot.entry_price
    if anchor is not None and lot.symbol in anchor.closes:
        return anchor.closes[lot.symbol]
    series = bars.get(lot.symbol, ())
    if series:
        return min(series, key=lambda b: b.ts).close
    return lot.entry_price


class _LotPath(msgspec.Struct, frozen=True):
    symbol: str
    sign: int
    qty: Decimal
    ref: Decimal
    start: datetime
    exit_at: datetime | None
    exit_price: Decimal | None


def _flow_path(grid: Sequence[datetime], flows: Iterable[tuple[datetime, Decimal]]) -> list[Decimal]:
    """Cumulative flow amount at each grid point (a flow counts from its minute on)."""
    ordered = sorted(flows)
    totals: list[Decimal] = []
    running = ZERO
    position = 0
    for at in grid:
        while position < len(ordered) and ordered[position][0] <= at:
            running += ordered[position][1]
            position += 1
        totals.append(running)
    return totals


def _lot_paths(
    lots: Iterable[IntradayLot],
    anchor: Anchor | None,
    bars: Mapping[str, Sequence[Bar]],
    start: datetime,
) -> list[_LotPath]:
    paths: list[_LotPath] = []
    for lot in lots:
        if lot.exit_time is not None and not _is_today(lot.exit_time, anchor):
            continue  # closed in an earlier session: already inside E0
        carried = not _is_today(lot.entry_time, anchor)
        exit_at = None if lot.exit_time is None else max(_floor_minute(lot.exit_time), start)
        paths.append(
            _LotPath(
                symbol=lot.symbol,
                sign=1 if lot.side == "long" else -1,
                qty=lot.qty,
                ref=_reference(lot, carried, anchor, bars),
                start=start if carried else max(_floor_minute(lot.entry_time), start),
                exit_at=exit_at,
                exit_price=lot.exit_price,
            )
        )
    return paths


def _holding_paths(
    anchor: Anchor,
    positions: Mapping[str, Decimal],
    executions: Iterable[Execution],
    bars: Mapping[str, Sequence[Bar]],
    start: datetime,
    splits: Mapping[str, Decimal],
) -> list[_LotPath]:
    """Per-share paths: carried shares from ``P0`` (split-adjusted), today's fills from their price."""
    paths: list[_LotPath] = []
    for symbol, qty in positions.items():
        ratio = splits.get(symbol, ONE)
        series = bars.get(symbol, ())
        if symbol in anchor.closes:
            ref = anchor.closes[symbol] / ratio
        elif series:
            ref = min(series, key=lambda b: b.ts).close  # adds nothing until the price moves
        else:
            continue  # no price at all: the carried shares stay inside E0
        paths.append(_LotPath(symbol, 1, qty * ratio, ref, start, None, None))
    for execution in executions:
        if not _is_today(execution.ts, anchor):
            continue  # inside E0 already
        at = max(_floor_minute(execution.ts), start)
        paths.append(_LotPath(execution.symbol, 1, execution.qty, execution.price, at, None, None))
    return paths


def _is_today(instant: datetime, anchor: Anchor | None) -> bool:
    """True when ``instant`` falls after the anchor session's NY date (today's bucket)."""
    return anchor is None or ny_date(instant) > anchor.session_date


def _lot_values(
    paths: Sequence[_LotPath], prices: Mapping[str, Sequence[Decimal | None]], index: int, at: datetime
) -> tuple[Decimal, Decimal]:
    """(unrealised, realised) P&L of the lots at grid point ``index`` relative to their refs."""
    unrealised = ZERO
    realised = ZERO
    for path in paths:
        if at < path.start:
            continue
        if path.exit_at is not None and path.exit_price is not None and path.exit_at <= at:
            realised += path.sign * path.qty * (path.exit_price - path.ref)
            continue
        series = prices.get(path.symbol)
        price = series[index] if series is not None else None
        if price is not None:
            unrealised += path.sign * path.qty * (price - path.ref)
    return unrealised, realised


def compute_intraday(
    *,
    session: Session,
    until: datetime,
    anchor: Anchor | None,
    lots: Sequence[IntradayLot],
    flows: Sequence[CashFlow],
    bars: Mapping[str, Sequence[Bar]],
    step: timedelta = _MINUTE,
    executions: Sequence[Execution] | None = None,
    splits: Mapping[str, Decimal] | None = None,
) -> list[IntradayPoint]:
    """Return the intraday curve of ``session`` up to the last whole minute before ``until``.

    ``deposit(t) = E0 + Σ lots s·q·(p(t) − ref) + realised today + income/fee flows + X(t)``,
    with ``X`` today's external flows up to ``t``; ``cumulative_return(t) = (1 + R0)·(1 +
    (deposit(t) − X(t) − E0)/(E0 + X(t))) − 1`` (at the close: the daily row's return) and
    ``realised_return(t)`` = (realised today + income/fee flows)/(E0 + X(t)), all None while
    ``E0 + X(t) ≤ 0`` (D9: no made-up base; an account funded today has a return from its
    deposit on). ``drawdown`` is on ``1 + cumulative_return``
    against the daily peak, so a deposit or a withdrawal moves neither (D10).

    ``lots``: the open lots and the slices closed today. ``flows``: this session's flows
    (earlier ones are ignored by NY date; fills are ignored: the lots carry the trades); a
    flow before pre-open counts from the first point. ``bars``: 1-minute closes per symbol;
    a lot without a price yet stays at its reference.

    ``executions`` (the fills since the anchor) with ``anchor.positions`` known: the unrealised
    and realised moves come from the holdings instead — carried shares from ``P0``, each of
    today's fills from its own price — which equals the daily replay at the close; the lots
    then only give ``realised_return``. ``splits``: today's split ratios (docs/spec.md §8). A point
    whose equity is ≤ 0 and every later one has no return (None).
    """
    grid = minute_grid(session, until, step)
    if not grid:
        return []
    start = grid[0]
    pnl_flows: list[tuple[datetime, Decimal]] = []
    external: list[tuple[datetime, Decimal]] = []
    for flow in flows:
        if flow.category is Category.TRADE or not _is_today(flow.ts, anchor):
            continue
        item = (max(_floor_minute(flow.ts), start), flow.amount)
        (external if flow.category is Category.EXTERNAL else pnl_flows).append(item)
    paths = _lot_paths(lots, anchor, bars, start)
    holdings: list[_LotPath] | None = None
    if anchor is not None and anchor.positions is not None and executions is not None:
        holdings = _holding_paths(anchor, anchor.positions, executions, bars, start, splits or {})
    prices = _price_paths(grid, bars)
    pnl_totals = _flow_path(grid, pnl_flows)
    external_totals = _flow_path(grid, external)
    base = ZERO if anchor is None else anchor.deposit
    growth = None if anchor is not None and anchor.cumulative_return is None else ONE
    if anchor is not None and anchor.cumulative_return is not None:
        growth = ONE + anchor.cumulative_return
    peak = ONE if growth is None else growth
    if anchor is not None and anchor.peak_index is not None:
        peak = anchor.peak_index
    ruined = growth is None
    points: list[IntradayPoint] = []
    for index, at in enumerate(grid):
        unrealised, realised = _lot_values(paths, prices, index, at)
        moved = unrealised + realised
        if holdings is not None:
            moved = sum(_lot_values(holdings, prices, index, at), ZERO)
        profit = moved + pnl_totals[index]
        deposit = base + profit + external_totals[index]
        cumulative: Decimal | None = None
        drawdown: Decimal | None = None
        realised_return: Decimal | None = None
        # The day's capital: the previous close plus today's external flows so far (flows count
        # at the start of the day, as in the daily row), so a deposit is never a gain and an
        # account first funded today (E0 = 0) has a return from the deposit's minute on.
        capital = base + external_totals[index]
        ruined = ruined or (deposit <= 0 < capital)
        if anchor is not None and capital > 0 and growth is not None and not ruined:  # no anchor: E0 unknown
            cumulative = growth * (ONE + profit / capital) - ONE
            peak = max(peak, ONE + cumulative)
            drawdown = (ONE + cumulative) / peak - ONE if peak > 0 else None
            realised_return = (realised + pnl_totals[index]) / capital
        points.append(
            IntradayPoint(
                ts=at,
                deposit=deposit,
                cumulative_return=cumulative,
                drawdown=drawdown,
                realised_return=realised_return,
            )
        )
    return points


def last_bars(bars: Mapping[str, Sequence[Bar]], until: datetime) -> dict[str, Bar]:
    """Return per symbol the newest bar whose minute is complete at ``until`` (``bar_px``/``bar_ts``).

    It is the bar the intraday curve ended on, so the UI's live figure (last deposit + moves
    since ``bar_px``) does not count a move twice.
    """
    last = _floor_minute(until) - _MINUTE
    result: dict[str, Bar] = {}
    for symbol, series in bars.items():
        done = [bar for bar in series if bar.ts <= last]
        if done:
            result[symbol] = max(done, key=lambda b: b.ts)
    return result
