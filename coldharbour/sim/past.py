"""An account with history: trade every account over the last N completed sessions before serving.

``trade_past_sessions(engine, calendar, now, sessions=N, seed=S)`` writes the history straight
into the matching engine at the simulated times it happened, so every endpoint the broker serves
agrees about it (``/v2/orders``, ``/v2/account/activities``, ``/v2/positions``, ``/v2/account``,
``/v2/account/portfolio/history``): they are all views of the one book. The engine must have been
created before the first of those sessions (``history_start``).

Each session moves the prices of ``SYMBOLS`` (a seeded walk) at its open, a few times during it
and just before its close, and every account trades one kind of round trip per session, in turn:

- ``hold``: a market buy kept to the end (the positions the account holds when it is served);
- ``bracket``: a long bracket whose take-profit fills later in the session (a bracket exit);
- ``partial``: a market buy and a market sell, each filled in three executions;
- ``short``: a short bracket whose take-profit fills.

Cash, on top of the $100,000 every account starts with: a deposit (CSD) before the first
session; a dividend with its withholding (DIV and DIVNRA) on a held symbol half-way; a fee (FEE)
every third session; a withdrawal (CSW) two thirds in; and a journal (JNLC) dated on the first
weekday without a session (a holiday) in the span, else on a Saturday. Same seed, same history.
"""

from __future__ import annotations

import random
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Final

from coldharbour.sim.accounts import NEW_YORK
from coldharbour.sim.calendar import MarketCalendar, Session
from coldharbour.sim.engine import Engine

SYMBOLS: Final = ("AAPL", "MSFT", "NVDA", "AMZN", "SPY")
START_PRICES: Final = {"AAPL": Decimal(190), "MSFT": Decimal(410), "NVDA": Decimal(880), "AMZN": Decimal(175),
                       "SPY": Decimal(510)}
KINDS: Final = ("hold", "bracket", "partial", "short")  # a holding first: the dividend has a position
CENT: Final = Decimal("0.01")
DEPOSIT: Final = Decimal(25_000)
WITHDRAWAL: Final = Decimal(-1_000)
FEE: Final = Decimal("-0.35")
JOURNAL: Final = Decimal(50)
DIVIDEND_PER_SHARE: Final = Decimal("0.24")
WITHHOLDING_RATE: Final = Decimal("0.15")
MAX_STEP: Final = 0.012  # the largest price move between two prints (a fraction)
WINDOW: Final = timedelta(minutes=40)  # each account's trading time in a session (they take turns)
TRADING_SPAN: Final = timedelta(minutes=240)  # from 5 minutes after the open; shared when accounts are many


def completed_sessions(calendar: MarketCalendar, now: datetime, count: int) -> list[Session]:
    """Return the last ``count`` sessions that closed before ``now``, oldest first."""
    done = [s for s in calendar.between(now.date() - timedelta(days=2 * count + 14), now.date()) if s.close < now]
    return done[-count:] if count > 0 else []


def history_start(calendar: MarketCalendar, now: datetime, count: int) -> datetime:
    """Return when an engine that will trade the last ``count`` sessions must be created."""
    sessions = completed_sessions(calendar, now, count)
    return sessions[0].open - timedelta(hours=6) if sessions else now


class PastTrader:
    """Writes one seeded history into ``engine``: prices, orders, fills and cash activities."""

    def __init__(self, engine: Engine, calendar: MarketCalendar, seed: int) -> None:
        self.engine = engine
        self.calendar = calendar
        self.random = random.Random(seed)  # noqa: S311 - a reproducible walk, not a secret
        self.prices = dict(START_PRICES)
        self.held: dict[str, dict[str, int]] = {name: {} for name in engine.accounts}

    def run(self, sessions: list[Session]) -> None:
        """Trade ``sessions`` (oldest first) for every account."""
        if not sessions:
            return
        for account in self.engine.accounts:
            self._cash(account, "CSD", DEPOSIT, sessions[0].open - timedelta(hours=2), "deposit")
        holiday = self._holiday(sessions)
        for number, session in enumerate(sessions):
            if holiday is not None and holiday < session.open and (number == 0 or holiday > sessions[number - 1].close):
                for account in self.engine.accounts:
                    self._cash(account, "JNLC", JOURNAL, holiday, "journal on a day without a session")
            self._session(number, session, len(sessions))

    def _session(self, number: int, session: Session, total: int) -> None:
        """Move the prices, let each account trade in its own window, book the day's cash, close.

        Every time handed to the engine is later than the one before (its equity trail is kept in
        time order): the accounts trade one after the other, ``WINDOW`` apart.
        """
        self._move(session.open + timedelta(minutes=1))
        kind = KINDS[number % len(KINDS)]
        window = min(WINDOW, TRADING_SPAN / max(1, len(self.engine.accounts)))
        for offset, account in enumerate(self.engine.accounts):
            start = session.open + timedelta(minutes=5) + offset * window
            self._trade(account, kind, SYMBOLS[(number + offset) % len(SYMBOLS)], start, window / 40)
        for minutes_before in (60, 30):
            self._move(session.close - timedelta(minutes=minutes_before))
        for account in self.engine.accounts:
            self._cash_of_the_day(account, number, total, session)
        self._move(session.close - timedelta(minutes=1))

    def _trade(self, account: str, kind: str, symbol: str, start: datetime, tick: timedelta) -> None:
        """One round trip of ``kind`` on ``symbol`` within 40 ``tick`` from ``start`` (its window)."""
        price = self.prices[symbol]
        if kind == "bracket":
            self._submit(account, {"symbol": symbol, "qty": "10", "side": "buy", "order_class": "bracket",
                                   "take_profit": {"limit_price": str(_cents(price * Decimal("1.004")))},
                                   "stop_loss": {"stop_price": str(_cents(price * Decimal("0.95")))}}, start)
            self._set(symbol, _cents(price * Decimal("1.006")), start + 25 * tick)
        elif kind == "partial":
            self.engine.config.partial_fills = True
            self._submit(account, {"symbol": symbol, "qty": "9", "side": "buy"}, start)
            for step in range(1, 4):
                self._set(symbol, price + step * CENT, start + step * tick)
            self._submit(account, {"symbol": symbol, "qty": "9", "side": "sell"}, start + 10 * tick)
            for step in range(1, 4):
                self._set(symbol, price + (3 + step) * CENT, start + (10 + step) * tick)
            self.engine.config.partial_fills = False
        elif kind == "short":
            self._submit(account, {"symbol": symbol, "qty": "5", "side": "sell", "order_class": "bracket",
                                   "take_profit": {"limit_price": str(_cents(price * Decimal("0.996")))},
                                   "stop_loss": {"stop_price": str(_cents(price * Decimal("1.05")))}}, start)
            self._set(symbol, _cents(price * Decimal("0.994")), start + 25 * tick)
        else:
            self._submit(account, {"symbol": symbol, "qty": "8", "side": "buy"}, start)
            self.held[account][symbol] = self.held[account].get(symbol, 0) + 8

    def _cash_of_the_day(self, account: str, number: int, total: int, session: Session) -> None:
        at = session.close - timedelta(minutes=10)
        if number == total // 2 and self.held[account]:
            symbol, qty = sorted(self.held[account].items())[0]
            dividend = _cents(qty * DIVIDEND_PER_SHARE)
            self._cash(account, "DIV", dividend, at, f"Cash DIV {symbol}", symbol)
            self._cash(account, "DIVNRA", -_cents(dividend * WITHHOLDING_RATE), at, f"NRA withheld {symbol}", symbol)
        if number % 3 == 2:
            self._cash(account, "FEE", FEE, at, "regulatory fee")
        if number == (2 * total) // 3 and number > 0:
            self._cash(account, "CSW", WITHDRAWAL, at, "withdrawal")

    def _holiday(self, sessions: list[Session]) -> datetime | None:
        """Return noon (New York) of the first weekday without a session in the span, else a Saturday."""
        days = {s.day for s in sessions}
        first, last = sessions[0].day, sessions[-1].day
        candidates = [first + timedelta(days=n) for n in range((last - first).days + 1)]
        weekday = [d for d in candidates if d.weekday() < 5 and d not in days]
        saturday = [d for d in candidates if d.weekday() == 5]
        chosen: list[date] = weekday or saturday
        return datetime.combine(chosen[0], time(12), tzinfo=NEW_YORK) if chosen else None

    def _move(self, at: datetime) -> None:
        for symbol in SYMBOLS:
            step = Decimal(repr(round(self.random.uniform(-MAX_STEP, MAX_STEP), 4)))
            self.prices[symbol] = _cents(self.prices[symbol] * (1 + step))
        self.engine.set_prices(dict(self.prices), at)

    def _set(self, symbol: str, price: Decimal, at: datetime) -> None:
        self.prices[symbol] = price
        self.engine.set_prices({symbol: price}, at)

    def _submit(self, account: str, body: dict[str, object], at: datetime) -> None:
        self.engine.submit_order(account, {"time_in_force": "gtc", "type": "market", **body}, at)

    def _cash(self, account: str, kind: str, amount: Decimal, at: datetime, description: str,
              symbol: str | None = None) -> None:
        body: dict[str, object] = {"activity_type": kind, "net_amount": str(amount), "description": description}
        if symbol is not None:
            body["symbol"] = symbol
        self.engine.post_activity(account, body, at)


def _cents(value: Decimal) -> Decimal:
    return value.quantize(CENT)


def trade_past_sessions(engine: Engine, calendar: MarketCalendar, now: datetime, *, sessions: int,
                        seed: int = 0) -> list[Session]:
    """Trade every account of ``engine`` over the last ``sessions`` completed sessions; return them."""
    chosen = completed_sessions(calendar, now, sessions)
    PastTrader(engine, calendar, seed).run(chosen)
    return chosen
